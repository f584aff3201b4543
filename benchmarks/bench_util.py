"""Shared pieces of the speed benchmarks: timing, peak FLOP/s, memory, environment."""

from __future__ import annotations

import collections
import datetime
import glob
import gzip
import json
import math
import re
import time

import jax

# Dense bfloat16 peak TFLOP/s per device (vendor data sheets; no sparsity).
PEAK_BF16_TFLOPS = (
    ("H200", 989.4), ("H100", 989.4), ("A100", 312.0), ("L4", 121.0), ("A10", 125.0),
    ("TPU v6", 918.0), ("TPU v5p", 459.0), ("TPU v5", 197.0), ("TPU v4", 275.0),
)


def peak_tflops(device=None) -> float | None:
  """The device's dense bf16 peak in TFLOP/s, or None when unknown (e.g. CPU)."""
  kind = (device or jax.devices()[0]).device_kind
  for name, peak in PEAK_BF16_TFLOPS:
    if name.lower() in kind.lower():
      return peak
  return None


def environment() -> dict:
  """Versions and device facts printed with every result (from the run record's environment)."""
  from fmjax.core import runlog  # pylint: disable=g-import-not-at-top
  env = runlog.environment()
  v = env["versions"]
  return {"device": env["device_kind"], "platform": env["platform"],
          "num_devices": env["device_count"], "jax": v["jax"], "jaxlib": v["jaxlib"],
          "flax": v["flax"], "python": v["python"], "date": datetime.date.today().isoformat()}


