"""Time an exported scorer (`--mode=export`) on a folder of images; prints one JSON line.

  python benchmarks/deploy_throughput.py --export runs/bottle_deploy/export \
      --images ../shared/data/mvtec/bottle/test --category bottle --batch 32

Loads the export with `fmjax.deploy.load` (all of JAX's devices: set XLA_FLAGS
--xla_force_host_platform_device_count=N to split a CPU), scores one batch to compile, then
times `--repeats` calls on the same batch (images/s of the median call). With
`--metrics=<workdir>/eval/metrics.json` it also scores every image found and reports the
largest relative difference from that evaluation's scores. With `--compare=<other export>`
(e.g. the StableHLO export of the same workdir beside an ONNX one) it scores every image with
both and reports the largest relative differences of their scores and heatmaps (each map's
largest difference over its largest value). An ONNX export runs on onnxruntime, or OpenVINO
with `--runtime=openvino [--precision=bf16]` (`--threads`, 0: the runtime's default), and this
script then does not import jax.

  python benchmarks/deploy_throughput.py --export runs/bottle_onnx/export \
      --compare runs/bottle/export --images ../shared/data/mvtec/bottle/test --category bottle
"""

import argparse
import glob
import json
import os
import platform
import time

import numpy as np

from fmjax import deploy
from fmjax.data.decode import IMAGE_EXTENSIONS, read_image


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--export", required=True)
  parser.add_argument("--images", required=True, help="a folder (searched recursively)")
  parser.add_argument("--category", default=None)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--metrics", default=None, help="an evaluation's metrics.json to compare with")
  parser.add_argument("--compare", default=None, help="another export of the same model")
  parser.add_argument("--threads", type=int, default=0, help="ONNX runtime threads (0: default)")
  parser.add_argument("--runtime", default="onnxruntime", choices=deploy.RUNTIMES,
                      help="what runs an ONNX export")
  parser.add_argument("--precision", default="f32", choices=deploy.OPENVINO_PRECISIONS,
                      help="OpenVINO's compute precision")
  parser.add_argument("--compare-runtime", default="onnxruntime", choices=deploy.RUNTIMES,
                      help="what runs --compare if it is an ONNX export (f32)")
  args = parser.parse_args()
  scorer = deploy.load(args.export, threads=args.threads, runtime=args.runtime,
                       precision=args.precision)
  paths = sorted(p for p in glob.glob(os.path.join(args.images, "**", "*"), recursive=True)
                 if p.lower().endswith(IMAGE_EXTENSIONS))
  images = np.stack([read_image(p, scorer.image_size) for p in paths])
  batch = images[:args.batch]
  t0 = time.perf_counter()
  scorer(batch, args.category)
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    scorer(batch, args.category)
    times.append(time.perf_counter() - t0)
  out = {"benchmark": "deploy", "export": args.export, "batch": len(batch),
         "images_per_s": round(len(batch) / float(np.median(times)), 3),
         "first_call_s": round(first, 2), "format": scorer.format,
         "devices": len(scorer.tiles.devices), "method": scorer.manifest["method"],
         "method_options": scorer.manifest["method_options"],
         "image_size": scorer.image_size, "cpus": os.cpu_count(),
         "machine": platform.processor() or platform.machine()}
  if scorer.format == "onnx":
    out.update(runtime=scorer.tiles.runtime, threads=args.threads)
  else:
    import jax
    out.update(runtime=f"jax {jax.__version__}", platform=jax.devices()[0].platform)
  score_all = lambda s: [s(images[i:i + args.batch], args.category)
                         for i in range(0, len(images), args.batch)]
  if args.metrics:
    with open(args.metrics) as f:
      reference = {os.path.normpath(i["path"]): i["score"] for i in json.load(f)["images"]}
    scores = np.concatenate([r.scores for r in score_all(scorer)])
    pairs = [(s, reference[os.path.normpath(p)]) for p, s in zip(paths, scores)
             if os.path.normpath(p) in reference]
    out["compared_images"] = len(pairs)
    out["max_relative_difference"] = float(max(abs(s - r) / abs(r) for s, r in pairs)) if pairs else None
  if args.compare:
    ours, theirs = score_all(scorer), score_all(deploy.load(args.compare, runtime=args.compare_runtime))
    score_diff = heat_diff = 0.0
    for a, b in zip(ours, theirs):
      score_diff = max(score_diff, float(np.max(np.abs(a.scores - b.scores) / np.abs(b.scores))))
      for ha, hb in zip(a.heatmaps, b.heatmaps):
        heat_diff = max(heat_diff, float(np.max(np.abs(ha - hb)) / np.max(np.abs(hb))))
      if a.decisions is not None and b.decisions is not None:
        out["decisions_differ"] = out.get("decisions_differ", 0) + int(np.sum(a.decisions != b.decisions))
    out.update(compared_with=args.compare, compared_images=len(images),
               max_relative_score_difference=score_diff,
               max_relative_heatmap_difference=heat_diff)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
