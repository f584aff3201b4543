"""Run records and metric writing in the workdir (process 0 only).

  config.json            the resolved config of the latest run, with its command line and mode
  environment.json       versions (python, jax, jaxlib, flax, optax, orbax, numpy), devices, hosts
  run_history.jsonl      one line per run: start time, mode, command line
  <name>_metrics.jsonl   scalars per step (train_metrics.jsonl, eval_metrics.jsonl)
  tensorboard/<name>/    the same scalars as TensorBoard event files
  profile/<name>/        jax.profiler traces of the steps named by train.profile_steps /
                         evaluate.profile_batches (TensorBoard's profile plugin, or Perfetto)

TensorBoard files are written with tensorboardX: it writes the event format with
protobuf alone, without TensorFlow (which flax's and clu's writers need), and is
maintained. Where it is not installed (e.g. a machine without a package registry)
the JSONL files are written and a warning says that TensorBoard files are not.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile

import jax

from fmjax.core import console, files
from fmjax.core.errors import CorruptFileError
from fmjax.core.settings import trace_window


def _versions() -> dict:
  out = {"python": platform.python_version()}
  for package in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "grain",
                  "tensorboardX"):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = None
  return out


def environment() -> dict:
  """Versions, devices and hosts of this run."""
  devices = jax.devices()
  return {"versions": _versions(), "platform": devices[0].platform,
          "device_kind": devices[0].device_kind, "device_count": len(devices),
          "local_device_count": jax.local_device_count(), "process_count": jax.process_count(),
          "host": socket.gethostname()}


def write_run_record(workdir: str, config, mode: str, argv: list[str] | None = None) -> None:
  """config.json, environment.json, and a line in run_history.jsonl."""
  if not console.is_main_process():
    return
  command = list(sys.argv if argv is None else argv)
  started = datetime.datetime.now().isoformat(timespec="seconds")
  record = {"mode": mode, "command": command, "started": started,
            "config": json.loads(config.to_json())}
  files.write_json(os.path.join(workdir, "config.json"), record)
  files.write_json(os.path.join(workdir, "environment.json"), environment())
  files.append_text(os.path.join(workdir, "run_history.jsonl"),
                    json.dumps({"started": started, "mode": mode, "command": command}) + "\n")


def _records(path: str, text: str) -> list[tuple[str, dict | None]]:
  """(line, record or None) of a JSONL log. A last line that does not parse is what a killed
  run left half-written: None (the caller drops it). Any other line that is not a JSON object
  with a whole-number "step" is one CorruptFileError naming the file and the line."""
  lines = [l for l in text.splitlines(keepends=True) if l.strip()]
  out = []
  for i, line in enumerate(lines):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        out.append((line, None))
        continue
      record = None
    if not isinstance(record, dict) or not isinstance(record.get("step", 0), int):
      raise CorruptFileError(f"{path} line {i + 1} is not a JSON record with a step "
                             f"({line.strip()[:60]!r}); delete that line (or the file: it is "
                             "the run's metric log)")
    out.append((line, record))
  return out


def read_metrics(workdir: str, name: str) -> list[dict]:
  """The records of <workdir>/<name>_metrics.jsonl in step order ([] when there is none)."""
  path = os.path.join(workdir, f"{name}_metrics.jsonl")
  if not files.exists(path):
    return []
  records = [r for _, r in _records(path, files.read_text(path)) if r is not None]
  return sorted(records, key=lambda r: r.get("step", 0))


class MetricWriter:
  """Scalars per step to <workdir>/<name>_metrics.jsonl and <workdir>/tensorboard/<name>/.

  `resume_from`: records after this step (written by a run that is resumed from it)
  are dropped from the JSONL file, and TensorBoard is told to discard them (purge_step).
  """

  def __init__(self, workdir: str, name: str, resume_from: int | None = None):
    self.path = os.path.join(workdir, f"{name}_metrics.jsonl")
    self._log = files.LineLog(self.path)
    self.tb_dir = os.path.join(workdir, "tensorboard", name)
    self._tb = None
    self._purge = None if not resume_from else resume_from + 1
    if resume_from is not None:
      self._drop_after(resume_from)

  def _drop_after(self, step: int) -> None:
    if not console.is_main_process() or not files.exists(self.path):
      return
    text = files.read_text(self.path)
    records = _records(self.path, text)
    if records and records[-1][1] is None:
      console.warn(f"dropped the half-written last line of {self.path} (a run killed while "
                   "writing it).")
    kept = "".join(l if l.endswith("\n") else l + "\n" for l, r in records
                   if r is not None and r.get("step", 0) <= step)
    if kept != text:
      self._log.replace(kept)

  def _tensorboard(self):
    if self._tb is None:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      except ImportError:
        console.warn("tensorboardX is not installed: no TensorBoard files (JSONL only).")
        self._tb = False
      else:
        self._tb = SummaryWriter(self.tb_dir, purge_step=self._purge, flush_secs=30)
    return self._tb

  def write(self, step: int, **scalars) -> None:
    """One record: {"step": step, **scalars} (floats), to both outputs."""
    if not console.is_main_process():
      return
    values = {k: float(v) for k, v in scalars.items()
              if v is not None and math.isfinite(float(v))}  # undefined metrics are left out
    self._log.append(json.dumps({"step": int(step), **values}) + "\n")
    tb = self._tensorboard()
    if tb:
      for k, v in values.items():
        tb.add_scalar(k, v, int(step))

  def flush(self) -> None:
    """Makes every record written so far visible in the files (a bucket's JSONL is buffered)."""
    if console.is_main_process():
      self._log.flush()
      if self._tb:
        self._tb.flush()

  def close(self) -> None:
    self.flush()
    if self._tb:
      self._tb.close()
    self._tb = None


class StepTrace:
  """A jax.profiler trace of steps a..b of a loop, written to <workdir>/profile/<name>/.

  Call `before(step)` before a step is dispatched and `after(step, outputs)` once it is; the
  trace stops after step b's outputs are ready, so it holds their device work. Each process
  writes its own trace (named by host). Open the folder with TensorBoard's profile plugin
  (`tensorboard --logdir <workdir>/profile`) or the perfetto_trace.json.gz in ui.perfetto.dev.
  """

  def __init__(self, workdir: str, name: str, spec: str, key: str):
    self.window = trace_window(spec, key)
    self.directory = os.path.join(workdir, "profile", name)
    self.active = False
    self._local = None  # for a bucket workdir: the local folder traced into, then uploaded

  def before(self, step: int) -> None:
    if self.window and not self.active and self.window[0] <= step <= self.window[1]:
      if files.is_remote(self.directory):
        self._local = tempfile.mkdtemp(prefix="fmjax-profile-")
      options = jax.profiler.ProfileOptions()
      options.python_tracer_level = 0  # device ops and JAX's own host events, not every Python call
      jax.profiler.start_trace(self._local or self.directory, create_perfetto_trace=True,
                               profiler_options=options)
      self.active = True

  def after(self, step: int, outputs=None) -> None:
    if self.active and step >= self.window[1]:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    """Stops a running trace (also when the loop ended inside the window)."""
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      if self._local:
        try:
          files.upload_tree(self._local, self.directory)
        finally:
          shutil.rmtree(self._local, ignore_errors=True)
          self._local = None
      console.say(f"Profiler trace ({self.window[0]}..{self.window[1]}) written to "
                  f"{self.directory}/ (tensorboard --logdir {os.path.dirname(self.directory)}, "
                  f"or its perfetto_trace.json.gz in ui.perfetto.dev)")