def peak_bytes_in_use() -> int | None:
  """Largest peak device memory of this process over local devices (None where unreported)."""
  peaks = []
  for d in jax.local_devices():
    stats = d.memory_stats() if hasattr(d, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def compiled_memory(compiled) -> dict:
  """XLA's memory plan of one executable: argument, output and temporary bytes."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return {}
  if m is None:
    return {}
  return {"xla_argument_bytes": int(m.argument_size_in_bytes),
          "xla_output_bytes": int(m.output_size_in_bytes),
          "xla_temp_bytes": int(m.temp_size_in_bytes)}


def time_calls(run_once, seconds: float, repeats: int) -> dict:
  """Times `run_once()` (which must block until its work is done) back to back.

  One untimed call first; then `repeats` rounds of n calls each, n chosen so a
  round lasts about `seconds`. Returns seconds per call: median and best round.
  """
  run_once()
  t0 = time.perf_counter()
  run_once()
  one = max(time.perf_counter() - t0, 1e-6)
  n = max(1, math.ceil(seconds / one))
  rounds = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(n):
      run_once()
    rounds.append((time.perf_counter() - t0) / n)
  rounds.sort()
  return {"calls_per_round": n, "rounds": repeats, "s_per_call_median": rounds[len(rounds) // 2],
          "s_per_call_best": rounds[0]}


def is_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def throughput_fields(items_per_call: int, timing: dict, flops_per_item: float,
                      peak: float | None, unit: str) -> dict:
  """images/s, ms per call, achieved TFLOP/s and fraction of peak from a `time_calls` result."""
  s = timing["s_per_call_median"]
  rate = items_per_call / s
  tflops = flops_per_item * rate / 1e12
  return {f"{unit}_per_s": round(rate, 3), f"{unit}_per_s_best": round(items_per_call /
                                                                     timing["s_per_call_best"], 3),
          "ms_per_call": round(1e3 * s, 3), "achieved_tflops": round(tflops, 3),
          "peak_tflops": peak, "fraction_of_peak": None if peak is None else round(tflops / peak, 4),
          "calls_per_round": timing["calls_per_round"], "rounds": timing["rounds"]}


def emit(row: dict, output: str = "") -> None:
  """Prints `row` as one JSON line and appends it to `output` when given."""
  line = json.dumps(row)
  print(line, flush=True)
  if output:
    with open(output, "a") as f:
      f.write(line + "\n")


def model_and_mesh(config):
  """(U-Net, number of classes, mesh) for a benchmark config; library logs quietened."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from fmjax.studies import describe  # pylint: disable=g-import-not-at-top
  from fmjax.core import sharding
  from fmjax.model.unet import build_unet  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  num_classes = describe.num_classes_of(config)
  return (build_unet(config.model, num_classes), num_classes,
          sharding.make_mesh(config.mesh.num_devices))


class TrainBench:
  """What the train benchmarks time, built as `fmjax.main` builds it: the U-Net, mesh and
  optimiser of `config`, fmjax's jitted train step (EMA per `config.train.ema_decay`) on fixed
  normalisation statistics, and random uint8 batches on the data sharding."""

  def __init__(self, config):
    from fmjax import methods  # pylint: disable=g-import-not-at-top
    from fmjax.core import sharding
    from fmjax.data import NormStats
    from fmjax.model.optim import build_optimizer
    from fmjax.train import loop as train
    self.config, self.size = config, config.data.image_size
    self.model, self.num_classes, self.mesh = model_and_mesh(config)
    self.optimizer = build_optimizer(config.train)
    self.ema = config.train.ema_decay
    self.objective = (config.train.objective, methods.objective_options(config.train))
    self.step = train.make_train_step(
        self.model, self.optimizer, NormStats((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), config.seed,
        self.ema, self.mesh, *self.objective, learning_rate=config.train.learning_rate)
    self.init = jax.jit(lambda k: train.create_train_state(
        self.model, self.optimizer, (self.size, self.size, 3), self.num_classes, k, self.ema > 0),
        out_shardings=sharding.replicated(self.mesh))
    self._data = sharding.data_sharding(self.mesh)

  def flops_per_step(self, batch: int) -> float:
    """XLA's FLOP count of one step at `batch` (`describe.train_step_flops`)."""
    from fmjax.studies import describe  # pylint: disable=g-import-not-at-top
    return describe.train_step_flops(self.model, self.optimizer, batch, self.size, self.ema,
                                     *self.objective)

  def batch(self, size: int, rng) -> tuple:
    """(images uint8 [size,s,s,3], labels int32 [size]) drawn from `rng`, on the devices."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    images = rng.integers(0, 256, (size, self.size, self.size, 3), dtype=np.uint8)
    labels = rng.integers(0, self.num_classes, (size,)).astype(np.int32)
    return jax.device_put(images, self._data), jax.device_put(labels, self._data)


def metrics_table(rows: list[dict], lead, columns) -> str:
  """A Markdown table of result rows: the `lead` columns [(header, row -> text)], then each
  metric of `columns` [(key, header)] that the first row has, in percent to one decimal."""
  present = [(k, name) for k, name in columns if k in rows[0]]
  lines = ["| " + " | ".join([h for h, _ in lead] + [name for _, name in present]) + " |",
           "|" + "---|" * len(lead) + "---:|" * len(present)]
  for row in rows:
    lines.append("| " + " | ".join([fn(row) for _, fn in lead]
                                   + [f"{row[k]:.1f}" for k, _ in present]) + " |")
  return "\n".join(lines)


_NOT_OPS = ("$", "ThunkExecutor", "PjitFunction", "CommonPjRt", "ParseArguments")


def newest_trace_path(trace_dir: str) -> str:
  """The newest `jax.profiler` trace (.trace.json.gz) under `trace_dir`."""
  return sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]


def _op_events(events: list[dict]) -> tuple[list[dict], str]:
  """(the events that are ops, "device" or "host"). Where the trace has accelerator processes
  ("/device:GPU:0", ...) only their events count (the host's launches and waits would count
  twice), and of those only the kernels on "Stream ..." lines where such lines exist (a GPU
  trace's other lines, e.g. "XLA Ops", span the same kernels again); else the host's (XLA:CPU
  runs its ops on host threads), less the runtime's own events."""
  names = {e.get("pid"): e.get("args", {}).get("name", "") for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  devices = {pid for pid, name in names.items() if name.startswith("/device:")}
  threads = {(e.get("pid"), e.get("tid")): e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("pid") in devices}
  streams = {k for k, name in threads.items() if name.startswith("Stream")}
  ops = [e for e in events
         if e.get("ph") == "X" and "dur" in e and not e["name"].startswith(_NOT_OPS)
         and (not devices or e.get("pid") in devices)
         and (not streams or (e.get("pid"), e.get("tid")) in streams)]
  return ops, ("device" if devices else "host")


def op_time_by_kind(trace_dir: str, calls: int) -> tuple[dict[str, float], str, float]:
  """({kind: ms per call}, largest first; "device" or "host"; ops per call) of the newest
  trace under `trace_dir` holding `calls` calls (steps): its ops (`_op_events`) summed by name
  without XLA's numbering (".3" on the CPU, "_3" in GPU kernel names)."""
  with gzip.open(newest_trace_path(trace_dir)) as f:
    ops, ops_on = _op_events(json.load(f)["traceEvents"])
  kinds = collections.Counter()
  for e in ops:
    kinds[re.sub(r"[._]\d+$", "", e["name"])] += e["dur"] / 1e3 / calls
  return dict(kinds.most_common()), ops_on, len(ops) / calls


# Broad classes of GPU kernels by name (cuDNN, cuBLAS, Triton and XLA's own), first match wins.
OP_CLASSES = (
    ("attention", r"sdpa|fmha|flash|attention"),
    ("convolution", r"fprop|dgrad|wgrad|conv(?!ert)|implicit_gemm|AddPadding"),
    ("matmul", r"gemm|nvjet|cutlass|matmul|dot"),
    ("reduction", r"reduce|reduction"),
    ("copy", r"copy|transpose|memcpy|memset|concatenate|slice|dynamic_update"),
    ("elementwise", r"loop_|fusion|elementwise|convert"),
)


def op_time_by_class(kinds: dict[str, float]) -> dict[str, float]:
  """{class: ms per call} of `op_time_by_kind`'s kinds, classed by `OP_CLASSES` on the name
  before any template or argument list ("other" for the rest), largest first."""
  classes = collections.Counter()
  for kind, ms in kinds.items():
    bare = re.split(r"[<(]", kind.removeprefix("void "))[0]
    name = next((c for c, pattern in OP_CLASSES if re.search(pattern, bare, re.I)), "other")
    classes[name] += ms
  return {k: round(v, 2) for k, v in classes.most_common()}


def trace_summary(trace_dir: str, calls: int, s_per_call: float, unit: str,
                  top: int = 12) -> dict:
  """Fields for a result row from the newest trace under `trace_dir` of `calls` calls (unit
  "step" or "call"): where the ops ran, op ms per unit, ops per unit, the fraction of
  `s_per_call` (the timed seconds per call) the ops fill, op ms by class and the `top` kinds."""
  kinds, ops_on, ops = op_time_by_kind(trace_dir, calls)
  total = sum(kinds.values())
  return {"ops_on": ops_on, f"op_ms_per_{unit}": round(total, 2),
          f"ops_per_{unit}": round(ops, 1), "op_ms_by_class": op_time_by_class(kinds),
          "op_time_fraction": round(total / (s_per_call * 1e3), 3),
          f"top_ops_ms_per_{unit}": {k: round(v, 3) for k, v in list(kinds.items())[:top]}}


def profile_calls(run_once, calls: int, s_per_call: float, top: int = 12) -> dict:
  """`trace_summary` (unit "call") of a `jax.profiler` trace of `calls` calls of `run_once`
  (which blocks until done)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(calls):
        run_once()
    return trace_summary(trace_dir, calls, s_per_call, "call", top)
