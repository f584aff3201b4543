"""The train loop's hooks: each runs on its own schedule; the checkpointer saves at its steps,
the NaN guard stops before a bad save, the other hooks flush after each save."""

import json

import numpy as np
import pytest

from fmjax.core.errors import NonFiniteError
from fmjax.train import checkpoint, hooks, loop as train

from conftest import tiny_config


class Recorder(hooks.TrainHook):
  """Records (event, step) of every call, into `calls` (shared between recorders)."""

  def __init__(self, name, calls, every=1, at_end=False):
    self.name, self.calls, self.every, self.at_end = name, calls, every, at_end

  def start(self, step, state):
    self.calls.append((self.name, "start", step))

  def before_step(self, step, state, images, labels):
    self.calls.append((self.name, "before", step))

  def after_step(self, step, state):
    self.calls.append((self.name, "after", step))

  def before_save(self, step):
    self.calls.append((self.name, "before_save", step))

  def flush(self):
    self.calls.append((self.name, "flush", None))

  def close(self):
    self.calls.append((self.name, "close", None))


def _run(run, start, total, metrics=lambda step: {"loss": np.float32(1.0),
                                                 "param_norm": np.float32(2.0)}):
  """The loop of `train.train` with a fake update: state = the step."""
  run.start(start, start)
  for step in range(start + 1, total + 1):
    run.before_step(step, step - 1, None, None)
    run.after_step(step, step, metrics(step))
  run.close()


def _steps(calls, name, event):
  return [s for n, e, s in calls if n == name and e == event]


def test_a_hook_runs_on_its_every_and_at_the_end():
  calls = []
  _run(hooks.Hooks([Recorder("r", calls, every=3, at_end=True)], hooks.StepMetrics(), 10), 0, 10)
  assert _steps(calls, "r", "after") == [3, 6, 9, 10]
  assert _steps(calls, "r", "before") == [1, 4, 7, 10]  # 0, 3, 6, 9 updates done
  assert calls[0] == ("r", "start", 0) and calls[-1] == ("r", "close", None)


def test_schedules_without_the_end_with_periods_and_after_a_resume():
  calls = []
  run = hooks.Hooks([Recorder("plain", calls, every=4), Recorder("two", calls, every=(3, 4)),
                     Recorder("all", calls)], hooks.StepMetrics(), 10)
  _run(run, 5, 10)  # resumed at 5
  assert _steps(calls, "plain", "after") == [8]
  assert _steps(calls, "two", "after") == [6, 8, 9]
  assert _steps(calls, "all", "after") == [6, 7, 8, 9, 10]
  assert _steps(calls, "plain", "start") == [5]


def test_hooks_wrap_the_step_first_innermost():
  calls = []
  run = hooks.Hooks([Recorder("a", calls), Recorder("b", calls)], hooks.StepMetrics(), 1)
  _run(run, 0, 1)
  assert [(n, e) for n, e, _ in calls] == [("a", "start"), ("b", "start"), ("b", "before"),
                                           ("a", "before"), ("a", "after"), ("b", "after"),
                                           ("a", "close"), ("b", "close")]


def test_step_metrics_are_fetched_only_when_asked_and_taken_once():
  metrics = hooks.StepMetrics()
  for step in range(1, 4):
    metrics.add({"loss": np.float32(step), "param_norm": np.float32(10 * step)})
  np.testing.assert_array_equal(metrics.fetch()["loss"], [1.0, 2.0, 3.0])
  assert metrics.fetch()["loss"].dtype == np.float64
  np.testing.assert_array_equal(metrics.take()["param_norm"], [10.0, 20.0, 30.0])
  assert metrics.newest() == {"loss": 3.0, "param_norm": 30.0}  # after the take too
  metrics.add({"loss": np.float32(4), "param_norm": np.float32(40)})
  np.testing.assert_array_equal(metrics.take()["loss"], [4.0])


def test_nan_guard_names_the_first_bad_step():
  metrics = hooks.StepMetrics()
  guard = hooks.NonFiniteGuard(metrics, (5,), "bfloat16")
  losses = {1: 1.0, 2: 0.5, 3: float("nan"), 4: float("inf"), 5: 0.1}
  run = hooks.Hooks([guard], metrics, 10)
  with pytest.raises(NonFiniteError, match=r"The training loss became nan at step 3; no checkpoint "
                                           r"was written after it\. Lower --config.train.learning_rate"
                                           r" .*, or use --config.model.dtype=float32\."):
    _run(run, 0, 5, lambda s: {"loss": np.float32(losses[s]), "param_norm": np.float32(1.0)})


def test_checkpointer_checks_before_and_flushes_after_each_save(tmp_path, monkeypatch):
  calls = []
  metrics = hooks.StepMetrics()
  manager = checkpoint.make_manager(str(tmp_path), keep=10)
  saved = []
  recorder = Recorder("r", calls, every=100)
  guard = hooks.NonFiniteGuard(metrics, (3,), "float32")
  saver = hooks.Checkpointer(manager, 3, {"model": {}}, lambda: {"next_index": len(saved)},
                             (recorder, guard))
  monkeypatch.setattr(checkpoint, "save", lambda m, step, state, meta: (
      saved.append((step, state, meta)), calls.append(("saver", "save", step))))
  _run(hooks.Hooks([recorder, guard, saver], metrics, 7), 0, 7)
  monkeypatch.undo()
  assert [(s, state) for s, state, _ in saved] == [(3, 3), (6, 6), (7, 7)]
  assert saved[1][2] == {"model": {}, "data_iterator": {"next_index": 1}}
  assert [c for c in calls if c[1] in ("before_save", "save", "flush")] == [
      ("r", "before_save", 3), ("saver", "save", 3), ("r", "flush", None),
      ("r", "before_save", 6), ("saver", "save", 6), ("r", "flush", None),
      ("r", "before_save", 7), ("saver", "save", 7), ("r", "flush", None)]
  # Parameters that became NaN in the update of a checkpoint step stop that save.
  bad = hooks.Checkpointer(checkpoint.make_manager(str(tmp_path / "bad")), 2, {}, dict, (guard,))
  metrics = hooks.StepMetrics()
  guard.metrics = metrics
  with pytest.raises(NonFiniteError, match=r"The parameters after step 2 are NaN or infinite "
                                           r"\(norm nan\); no checkpoint was written"):
    _run(hooks.Hooks([guard, bad], metrics, 4), 0, 4,
         lambda s: {"loss": np.float32(1.0), "param_norm": np.float32(1.0 if s < 2 else np.nan)})
  assert checkpoint.make_manager(str(tmp_path / "bad"), read_only=True).all_steps() == []


def test_train_runs_each_hook_on_its_schedule(tmp_path):
  """10 updates: a hook every 3 steps, checkpoints every 4 (and at the end), log rows every 3
  steps and at each checkpoint."""
  config = tiny_config(**{"train.num_steps": 10, "train.log_every_steps": 3,
                          "train.checkpoint_every_steps": 4, "train.keep_checkpoints": 10})
  calls = []
  train.train(config, str(tmp_path), hooks=(Recorder("r", calls, every=3, at_end=True),))
  assert _steps(calls, "r", "after") == [3, 6, 9, 10]
  assert _steps(calls, "r", "before") == [1, 4, 7, 10]
  assert [e for _, e, _ in calls].count("flush") == 3  # after each of the 3 saves
  assert checkpoint.make_manager(str(tmp_path), read_only=True).all_steps() == [4, 8, 10]
  rows = [json.loads(l) for l in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [3, 4, 6, 8, 9, 10]
  assert all(np.isfinite(r["loss"]) for r in rows)
