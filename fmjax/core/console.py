"""User-facing output in one place: messages, tables, warnings, errors and progress.

The process-0 rule lives here: on a run of several processes (hosts) only process 0 prints
messages, warnings and progress, and only it writes the workdir's shared files
(`is_main_process`). Errors are printed by every process, since the one that failed may not
be process 0.

  say(*lines)       lines on stdout: what was done, tables, where results were written
  warn(message)     one "fmjax: warning: ..." line on stderr
  error(message)    one "<prog>: error: ..." line on stderr (every process)
  route_warnings()  Python warnings (fmjax's and other packages') become warn lines, for
                    the command-line entry points
  Progress          long loops: tqdm's live bar on a terminal; in logs, CI and notebooks the
                    same tqdm-formatted line once per `interval` seconds and at the end, so
                    carriage returns do not pile up
"""

from __future__ import annotations

import os
import sys
import time
import warnings

from tqdm.auto import tqdm

_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def is_main_process() -> bool:
  """True on process 0 of a multi-process run, and in every single-process run (also one
  that has not imported JAX)."""
  jax = sys.modules.get("jax")
  return jax is None or jax.process_index() == 0


def say(*lines: str) -> None:
  """Lines on stdout (process 0 only), flushed so logs show them at once."""
  if is_main_process():
    print("\n".join(lines), flush=True)


_warned: set[str] = set()


def warn(message: str) -> None:
  """One warning line on stderr (process 0 only), once per run: the same message again (one
  per category, per batch) is not repeated until `new_run`."""
  if is_main_process() and message not in _warned:
    _warned.add(message)
    print(f"fmjax: warning: {message}", file=sys.stderr, flush=True)


def new_run() -> None:
  """Forgets the warnings shown (a new run in the same process shows them again)."""
  _warned.clear()


def error(message: str, prog: str = "fmjax") -> None:
  """One error line on stderr, from whichever process hit it."""
  print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def route_warnings() -> None:
  """Shows every Python warning as one `warn` line, once per run, for the command-line entry
  points: fmjax's own (warnings.warn in the library) as its message, another package's as
  "<package>: <category>: <first line of its message>", without file, line and source."""
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def show(message, category, filename, lineno, file=None, line=None):
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    if os.path.abspath(filename).startswith(package + os.sep):
      warn(text)
    else:
      warn(f"{_package_of(filename)}: {category.__name__}: {text}")
  warnings.showwarning = show


def _package_of(filename: str) -> str:
  """The top-level package a file belongs to ("jax" for .../site-packages/jax/_src/x.py)."""
  parts = os.path.abspath(filename).split(os.sep)
  for marker in ("site-packages", "dist-packages"):
    if marker in parts and parts.index(marker) + 1 < len(parts):
      return os.path.splitext(parts[parts.index(marker) + 1])[0]
  return os.path.splitext(os.path.basename(filename))[0]


def _format(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
  """update(n, **metrics) advances by n; the metrics are shown beside the rate."""

  def __init__(self, total: int, desc: str, unit: str = "it", start: int = 0,
               interval: float = 5.0, stream=None):
    self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
    self.start = self.count = start
    self.stream = stream or sys.stderr
    self.enabled = is_main_process()
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
