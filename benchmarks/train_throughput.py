"""Training speed of fmjax's own train step; one JSON line per batch size.

  python benchmarks/train_throughput.py                     # paper model, batch 32,128,256
  python benchmarks/train_throughput.py --batches=128 [--config=configs/mvtec.py] \
      [--config.train.ema_decay=0.9999]

Times `fmjax.train.loop.make_train_step` -- the jitted, sharded, state-donating step
`fmjax.main` trains with (CFM loss, StableAdamW + AMSGrad, bf16 compute per
`model.dtype`, float32 parameters) -- on random uint8 batches already on the
device (the input pipeline is measured by loader_throughput.py). Compilation is
timed separately and excluded. FLOPs per step: XLA's cost analysis of the same
step function lowered for the CPU backend at the same batch size
(`fmjax.studies.describe.train_step_flops`).
"""

import time

from fmjax.core import xla_cpu

# fmjax's XLA:CPU settings, as fmjax.main uses them (a user's XLA_FLAGS win; one device
# unless XLA_FLAGS sets --xla_force_host_platform_device_count).
xla_cpu.apply_defaults()
if __name__ == "__main__":  # glibc's malloc settings, as python -m fmjax.main has them
  xla_cpu.restart_with_malloc_tunables()

import jax  # noqa: E402
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import bench_util

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/mvtec.py", "Model/train config.",
                                lock_config=False)
flags.DEFINE_string("batches", "32,128,256", "Comma-separated global batch sizes.")
flags.DEFINE_float("seconds", 5.0, "Approximate length of one timed round.")
flags.DEFINE_integer("repeats", 3, "Timed rounds per batch size (median reported).")
flags.DEFINE_string("output", "", "Also append the JSON lines to this file.")


def main(argv):
  del argv
  bench = bench_util.TrainBench(FLAGS.config)
  model, mesh = bench.model, bench.mesh
  common = {"benchmark": "train_throughput", "image_size": bench.size,
            "num_classes": bench.num_classes, "dtype": FLAGS.config.model.dtype,
            "attention": model.attention_impl or "xla", "ema": bench.ema > 0,
            **bench_util.environment()}
  peak = bench_util.peak_tflops()
  rng = np.random.default_rng(0)
  for batch in [int(b) for b in FLAGS.batches.split(",")]:
    row = {**common, "batch": batch, "flops_per_step": bench.flops_per_step(batch)}
    if batch % mesh.devices.size:
      bench_util.emit({**row, "error": f"batch not divisible by {mesh.devices.size} devices"},
                      FLAGS.output)
      continue
    images, labels = bench.batch(batch, rng)
    box = {"state": bench.init(jax.random.key(0))}

    def run_once():
      box["state"], metrics = compiled(box["state"], images, labels)
      jax.block_until_ready(metrics)

    try:
      t0 = time.perf_counter()
      compiled = bench.step.lower(box["state"], images, labels).compile()
      row["compile_s"] = round(time.perf_counter() - t0, 2)
      row.update(bench_util.compiled_memory(compiled))
      timing = bench_util.time_calls(run_once, FLAGS.seconds, FLAGS.repeats)
    except Exception as e:  # pylint: disable=broad-except
      if not bench_util.is_out_of_memory(e):
        raise
      bench_util.emit({**row, "error": "out of memory"}, FLAGS.output)
      continue
    row.update(bench_util.throughput_fields(batch, timing, row["flops_per_step"] / batch, peak,
                                            "images"))
    row["steps_per_s"] = round(1.0 / timing["s_per_call_median"], 3)
    row["peak_bytes_in_use"] = bench_util.peak_bytes_in_use()
    del box["state"]
    bench_util.emit(row, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
