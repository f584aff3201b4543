"""Progress lines (rate, ETA, metrics)."""

from __future__ import annotations

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
