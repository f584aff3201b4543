"""Images/s the grain training pipeline delivers to the device mesh; prints one JSON line per mode.

  python benchmarks/loader_throughput.py --root ../shared/data/mvtec --category bottle \
      --batch_size 128 --workers 0,4,8,15 --seconds 20

Modes: "files" decodes and resizes the PNG files on every access (grain worker
processes, `--workers`); "memory" serves images decoded once into host memory
(what fmjax.main uses). Each batch is placed on the mesh with the data sharding
and waited for, exactly as the trainer's DevicePrefetcher does it. Compare with
the training step's own images/s from benchmarks/train_throughput.py.
"""

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from fmjax.core import sharding
from fmjax.data import mvtec_samples, pipeline, read_samples


def measure(iterator, mesh, batch_size: int, seconds: float, warmup: int = 3) -> dict:
  prefetch = pipeline.DevicePrefetcher(iterator, mesh, count=10**9, depth=4)
  for _ in range(warmup):  # worker start-up excluded
    jax.block_until_ready(prefetch.next())
  t0, n = time.perf_counter(), 0
  while time.perf_counter() - t0 < seconds:
    jax.block_until_ready(prefetch.next())
    n += 1
  elapsed = time.perf_counter() - t0
  prefetch.close()
  return {"batches": n, "seconds": round(elapsed, 2), "images_per_s": round(n * batch_size / elapsed, 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default="../shared/data/mvtec")
  parser.add_argument("--category", default="bottle")
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--workers", default="0,4,8")
  parser.add_argument("--threads", type=int, default=8)
  parser.add_argument("--seconds", type=float, default=15.0)
  args = parser.parse_args()
  if not os.path.isdir(os.path.join(args.root, args.category)):
    raise SystemExit(f"loader_throughput: no data at {args.root}/{args.category} "
                     "(MVTec layout; ../shared/data/mvtec/bottle in this project).")
  categories, samples = mvtec_samples(args.root, [args.category])
  train = [s for s in samples if s.split == "train"]
  paths = [s.path for s in train]
  labels = np.zeros(len(paths), np.int32)
  mesh = sharding.make_mesh(-1)
  common = {"benchmark": "loader_throughput", "image_size": args.image_size,
            "batch_size": args.batch_size, "num_files": len(paths), "cpus": os.cpu_count(),
            "device": str(jax.devices()[0].device_kind), "num_devices": len(jax.devices()),
            "jax": jax.__version__, "machine": platform.machine()}
  for workers in [int(w) for w in args.workers.split(",")]:
    source = pipeline.ImageFileSource(paths, labels, args.image_size)
    stream = pipeline.train_dataset(source, args.batch_size, seed=0)
    it = pipeline.train_iterator(stream, num_workers=workers, num_threads=args.threads, prefetch=8)
    print(json.dumps({**common, "mode": "files", "workers": workers,
                      **measure(it, mesh, args.batch_size, args.seconds)}), flush=True)
  t0 = time.perf_counter()
  ds = read_samples("bench", categories, samples, args.image_size, with_masks=False)
  decode_s = time.perf_counter() - t0
  stream = pipeline.train_dataset(pipeline.ArraySource(ds.train_images, labels), args.batch_size, 0)
  it = pipeline.train_iterator(stream, num_threads=args.threads)
  print(json.dumps({**common, "mode": "memory", "workers": 0, "decode_once_s": round(decode_s, 2),
                    **measure(it, mesh, args.batch_size, args.seconds)}), flush=True)


if __name__ == "__main__":
  main()
