"""Scoring time per megapixel and peak memory against image size, at a fixed tile.

  python benchmarks/score_megapixels.py                     # quickstart model, CPU
  python benchmarks/score_megapixels.py --sizes=128x128,2048x2048,1024x4096 --tile=128 \
      --overlap=0 --kt=2x2 [--config=configs/quickstart.py]

Each size runs in a fresh process (so its peak resident memory is its own), scoring one
random image through `ScoringSession`'s path (`scoring.score_in_batches`: tiles cut on the
host, scored `evaluate.batch_size` at a time, blended back) with randomly initialised
weights (speed does not depend on them). A first, tile-sized image is scored before timing,
so compilation (which depends on the tile and batch only) is excluded. One JSON line per
size: seconds, seconds per megapixel, tiles, and peak resident memory (MB) of the process.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Model config.",
                                lock_config=False)
flags.DEFINE_string("sizes", "128x128,512x512,1024x1024,2048x2048,1024x4096",
                    "Comma-separated HxW image sizes.")
flags.DEFINE_integer("tile", 128, "evaluate.tile_size.")
flags.DEFINE_integer("overlap", 0, "evaluate.tile_overlap (0: tiles cover each pixel once).")
flags.DEFINE_string("kt", "2x2", "K x T of the scorer.")
flags.DEFINE_integer("batch", 1, "evaluate.batch_size: tiles per device step (1: no padded "
                     "rows, so a one-tile image costs one tile).")
flags.DEFINE_string("one", "", "(internal) measure this HxW size in this process.")
flags.DEFINE_string("output", "", "Also append the JSON lines to this file.")


def measure(size: str) -> dict:
  """Scores a random image of `size` (after one untimed image of that size)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  import bench_util  # pylint: disable=g-import-not-at-top
  from fmjax.data import NormStats  # pylint: disable=g-import-not-at-top
  from fmjax.score import scoring, tiling  # pylint: disable=g-import-not-at-top

  h, w = (int(v) for v in size.lower().split("x"))
  config = FLAGS.config
  k, t = (int(v) for v in FLAGS.kt.lower().split("x"))
  ec = config.evaluate
  ec.num_seeds, ec.num_times, ec.batch_size = k, t, FLAGS.batch
  ec.tile_size, ec.tile_overlap, ec.max_image_pixels = FLAGS.tile, FLAGS.overlap, 0
  model, _, mesh = bench_util.model_and_mesh(config)
  s = FLAGS.tile
  params = jax.jit(lambda key: model.init(key, jnp.zeros((1, s, s, 3)), jnp.zeros((1,)),
                                          jnp.zeros((1,), jnp.int32))["params"])(jax.random.key(0))
  norm = NormStats((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  score = scoring.make_score_fn(model, norm, ec, mesh)
  stride = tiling.model_stride(config.model)
  rng = np.random.default_rng(0)
  labels = np.zeros(1, np.int32)
  # Compilation depends on the tile and the batch, not the image: one tile-sized image warms up.
  warm_h, warm_w = (min(h, FLAGS.tile), min(w, FLAGS.tile)) if FLAGS.tile else (h, w)
  warm = rng.integers(0, 256, (1, warm_h, warm_w, 3), dtype=np.uint8)
  scoring.score_in_batches(score, params, warm, labels, FLAGS.batch, mesh, "warm-up", ec, stride)
  image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
  t0 = time.perf_counter()
  scoring.score_in_batches(score, params, image, labels, FLAGS.batch, mesh, "timed", ec, stride)
  seconds = time.perf_counter() - t0
  tiles = tiling.Tiler([(h, w)], stride, FLAGS.tile, FLAGS.overlap).num_tiles
  megapixels = h * w / 1e6
  return {"benchmark": "score_megapixels", "height": h, "width": w, "megapixels": megapixels,
          "tile": FLAGS.tile, "overlap": FLAGS.overlap, "tiles": tiles, "num_seeds": k,
          "num_times": t, "batch": FLAGS.batch, "seconds": round(seconds, 3),
          "seconds_per_megapixel": round(seconds / megapixels, 3),
          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
          **bench_util.environment()}


def main(argv):
  del argv
  if FLAGS.one:
    print(json.dumps(measure(FLAGS.one)), flush=True)
    return
  import bench_util  # pylint: disable=g-import-not-at-top
  passed = [a for a in sys.argv[1:] if not a.startswith(("--sizes", "--output", "--one"))]
  for size in FLAGS.sizes.split(","):
    out = subprocess.run([sys.executable, __file__, f"--one={size}", *passed],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
      bench_util.emit({"benchmark": "score_megapixels", "size": size,
                       "error": out.stderr.strip().splitlines()[-1:]}, FLAGS.output)
      continue
    bench_util.emit(json.loads(out.stdout.strip().splitlines()[-1]), FLAGS.output)


if __name__ == "__main__":
  app.run(main)
