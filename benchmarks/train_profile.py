"""Where a train step's time goes: a `jax.profiler` trace of fmjax's train step, summed
by kind of op (on a GPU its kernels), with the process's CPU time (user and kernel) and page
faults per step.

  python benchmarks/train_profile.py --config=configs/quickstart.py [--batch=32] [--steps=5]

Prints one JSON line: compile seconds, ms per step (wall), op time per step by kind (XLA's
fusion names without their numbers, e.g. `transpose_copy_fusion`, `ynn_fusion`; on a GPU the
kernels, also summed by class: convolution, reduction, ...; XLA:CPU's own convolutions run in
Eigen's pool and show only their dispatch), ops (kernels) per step and the fraction of the step
they fill, cores busy in user and kernel mode, minor page faults per step, and GFLOP/s by
XLA's count (`--count_flops=false` skips it). `launch/gpu_suite.sh variants` runs it once per
variant of the config or XLA's flags. The step is the one `train_throughput.py`
times (`fmjax.train.loop.make_train_step`), on random images already on the device; like
`python -m fmjax.main`, it runs with fmjax's XLA:CPU flags and malloc settings.
"""

import os
import resource
import shutil
import tempfile
import time

from fmjax.core import xla_cpu

xla_cpu.apply_defaults()
if __name__ == "__main__":  # glibc's malloc settings, as python -m fmjax.main has them
  xla_cpu.restart_with_malloc_tunables()

import jax  # noqa: E402
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import bench_util

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Model/train config.",
                                lock_config=False)
flags.DEFINE_integer("batch", 32, "Global batch size.")
flags.DEFINE_integer("steps", 5, "Steps traced (and timed before, untraced, as many again x4).")
flags.DEFINE_integer("top", 12, "Kinds of op listed.")
flags.DEFINE_string("output", "", "Also append the JSON line to this file.")
flags.DEFINE_bool("count_flops", True, "Count the step's FLOPs (XLA's cost analysis of the CPU "
                  "lowering: seconds to a minute for the paper model).")
flags.DEFINE_string("label", "", "A name for this run, put in its line (e.g. the variant).")
flags.DEFINE_string("trace_copy", "", "Also copy the trace (.trace.json.gz) to this path.")

def main(argv):
  del argv
  bench, batch = bench_util.TrainBench(FLAGS.config), FLAGS.batch
  state = bench.init(jax.random.key(0))
  images, labels = bench.batch(batch, np.random.default_rng(0))
  t0 = time.perf_counter()
  compiled = bench.step.lower(state, images, labels).compile()
  compile_s = time.perf_counter() - t0

  def run(n):
    nonlocal state
    for _ in range(n):
      state, metrics = compiled(state, images, labels)
      jax.block_until_ready(metrics)

  run(3)  # warm: the allocator's first steps
  untimed = 4 * FLAGS.steps
  usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  run(untimed)
  usage1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      run(FLAGS.steps)
    ops = bench_util.trace_summary(trace_dir, FLAGS.steps, wall / untimed, "step", FLAGS.top)
    if FLAGS.trace_copy:
      shutil.copy(bench_util.newest_trace_path(trace_dir), FLAGS.trace_copy)
  flops = bench.flops_per_step(batch) if FLAGS.count_flops else None
  ms_per_step = wall / untimed * 1e3
  row = {"benchmark": "train_profile", "label": FLAGS.label, "image_size": bench.size,
         "batch": batch, "compile_s": round(compile_s, 1), "ms_per_step": round(ms_per_step, 1),
         "images_per_s": round(batch / ms_per_step * 1e3, 1),
         "gflop_per_step": flops and round(flops / 1e9, 3),
         "gflop_per_s": flops and round(flops / (wall / untimed) / 1e9, 1),
         "cores_user": round((usage1.ru_utime - usage0.ru_utime) / wall, 2),
         "cores_kernel": round((usage1.ru_stime - usage0.ru_stime) / wall, 2),
         "page_faults_per_step": round((usage1.ru_minflt - usage0.ru_minflt) / untimed),
         **ops,
         "malloc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
         **bench_util.environment()}
  bench_util.emit(row, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
