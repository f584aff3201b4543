"""Time the pixel metrics (AUROC, AP, F1-max, AUPRO) on N synthetic maps; prints one JSON line.

  python benchmarks/metrics_speed.py --num_maps 2000 --size 128

The maps are float32 (what the scorer returns) with a few rectangular and
blob-shaped defects per anomalous image, like an MVTec test split.
"""

import argparse
import json
import os
import platform
import time

import numpy as np

from fmjax.report import metrics


def synthetic_split(num_maps: int, size: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  masks = np.zeros((num_maps, size, size), np.uint8)
  yy, xx = np.mgrid[0:size, 0:size]
  for i in range(num_maps // 2, num_maps):
    for _ in range(rng.integers(1, 4)):
      cy, cx = rng.integers(0, size, 2)
      r = rng.integers(2, size // 8)
      masks[i] |= ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
  maps = (rng.gamma(2.0, 1.0, masks.shape) + 3.0 * masks * rng.random(masks.shape)).astype(np.float32)
  return maps, masks


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_maps", type=int, default=2000)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  maps, masks = synthetic_split(args.num_maps, args.size)
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    result = metrics.pixel_metrics(maps, masks)
    times.append(time.perf_counter() - t0)
  print(json.dumps({
      "benchmark": "pixel_metrics", "num_maps": args.num_maps, "size": args.size,
      "pixels": int(maps.size), "seconds_best": round(min(times), 3),
      "seconds_all": [round(t, 3) for t in times],
      "pixel_auroc": round(result["auroc"], 6), "pixel_aupro": round(result["aupro"], 6),
      "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
      "numpy": np.__version__}))


if __name__ == "__main__":
  main()
