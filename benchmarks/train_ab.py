"""Variants of the train step compared in one process, their steps alternating; one JSON line each.

  python benchmarks/train_ab.py --config=configs/quickstart.py --rounds=30 \
      --variant='base||' \
      --variant='direct|model.group_norm=direct|' \
      --variant='conc||{"xla_cpu_enable_concurrency_optimized_scheduler": true}'

A variant is "name|config overrides|XLA compiler options" (`mesh.num_devices=1` against `=2`
under XLA_FLAGS=--xla_force_host_platform_device_count=2 compares one device with two, each
variant's batch placed on its own mesh): overrides are comma-separated
`key=value` pairs on --config (values read as Python literals where they parse, else as text),
options a JSON object passed to `.compile(compiler_options=...)` (XLA's DebugOptions by name,
so XLA flags without a restart). Every variant's step is compiled first, then each round runs
one step of every variant in turn: a busy neighbour or a slow minute slows all of them alike,
which separate runs on a shared 2-core machine (15-25% apart for the same command) cannot
promise. Each line: ms per step (median, 25th percentile, fastest), images/s at the median, the
median's ratio to the first variant's, compile seconds, and how far the variant's train state
after one step from the same state and batch lies from the first variant's (largest absolute
difference over all leaves: 0.0 means the same numbers).
"""

import ast
import json
import time

from fmjax.core import xla_cpu

xla_cpu.apply_defaults()
if __name__ == "__main__":  # glibc's malloc settings, as python -m fmjax.main has them
  xla_cpu.restart_with_malloc_tunables()

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import bench_util
from fmjax import configlib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Model/train config.",
                                lock_config=False)
flags.DEFINE_multi_string("variant", ["base||"], 'One "name|key=value,...|{JSON options}" each.')
flags.DEFINE_integer("batch", 32, "Global batch size.")
flags.DEFINE_integer("rounds", 20, "Timed rounds (one step of every variant each).")
flags.DEFINE_string("output", "", "Also append the JSON lines to this file.")


def parse_variant(spec: str, config):
  """(name, config with the overrides, compiler options) of one --variant; SystemExit with one
  line naming the variant on a bad one."""
  name, overrides, options = (spec.split("|", 2) + ["", ""])[:3]
  name = name.strip()
  if not name:
    raise SystemExit(f"train_ab: --variant {spec!r} has no name (\"name|overrides|options\")")
  config = config.copy_and_resolve_references()
  for pair in filter(None, (p.strip() for p in overrides.split(","))):
    key, sep, text = (part.strip() for part in pair.partition("="))
    if not sep:
      raise SystemExit(f"train_ab: --variant {name}: override {pair!r} is not key=value")
    if not configlib.has_key(config, key):
      raise SystemExit(f"train_ab: --variant {name}: the config has no key {key!r}")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  try:
    options = json.loads(options) if options.strip() else {}
  except json.JSONDecodeError as e:
    raise SystemExit(f"train_ab: --variant {name}: the XLA options are not JSON ({e})") from None
  if not isinstance(options, dict):
    raise SystemExit(f"train_ab: --variant {name}: the XLA options must be a JSON object")
  return name, config, options


def max_difference(a, b) -> float | None:
  """Largest absolute difference between two trees' leaves (as float32); None when the trees
  differ in structure or shapes (a variant that changes the model)."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return None
  pairs = list(zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
  if any(jnp.shape(x) != jnp.shape(y) for x, y in pairs):
    return None
  return max((float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))))
              for x, y in pairs), default=0.0)


def main(argv):
  del argv
  variants = [parse_variant(spec, FLAGS.config) for spec in FLAGS.variant]
  runs = []
  for name, config, options in variants:
    bench = bench_util.TrainBench(config)
    # The same batch for every variant, placed on its own mesh (mesh.num_devices may differ).
    images, labels = bench.batch(FLAGS.batch, np.random.default_rng(0))
    state = bench.init(jax.random.key(0))
    t0 = time.perf_counter()
    compiled = bench.step.lower(state, images, labels).compile(compiler_options=options or None)
    compile_s = time.perf_counter() - t0
    state = compiled(state, images, labels)[0]  # one step from the same state and batch
    runs.append({"name": name, "step": compiled, "state": state, "compile_s": compile_s,
                 "times": [], "size": bench.size, "batch": (images, labels),
                 "devices": bench.mesh.devices.size})
  first_state = jax.device_get(runs[0]["state"])
  diffs = [max_difference(jax.device_get(r["state"]), first_state) for r in runs]
  for _ in range(FLAGS.rounds):
    for r in runs:
      t0 = time.perf_counter()
      r["state"], metrics = r["step"](r["state"], *r["batch"])
      jax.block_until_ready(metrics)
      r["times"].append(time.perf_counter() - t0)
  base_median = float(np.median(runs[0]["times"]))
  for r, diff, spec in zip(runs, diffs, FLAGS.variant):
    median = float(np.median(r["times"]))
    bench_util.emit({
        "benchmark": "train_ab", "label": r["name"], "variant": spec, "image_size": r["size"],
        "batch": FLAGS.batch, "devices": r["devices"], "rounds": FLAGS.rounds, "compile_s": round(r["compile_s"], 1),
        "ms_per_step_median": round(median * 1e3, 1),
        "ms_per_step_p25": round(float(np.percentile(r["times"], 25)) * 1e3, 1),
        "ms_per_step_min": round(min(r["times"]) * 1e3, 1),
        "images_per_s": round(FLAGS.batch / median, 1),
        "median_vs_first": round(median / base_median, 3),
        "state_max_abs_diff": diff, **bench_util.environment()}, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
