"""Flow Mismatching scoring speed of fmjax's own scoring function; one JSON line per setting.

  python benchmarks/score_throughput.py                       # paper model, all settings
  python benchmarks/score_throughput.py --kt=10x10 --batches=1,32 \
      [--config=configs/mvtec.py] [--config.evaluate.max_forward_batch=800]

Times `fmjax.score.scoring.make_score_fn` -- the jitted, sharded function `fmjax.main`
scores test splits (whole images, or tiles) with (seeds and times folded into forward batches of at most
`evaluate.max_forward_batch` samples per device, bf16 compute per `model.dtype`,
cuDNN attention on GPU) -- on random images with randomly initialised weights
(speed does not depend on the values). Compilation is timed separately and
excluded. FLOPs per image = K * T * one forward pass, from XLA's cost analysis of
the forward lowered for the CPU backend (`fmjax.studies.describe.forward_flops`; the GPU
backend does not count cuDNN convolutions).
"""

import time

from fmjax.core import xla_cpu

# fmjax's XLA:CPU settings, as fmjax.main uses them (a user's XLA_FLAGS win; one device
# unless XLA_FLAGS sets --xla_force_host_platform_device_count).
xla_cpu.apply_defaults()
if __name__ == "__main__":  # glibc's malloc settings, as python -m fmjax.main has them
  xla_cpu.restart_with_malloc_tunables()

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import bench_util
from fmjax import methods
from fmjax.studies import describe
from fmjax.score import scoring
from fmjax.core import sharding
from fmjax.data import NormStats

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/mvtec.py", "Model/evaluate config.",
                                lock_config=False)
flags.DEFINE_string("kt", "2x2,5x5,10x10,20x20", "Comma-separated KxT settings.")
flags.DEFINE_string("batches", "1,8,32,128", "Comma-separated global batch sizes.")
flags.DEFINE_float("seconds", 3.0, "Approximate length of one timed round.")
flags.DEFINE_integer("repeats", 3, "Timed rounds per setting (median reported).")
flags.DEFINE_string("output", "", "Also append the JSON lines to this file.")
flags.DEFINE_integer("profile_calls", 0, "> 0: after timing, trace this many calls and add the "
                     "op time by kind and class, and ops per call (on a GPU: its kernels).")


def parse_kt(spec: str) -> list[tuple[int, int]]:
  return [tuple(int(v) for v in item.lower().split("x")) for item in spec.split(",") if item]


def main(argv):
  del argv
  config = FLAGS.config
  size = config.data.image_size
  model, num_classes, mesh = bench_util.model_and_mesh(config)
  rep, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
  t0 = time.perf_counter()
  params = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, 3)), jnp.zeros((1,)),
                                        jnp.zeros((1,), jnp.int32))["params"],
                   out_shardings=rep)(jax.random.key(0))
  fwd_flops = describe.forward_flops(model, size)
  common = {"benchmark": "score_throughput", "image_size": size, "num_classes": num_classes,
            "dtype": config.model.dtype, "attention": model.attention_impl or "xla",
            "method": config.evaluate.method,
            "method_options": methods.scorer_options(config.evaluate),
            "max_forward_batch_per_device": config.evaluate.max_forward_batch,
            "flops_per_forward": fwd_flops, "setup_s": round(time.perf_counter() - t0, 1),
            **bench_util.environment()}
  norm = NormStats((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  peak = bench_util.peak_tflops()
  rng = np.random.default_rng(0)
  for k, t in parse_kt(FLAGS.kt):
    for batch in [int(b) for b in FLAGS.batches.split(",")]:
      row = {**common, "num_seeds": k, "num_times": t, "batch": batch}
      if batch % mesh.devices.size:
        bench_util.emit({**row, "error": f"batch not divisible by {mesh.devices.size} devices"},
                      FLAGS.output)
        continue
      ec = config.evaluate
      ec.num_seeds, ec.num_times, ec.batch_size = k, t, batch
      score = scoring.make_score_fn(model, norm, ec, mesh)
      args = (params,
              jax.device_put(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8), data),
              jax.device_put(rng.integers(0, num_classes, (batch,)).astype(np.int32), data),
              jax.device_put(np.arange(batch, dtype=np.int32), data),
              jax.device_put(np.zeros((batch, 2), np.int32), data))  # whole images
      try:
        t0 = time.perf_counter()
        compiled = score.lower(*args).compile()
        row["compile_s"] = round(time.perf_counter() - t0, 2)
        row.update(bench_util.compiled_memory(compiled))
        timing = bench_util.time_calls(lambda: jax.block_until_ready(compiled(*args)),
                                       FLAGS.seconds, FLAGS.repeats)
      except Exception as e:  # pylint: disable=broad-except
        if not bench_util.is_out_of_memory(e):
          raise
        bench_util.emit({**row, "error": "out of memory: lower evaluate.max_forward_batch"},
                        FLAGS.output)
        continue
      row.update(bench_util.throughput_fields(batch, timing, fwd_flops * k * t, peak, "images"))
      if FLAGS.profile_calls > 0:
        row.update(bench_util.profile_calls(lambda: jax.block_until_ready(compiled(*args)),
                                            FLAGS.profile_calls, timing["s_per_call_median"]))
      row["flops_per_image"] = fwd_flops * k * t
      row["peak_bytes_in_use"] = bench_util.peak_bytes_in_use()
      bench_util.emit(row, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
