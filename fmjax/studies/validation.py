"""The held-out validation loss: the CFM loss at fixed times and fixed noise.

  L_val = mean over held-out images i, times t_j = (j + 1/2) / J (j < J) and pixel values of
          (v(x_ij, t_j, c_i) - (x1_i - x0_ij))^2,   x_ij = (1 - t_j) x0_ij + t_j x1_i

with x1_i the normalised image, c_i its model label and x0_ij ~ N(0, I) drawn from
fold_in(fold_in(key(seed), id_i), j), where id_i is the image's content id (`fmjax.core.ids`).
Each image's term depends only on its pixels, the parameters and (seed, J), so the loss
does not change with the batch size, the device count or the order of the images; the
model runs without dropout. `ValidationLoss` is the training hook that logs it at fixed
example counts (`<workdir>/val_metrics.jsonl`), so runs with different batch sizes are
compared at the same numbers of training examples.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.model import flow
from fmjax.core import sharding
from fmjax.data import NormStats
from fmjax.core.ids import image_ids
from fmjax.core.runlog import MetricWriter
from fmjax.train.hooks import LoggingHook


def time_grid(num_times: int) -> np.ndarray:
  """t_j = (j + 1/2) / J: float32 [J]."""
  return ((np.arange(num_times) + 0.5) / num_times).astype(np.float32)


def image_losses_fn(model, norm: NormStats, num_times: int, seed: int):
  """(params, images uint8 [b,H,W,3], labels [b], ids [b]) -> per-image loss float32 [b]: each
  image's mean over the J times and its pixel values (one device; not jitted)."""
  base = jax.random.key(seed)
  times = jnp.asarray(time_grid(num_times))

  def losses(params, images, labels, ids):
    x1 = norm.normalize(images)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(ids)  # [b]

    def at_time(j):
      x0 = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, j), x1.shape[1:],
                                                jnp.float32))(keys)
      t = jnp.full((x1.shape[0],), times[j], jnp.float32)
      v = model.apply({"params": params}, flow.interpolate(x0, x1, t), t, labels)
      sq = jnp.square(v.astype(jnp.float32) - flow.target_velocity(x0, x1))
      return jnp.mean(sq, axis=(1, 2, 3))  # [b]

    return jnp.mean(jax.lax.map(at_time, jnp.arange(num_times)), axis=0)

  return losses


def make_val_loss_fn(model, norm: NormStats, num_times: int, seed: int, mesh):
  """`image_losses_fn` sharded over the mesh's data axis and jitted."""
  local = image_losses_fn(model, norm, num_times, seed)
  spec = jax.sharding.PartitionSpec(sharding.DATA_AXIS)
  fn = jax.shard_map(local, mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), spec, spec, spec),
                     out_specs=spec)
  data = sharding.data_sharding(mesh)
  return jax.jit(fn, in_shardings=(sharding.replicated(mesh), data, data, data), out_shardings=data)


def validation_loss(loss_fn, params, images: np.ndarray, labels: np.ndarray, batch_size: int,
                    mesh) -> float:
  """L_val over uint8 images [V,H,W,3] with model labels [V], in padded batches of
  `batch_size` (a multiple of the mesh's devices and hosts); summed in float64."""
  sharding.check_batch_size(batch_size, mesh, "evaluate.batch_size")
  data = sharding.data_sharding(mesh)
  arrays = (images, np.asarray(labels, np.int32), image_ids(images))
  total = 0.0
  for start in range(0, len(images), batch_size):
    batch, valid = sharding.padded_batch(arrays, start, batch_size, data)
    out = loss_fn(params, *batch)
    total += float(np.sum(np.asarray(sharding.to_host(out), np.float64)[valid]))
  return total / len(images)


def eval_steps(batch_size: int, every_examples: int, total_steps: int) -> list[int]:
  """The first steps at which k * every_examples training examples have been seen (k >= 1),
  and the last step: ascending, distinct, within 1..total_steps."""
  steps = {total_steps}
  k = 1
  while True:
    s = math.ceil(k * every_examples / batch_size)
    if s > total_steps:
      break
    steps.add(s)
    k += 1
  return sorted(steps)


class ValidationLoss(LoggingHook):
  """Logs L_val of the parameters (the EMA ones when `use_ema` and kept) to
  <workdir>/val_metrics.jsonl: at step 0 of a fresh run and after each step of `steps`.

  `images`/`labels`: the held-out uint8 images [V,H,W,3] and model labels [V]. Records are
  {step, examples = step * batch_size, val_loss}.
  """

  def __init__(self, workdir: str, model, norm: NormStats, images: np.ndarray, labels: np.ndarray,
               *, num_times: int, seed: int, batch_size: int, train_batch_size: int,
               steps: list[int], mesh, use_ema: bool = False):
    if not len(images):
      raise ValueError("The validation loss needs held-out images (data.val_fraction > 0).")
    self._workdir, self._images, self._labels = workdir, images, labels
    self._batch, self._train_batch, self._mesh = batch_size, train_batch_size, mesh
    self._steps, self._use_ema = set(steps), use_ema
    self._fn = make_val_loss_fn(model, norm, num_times, seed, mesh)

  def due(self, step, last):
    return step in self._steps

  def _log(self, step: int, state) -> None:
    params = state.ema_params if (self._use_ema and state.ema_params) else state.params
    loss = validation_loss(self._fn, params, self._images, self._labels, self._batch, self._mesh)
    self.writer.write(step, examples=step * self._train_batch, val_loss=loss)

  def start(self, step, state):
    # A fresh run drops every old record (-1), step 0's included; a resumed one those after `step`.
    self.writer = MetricWriter(self._workdir, "val", resume_from=step if step else -1)
    if step == 0:
      self._log(0, state)

  def after_step(self, step, state):
    self._log(step, state)
