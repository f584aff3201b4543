"""`python -m fmjax.main` that sends itself a signal at its Nth file write (the kill tests).

FMJAX_KILL_AT_WRITE=N and FMJAX_KILL_SIGNAL=SIGKILL|SIGINT|SIGTERM: the signal is sent just
before the Nth call of `fmjax.core.files.write_bytes` (every file fmjax writes whole goes
through it). FMJAX_TRACE_WRITES=1 prints "write <n> <path>" to stderr for each call instead.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402

from fmjax import main as fm_main  # noqa: E402  (sets the XLA flags before jax)
from fmjax.core import files  # noqa: E402

_original = files.write_bytes
_at = int(os.environ.get("FMJAX_KILL_AT_WRITE", "0"))
_signal = getattr(signal, os.environ.get("FMJAX_KILL_SIGNAL", "SIGKILL"))
_trace = os.environ.get("FMJAX_TRACE_WRITES") == "1"
_count = 0


def write_bytes(path, data):
  global _count
  _count += 1
  if _trace:
    print(f"write {_count} {path}", file=sys.stderr, flush=True)
  if _count == _at:
    os.kill(os.getpid(), _signal)
  return _original(path, data)


files.write_bytes = write_bytes
# Ctrl-C as a terminal sends it to a run in the foreground: a run started in the background
# (nohup, or `&` without job control) inherits SIGINT ignored, and Python then never raises
# KeyboardInterrupt, so the SIGINT cases would test nothing.
signal.signal(signal.SIGINT, signal.default_int_handler)

if __name__ == "__main__":
  app.run(fm_main.main, flags_parser=fm_main.parse_flags)
