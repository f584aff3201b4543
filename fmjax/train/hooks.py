"""Hooks of the training loop: the work besides the update, each on its own schedule.

A hook's `after_step` runs after the updates its schedule names: `every` n (one period or a
tuple of them) after updates n, 2n, ..., and `at_end` after the last update. Its
`before_step` runs before updates 1, n + 1, 2n + 1, ... (when the updates done are a multiple
of n). A hook with another schedule overrides `due` / `due_before`. Steps are 1-based update
counts. The hooks `train` runs, in order (`Hooks`):

  Profiler        jax.profiler trace of train.profile_steps (wraps the step most tightly)
  (the caller's)  e.g. `fmjax.studies`' validation loss and gradient noise scale
  NonFiniteGuard  stops on a non-finite loss (every update's) or, before a checkpoint, norm
                  of the parameters
  MetricLog       train_metrics.jsonl / TensorBoard rows and the progress line
  Checkpointer    Orbax checkpoints; flushes the other hooks' logs after each save

The step's metrics stay on the device (asynchronous dispatch) until the guard or the log
fetches them (`StepMetrics`), at log and checkpoint steps.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import numpy as np

from fmjax.core.errors import NonFiniteError
from fmjax.core.console import Progress
from fmjax.core.runlog import MetricWriter, StepTrace
from fmjax.train import checkpoint


def _periods(every) -> tuple[int, ...]:
  return tuple(every) if isinstance(every, (tuple, list)) else (every,)


class TrainHook:
  """Work done inside the training loop besides the update. Subclasses override what they
  need; `every` (steps; int or tuple, 0: never) and `at_end` are the schedule.

  `state` is the train state (do not keep it: the next step donates its buffers).
  """
  every: int | tuple[int, ...] = 1
  at_end: bool = False

  def due(self, step: int, last: bool) -> bool:
    """Whether `after_step` runs after update `step` (`last`: the run's final update)."""
    return (last and self.at_end) or any(n > 0 and step % n == 0 for n in _periods(self.every))

  def due_before(self, step: int) -> bool:
    """Whether `before_step` runs before update `step`: step - 1 updates done, a multiple of every."""
    return any(n > 0 and (step - 1) % n == 0 for n in _periods(self.every))

  def start(self, step: int, state) -> None:
    """Before the first update of this run; `step` is 0 when fresh, else the resumed step."""

  def before_step(self, step: int, state, images: jax.Array, labels: jax.Array) -> None:
    """Before update `step`, with its batch (global arrays) and the parameters it starts from."""

  def after_step(self, step: int, state) -> None:
    """After update `step` (before the checkpoint of that step is written)."""

  def before_save(self, step: int) -> None:
    """Before the checkpoint of `step` is written; raising stops it."""

  def flush(self) -> None:
    """After a checkpoint is written: make what was logged so far visible in the files (a
    bucket's JSONL logs are buffered), so that a run killed later resumes with all of it."""

  def close(self) -> None:
    """At the end of the run, also when it fails."""


class LoggingHook(TrainHook):
  """A hook that writes rows through a MetricWriter (`self.writer`, None until `start` makes
  it): its logs are flushed after every checkpoint and closed with the run."""
  writer: MetricWriter | None = None

  def flush(self):
    if self.writer is not None:
      self.writer.flush()

  def close(self):
    if self.writer is not None:
      self.writer.close()


class StepMetrics:
  """The train step's metrics (float32 device scalars) per update, fetched to the host only
  when asked, so that the loop does not wait for the device in between."""

  def __init__(self):
    self._device: list[dict] = []  # not fetched yet
    self._host: list[dict] = []  # fetched, not taken yet
    self._taken: dict | None = None  # the newest update's, once taken
    self.last: dict | None = None  # the newest update's (device)

  def add(self, metrics: dict) -> None:
    self._device.append(metrics)
    self.last = metrics

  def fetch(self) -> dict[str, np.ndarray]:
    """{metric: float64 [n]} of the n updates since the last `take`, in step order."""
    if self._device:
      self._host += jax.device_get(self._device)
      self._device = []
    return {k: np.asarray([m[k] for m in self._host], np.float64) for k in self._host[0]}

  def take(self) -> dict[str, np.ndarray]:
    """`fetch`, and the next one starts after these updates."""
    out = self.fetch()
    self._taken, self._host = self._host[-1], []
    return out

  def newest(self) -> dict[str, np.float64]:
    """The newest update's metrics on the host."""
    if self._device or self._host:
      return {k: v[-1] for k, v in self.fetch().items()}
    return {k: np.float64(v) for k, v in self._taken.items()}


def nan_advice(dtype: str) -> str:
  return ("Lower --config.train.learning_rate or check the data normalisation" +
          (", or use --config.model.dtype=float32." if dtype != "float32" else "."))


class NonFiniteGuard(TrainHook):
  """NonFiniteError on a non-finite loss of any update since the last check (checked at log
  and checkpoint steps), and before a checkpoint on non-finite parameters (their norm)."""
  at_end = True

  def __init__(self, metrics: StepMetrics, every: tuple[int, ...], dtype: str):
    self.metrics, self.every, self.dtype = metrics, every, dtype

  def after_step(self, step, state):
    losses = self.metrics.fetch()["loss"]
    if not np.all(np.isfinite(losses)):
      bad = step - len(losses) + int(np.argmin(np.isfinite(losses)))
      raise NonFiniteError(
          f"The training loss became {losses[~np.isfinite(losses)][0]} at step {bad + 1}; no "
          f"checkpoint was written after it. {nan_advice(self.dtype)}")

  def before_save(self, step):
    # The losses so far used the previous parameters: the new ones are checked too.
    norm = self.metrics.newest()["param_norm"]
    if not np.isfinite(norm):
      raise NonFiniteError(
          f"The parameters after step {step} are NaN or infinite (norm {norm}); no checkpoint "
          f"was written. {nan_advice(self.dtype)}")


class MetricLog(LoggingHook):
  """A row per log (and checkpoint) step in <workdir>/train_metrics.jsonl and TensorBoard: the
  loss averaged over the updates since the previous row, the other metrics of the last one,
  steps_per_s and images_per_s; and the progress line (loss, img/s)."""
  at_end = True

  def __init__(self, metrics: StepMetrics, writer: MetricWriter, progress: Progress,
               every: tuple[int, ...], batch_size: int):
    self.metrics, self.writer, self.progress = metrics, writer, progress
    self.every, self.batch_size = every, batch_size
    self._t_last = time.time()

  def start(self, step, state):
    self._t_last = time.time()

  def after_step(self, step, state):
    logged = self.metrics.take()
    n = len(logged["loss"])
    now = time.time()
    rate = n / max(now - self._t_last, 1e-9)  # steps/s
    self._t_last = now
    self.writer.write(step, **{k: (v.mean() if k == "loss" else v[-1]) for k, v in logged.items()},
                      steps_per_s=rate, images_per_s=rate * self.batch_size)
    self.progress.update(n, force=step == self.progress.total, loss=float(logged["loss"][-1]),
                         img_s=round(rate * self.batch_size, 1))

  def close(self):
    self.progress.close()
    super().close()


class Profiler(TrainHook):
  """A jax.profiler trace of the window of updates `trace` names (it decides which steps)."""

  def __init__(self, trace: StepTrace, metrics: StepMetrics):
    self.trace, self.metrics = trace, metrics

  def before_step(self, step, state, images, labels):
    self.trace.before(step)

  def after_step(self, step, state):
    self.trace.after(step, self.metrics.last)

  def close(self):
    self.trace.close()


class Checkpointer(TrainHook):
  """Saves the state after every `every`-th update and the last one, with `meta` and the data
  iterator's state (`iterator_state()`); the `others` hooks check before (`before_save`) and
  flush their logs after (`flush`)."""
  at_end = True

  def __init__(self, manager, every: int, meta: dict, iterator_state: Callable[[], dict],
               others: Sequence[TrainHook]):
    self.manager, self.every, self.meta = manager, every, meta
    self.iterator_state, self.others = iterator_state, tuple(others)

  def after_step(self, step, state):
    for hook in self.others:
      hook.before_save(step)
    checkpoint.save(self.manager, step, state, {**self.meta, "data_iterator": self.iterator_state()})
    for hook in self.others:
      hook.flush()

  def close(self):
    self.manager.close()


class TimeBudget:
  """train.max_seconds: whether the run has trained that long, asked after log steps (every
  `every` updates, where the log waits for the device anyway). On several processes all take
  process 0's answer, so that they stop after the same update. The clock starts when it is
  made."""

  def __init__(self, seconds: float, every: int):
    self.seconds, self.every, self.t0 = float(seconds), int(every), time.monotonic()

  def spent(self, step: int) -> bool:
    if self.seconds <= 0 or step % self.every:
      return False
    over = time.monotonic() - self.t0 >= self.seconds
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      over = bool(multihost_utils.broadcast_one_to_all(np.int32(over)))
    return over


class Hooks:
  """Runs `hooks` around each update: `before_step` in reverse order and `after_step` in order
  (the first hook wraps the step most tightly), each when due. Records the step's metrics
  in `metrics` first."""

  def __init__(self, hooks: Sequence[TrainHook], metrics: StepMetrics, total: int):
    self.hooks, self.metrics, self.total = tuple(hooks), metrics, total

  def start(self, step: int, state) -> None:
    for hook in self.hooks:
      hook.start(step, state)

  def before_step(self, step: int, state, images, labels) -> None:
    for hook in reversed(self.hooks):
      if hook.due_before(step):
        hook.before_step(step, state, images, labels)

  def after_step(self, step: int, state, metrics: dict, last: bool = False) -> None:
    """After update `step`; `last` (or step == total) makes it the run's final update, so the
    hooks with `at_end` (log, checkpoint) run after it."""
    self.metrics.add(metrics)
    for hook in self.hooks:
      if hook.due(step, last or step == self.total):
        hook.after_step(step, state)

  def close(self) -> None:
    """Closes every hook (also when one fails; the first error is raised)."""
    error = None
    for hook in self.hooks:
      try:
        hook.close()
      except Exception as e:  # pylint: disable=broad-except
        error = error or e
    if error is not None:
      raise error
