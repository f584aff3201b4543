"""Progress of long loops through tqdm: a live bar on a terminal, plain lines in logs.

On a terminal, tqdm's bar (count, percent, elapsed<ETA, rate, the latest metrics). Elsewhere
(a log file, CI, a notebook's captured stderr) carriage returns would pile up, so the same
tqdm-formatted line is printed once per `interval` seconds and at the end instead. Only
process 0 reports.
"""

from __future__ import annotations

import sys
import time

import jax
from tqdm.auto import tqdm

_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _format(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
  """update(n, **metrics) advances by n; the metrics are shown beside the rate."""

  def __init__(self, total: int, desc: str, unit: str = "it", start: int = 0,
               interval: float = 5.0, stream=None):
    self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
    self.start = self.count = start
    self.stream = stream or sys.stderr
    self.enabled = jax.process_index() == 0
    self.t0 = self.last = time.time()
    isatty = getattr(self.stream, "isatty", lambda: False)()
    self.bar = None
    if self.enabled and isatty:
      self.bar = tqdm(total=total, initial=start, desc=desc, unit=unit, file=self.stream,
                      dynamic_ncols=True, mininterval=0.5)

  def update(self, n: int = 1, force: bool = False, **metrics) -> None:
    self.count += n
    postfix = ", ".join(f"{k}={_format(v)}" for k, v in metrics.items())
    if self.bar is not None:
      if metrics:
        self.bar.set_postfix_str(postfix, refresh=False)
      self.bar.update(n)
      if self.count >= self.total:
        self.close()
      return
    now = time.time()
    if self.enabled and (force or now - self.last >= self.interval or self.count >= self.total):
      self.last = now
      line = tqdm.format_meter(self.count, self.total, now - self.t0, prefix=self.desc,
                               unit=self.unit, initial=self.start, bar_format=_LOG_FORMAT,
                               postfix=postfix)
      print(line, file=self.stream, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None
