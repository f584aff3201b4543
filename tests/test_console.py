"""The console: messages, warnings and errors with the process-0 rule, and progress (tqdm's bar
on a terminal, one plain tqdm-formatted line per interval elsewhere)."""

import io
import re
import sys
import warnings

import pytest

from fmjax.core import console
from fmjax.core.console import Progress


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


class _Process:
  """Stands in for jax in sys.modules: a process of a multi-process run."""

  def __init__(self, index):
    self.index = index

  def process_index(self):
    return self.index


def test_only_process_0_says_and_warns_and_every_process_reports_errors(monkeypatch, capsys):
  for index, shown in ((0, True), (1, False)):
    monkeypatch.setitem(sys.modules, "jax", _Process(index))
    assert console.is_main_process() is shown
    console.say("first line", "second line")
    console.warn("careful")
    console.error("broken", prog="fmjax.deploy")
    out, err = capsys.readouterr()
    assert out == ("first line\nsecond line\n" if shown else "")
    assert err.splitlines() == (["fmjax: warning: careful"] if shown else []) + [
        "fmjax.deploy: error: broken"]
  monkeypatch.delitem(sys.modules, "jax")  # a process without JAX is a single process
  assert console.is_main_process()


def test_every_warning_becomes_one_line_once(monkeypatch, capsys):
  import fmjax.data.decode as decode
  monkeypatch.setattr(warnings, "showwarning", lambda *a, **k: pytest.fail("Python's format"))
  console.new_run()
  console.route_warnings()
  # A warning raised inside the package (the file name is fmjax's own) ...
  warnings.showwarning(UserWarning("mask is 32x32"), UserWarning, decode.__file__, 10)
  # ... and two from another package, the second one a repeat: one line each, once.
  other = "/usr/lib/python3/site-packages/orbax/checkpoint/x.py"
  for _ in range(2):
    warnings.showwarning(DeprecationWarning("old API\n  more detail"), DeprecationWarning, other, 3)
  assert capsys.readouterr().err.splitlines() == [
      "fmjax: warning: mask is 32x32",
      "fmjax: warning: orbax: DeprecationWarning: old API"]


def test_output_and_the_process_0_rule_live_in_the_console():
  """No module but the console prints, and process_index() appears only where data is split
  between processes (the mesh's host slice, the training stream's shard)."""
  import ast
  import pathlib
  import fmjax
  root = pathlib.Path(fmjax.__file__).parent
  prints, indices = [], []
  for path in sorted(root.rglob("*.py")):
    name = str(path.relative_to(root))
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
        prints.append(name)
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "process_index"):
        indices.append(name)
  assert set(prints) == {"core/console.py"}, prints
  assert set(indices) == {"core/console.py", "core/sharding.py", "train/loop.py"}, indices
