"""Progress: tqdm's bar on a terminal, one plain tqdm-formatted line per interval elsewhere."""

import io
import re

from fmjax.core.progress import Progress


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_a_log_gets_whole_lines_with_count_rate_eta_and_metrics():
  log = io.StringIO()
  progress = Progress(100, "train", "steps", start=20, interval=3600.0, stream=log)
  progress.update(30, loss=0.123456, img_s=12.5)  # inside the interval: nothing yet
  assert log.getvalue() == ""
  progress.update(10, force=True, loss=0.5)
  progress.update(40)  # the end is always reported
  lines = log.getvalue().splitlines()
  assert "\r" not in log.getvalue() and len(lines) == 2
  assert re.fullmatch(r"train: 60/100 \(60%\) \[\d\d:\d\d<\d\d:\d\d, [\d.]+(steps/s|s/steps), "
                      r"loss=0\.5\]", lines[0]), lines[0]
  assert lines[1].startswith("train: 100/100 (100%)")


def test_a_terminal_gets_a_live_tqdm_bar():
  term = _Terminal()
  progress = Progress(10, "score", "img", stream=term)
  for _ in range(10):
    progress.update(1, loss=1.0)
  out = term.getvalue()
  assert "\r" in out and "10/10" in out and "loss=1" in out and "|" in out
  assert progress.bar is None  # closed at the end
