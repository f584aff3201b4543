"""Time an exported scorer (`--mode=export`) on a folder of images; prints one JSON line.

  python benchmarks/deploy_throughput.py --export runs/bottle_deploy/export \
      --images ../shared/data/mvtec/bottle/test --category bottle --batch 32

Loads the export with `fmjax.deploy.load` (all of JAX's devices: set XLA_FLAGS
--xla_force_host_platform_device_count=N to split a CPU), scores one batch to compile, then
times `--repeats` calls on the same batch (images/s of the median call). With
`--metrics=<workdir>/eval/metrics.json` it also scores every image found and reports the
largest relative difference from that evaluation's scores.
"""

import argparse
import glob
import json
import os
import platform
import time

import jax
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
  args = parser.parse_args()
  scorer = deploy.load(args.export)
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
         "first_call_s": round(first, 2), "devices": len(scorer._devices),
         "platform": jax.devices()[0].platform, "method": scorer.manifest["method"],
         "method_options": scorer.manifest["method_options"],
         "image_size": scorer.image_size, "cpus": os.cpu_count(),
         "machine": platform.processor() or platform.machine(), "jax": jax.__version__}
  if args.metrics:
    with open(args.metrics) as f:
      reference = {os.path.normpath(i["path"]): i["score"] for i in json.load(f)["images"]}
    scores = np.concatenate([scorer(images[i:i + args.batch], args.category).scores
                             for i in range(0, len(images), args.batch)])
    pairs = [(s, reference[os.path.normpath(p)]) for p, s in zip(paths, scores)
             if os.path.normpath(p) in reference]
    out["compared_images"] = len(pairs)
    out["max_relative_difference"] = float(max(abs(s - r) / abs(r) for s, r in pairs)) if pairs else None
  print(json.dumps(out))


if __name__ == "__main__":
  main()
