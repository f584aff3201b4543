"""Progress lines (rate, ETA, metrics) and a JSONL metric log in the workdir."""

from __future__ import annotations

import json
import os
import sys
import time

import jax


def _fmt_time(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
  """Prints `desc: done/total (pct) rate unit/s ETA metrics` at most every `interval` s."""

  def __init__(self, total: int, desc: str, unit: str = "it", start: int = 0,
               interval: float = 5.0, stream=None):
    self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
    self.start_count = self.count = start
    self.t0 = self.last = time.time()
    self.stream = stream or sys.stderr
    self.enabled = jax.process_index() == 0

  def rate(self) -> float:
    return (self.count - self.start_count) / max(time.time() - self.t0, 1e-9)

  def update(self, n: int = 1, force: bool = False, **metrics) -> None:
    self.count += n
    now = time.time()
    if self.enabled and (force or now - self.last >= self.interval or self.count >= self.total):
      self.last = now
      rate = self.rate()
      eta = (self.total - self.count) / rate if rate > 0 else float("inf")
      extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in metrics.items())
      print(f"{self.desc}: {self.count}/{self.total} ({100 * self.count / max(self.total, 1):.0f}%) "
            f"{rate:.2f} {self.unit}/s ETA {_fmt_time(eta) if eta != float('inf') else '?'} {extra}",
            file=self.stream, flush=True)


class JsonlWriter:
  """Appends one JSON object per line (host 0 only)."""

  def __init__(self, path: str):
    self.path = path

  def drop_after(self, step: int) -> None:
    """Removes the records of steps after `step` (logged by a run that is resumed from `step`)."""
    if jax.process_index() != 0 or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    kept = [l for l in lines if l.strip() and json.loads(l).get("step", 0) <= step]
    if len(kept) != len(lines):
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(kept)
      os.replace(tmp, self.path)

  def write(self, **record) -> None:
    if jax.process_index() == 0:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
