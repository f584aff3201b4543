"""Conditional flow-matching training: train state, the jitted step, and the loop.

The step is a pure function `(state, images uint8 [B,H,W,3], labels [B]) -> (state,
metrics)` compiled once with explicit shardings (batch split on the "data" mesh axis,
state replicated) and the state donated. Batches come from a grain pipeline
(`fmjax.data.pipeline`) that is a pure function of (seed, step); its iterator
state is saved with every checkpoint, so a resumed run sees exactly the batches
an uninterrupted one would.
"""

from __future__ import annotations

import math
import time

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax.train import checkpoint
from fmjax.core import files, sharding
from fmjax import methods
from fmjax.data import AnomalyDataset, NormStats, load_dataset, pipeline
from fmjax.data.dataset import workdir_stats_path
from fmjax.core.errors import NonFiniteError
from fmjax.model.unet import build_unet, count_params, init_params
from fmjax.model.optim import build_optimizer, warmup_factor
from fmjax.core.progress import Progress
from fmjax.core.runlog import MetricWriter, StepTrace
from fmjax.core.workdir import prepare_workdir
from fmjax.train.restore import class_labels, model_meta, restore_newest, state_meta

NonFiniteLossError = NonFiniteError  # the name callers catch


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  ema_params: dict  # {} when EMA is off


def num_train_steps(config, num_images: int) -> int:
  """train.num_steps if > 0, else ceil(num_epochs * images / batch)."""
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  return int(math.ceil(config.train.num_epochs * num_images / config.train.batch_size))


def create_train_state(model, optimizer, image_shape, num_classes: int, key, ema: bool) -> TrainState:
  """Fresh float32 parameters, optimiser state and (optionally) EMA parameters."""
  params = init_params(model, key, image_shape)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params),
                    ema_params=jax.tree.map(jnp.copy, params) if ema else {})


def abstract_train_state(model, optimizer, image_shape, num_classes: int, ema: bool,
                         mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the train state, without allocating it."""
  rep = sharding.replicated(mesh)
  shapes = jax.eval_shape(lambda k: create_train_state(
      model, optimizer, image_shape, num_classes, k, ema), jax.random.key(0))
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), shapes)


def train_step_fn(model, optimizer, norm: NormStats, seed: int, ema_decay: float,
                  objective: str = "cfm", objective_options: dict | None = None,
                  learning_rate=None, warmup_steps: int = 0):
  """The pure step (state, images uint8 [B,H,W,3], labels [B]) -> (state, metrics).

  `objective` names a training objective of `fmjax.methods` (default: flow matching)
  and `objective_options` its options (default: the objective's defaults).
  `warmup_steps` > 0 scales the first updates by `optim.warmup_factor` (a linear
  learning-rate warm-up). Metrics (float32 scalars): loss (the batch mean), grad_norm
  (global L2 norm of the gradient), param_norm (of the parameters after the update),
  update_rms (root mean square of the parameter change over all parameters) and, when
  `learning_rate` (the optimiser's) is given, learning_rate (warm-up included).
  """
  base_key = jax.random.key(seed)
  loss_of = methods.objective(objective)
  options = loss_of.default_options() if objective_options is None else objective_options

  def step_fn(state: TrainState, images, labels):
    x1 = norm.normalize(images)
    key = jax.random.fold_in(base_key, state.step)
    loss_key, dropout_key = jax.random.split(key)

    def loss_fn(params):
      velocity = lambda x, t, lab: model.apply({"params": params}, x, t, lab, train=True,
                                               rngs={"dropout": dropout_key})
      return loss_of.loss(velocity, x1, labels, loss_key, **options)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    warmup = warmup_factor(state.step, warmup_steps)
    if warmup_steps > 0:
      updates = jax.tree.map(lambda u: u * warmup.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
    size = sum(u.size for u in jax.tree.leaves(updates))
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "param_norm": optax.global_norm(params),
               "update_rms": optax.global_norm(updates) / jnp.sqrt(jnp.float32(size))}
    if learning_rate is not None:
      metrics["learning_rate"] = jnp.asarray(learning_rate, jnp.float32) * warmup
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
    return new_state, metrics

  return step_fn


def make_train_step(model, optimizer, norm: NormStats, seed: int, ema_decay: float, mesh,
                    objective: str = "cfm", objective_options: dict | None = None,
                    learning_rate=None, warmup_steps: int = 0):
  """`train_step_fn` jitted over `mesh`: batch split on "data", state replicated and donated."""
  data = sharding.data_sharding(mesh)
  rep = sharding.replicated(mesh)
  return jax.jit(train_step_fn(model, optimizer, norm, seed, ema_decay, objective, objective_options,
                               learning_rate, warmup_steps),
                 in_shardings=(rep, data, data), out_shardings=(rep, rep), donate_argnums=(0,))


def _nan_advice(dtype: str) -> str:
  return ("Lower --config.train.learning_rate or check the data normalisation" +
          (", or use --config.model.dtype=float32." if dtype != "float32" else "."))


def _check_finite(pending: list, step: int, dtype: str) -> dict:
  """{metric: float64 [n]} of the steps since the last log; NonFiniteLossError on a bad loss."""
  got = jax.device_get(pending)
  metrics = {k: np.asarray([m[k] for m in got], np.float64) for k in got[0]}
  losses = metrics["loss"]
  if not np.all(np.isfinite(losses)):
    bad = step - len(losses) + int(np.argmin(np.isfinite(losses)))
    raise NonFiniteLossError(
        f"The training loss became {losses[~np.isfinite(losses)][0]} at step {bad + 1}; no "
        f"checkpoint was written after it. {_nan_advice(dtype)}")
  return metrics


def norm_stats_for(workdir: str, dataset: AnomalyDataset) -> NormStats:
  """The workdir's stored statistics, or fresh ones from the normal training images."""
  path = workdir_stats_path(workdir)
  if files.exists(path):
    return NormStats.load(path)
  stats = NormStats.of(dataset.train_images)
  if jax.process_index() == 0:
    stats.save(path)
  return stats


class TrainHook:
  """Work done inside the training loop besides the update (e.g. `fmjax.studies.validation`'s held-out
  loss, `fmjax.studies.noise_scale`'s gradient noise scale). Subclasses override what they need.

  Steps are 1-based update counts; `state` is the train state (do not keep it: the next
  step donates its buffers).
  """

  def start(self, step: int, state: TrainState) -> None:
    """Before the first update of this run; `step` is 0 when fresh, else the resumed step."""

  def before_step(self, step: int, state: TrainState, images: jax.Array, labels: jax.Array) -> None:
    """Before update `step`, with its batch (global arrays) and the parameters it starts from."""

  def after_step(self, step: int, state: TrainState) -> None:
    """After update `step` (before the checkpoint of that step is written)."""

  def flush(self) -> None:
    """After a checkpoint is written: make what was logged so far visible in the files (a
    bucket's JSONL logs are buffered), so that a run killed later resumes with all of it."""

  def close(self) -> None:
    """At the end of the run, also when it fails."""


def train(config, workdir: str, dataset: AnomalyDataset | None = None,
          hooks: tuple[TrainHook, ...] = ()) -> TrainState:
  """Trains (or resumes) the velocity model in `workdir`; returns the final state.

  `hooks` run inside the loop (see `TrainHook`); none run when training is already done.
  """
  prepare_workdir(workdir)
  dataset = dataset if dataset is not None else load_dataset(config.data)
  mesh = sharding.make_mesh(config.mesh.num_devices)
  batch_size = config.train.batch_size
  sharding.check_batch_size(batch_size, mesh, "train.batch_size")

  norm = norm_stats_for(workdir, dataset)
  model = build_unet(config.model, dataset.num_classes)
  optimizer = build_optimizer(config.train)
  ema = config.train.ema_decay > 0
  rep = sharding.replicated(mesh)
  init = jax.jit(lambda k: create_train_state(model, optimizer, dataset.image_shape,
                                              dataset.num_classes, k, ema), out_shardings=rep)
  abstract = abstract_train_state(model, optimizer, dataset.image_shape, dataset.num_classes, ema,
                                  mesh)

  meta = model_meta(config, dataset.class_names)
  train_meta = state_meta(config)
  def restore(manager, step):
    saved = checkpoint.read_meta(manager, step)
    checkpoint.check_meta({**saved["model"], **saved.get("state", {})}, {**meta, **train_meta},
                          workdir)
    return saved, checkpoint.restore(manager, step, abstract)

  manager, latest, restored = restore_newest(workdir, restore, keep=config.train.keep_checkpoints,
                                             move_aside=jax.process_index() == 0)
  saved = None
  if restored is not None:
    saved, state = restored
    print(f"Resuming from step {latest} in {checkpoint.checkpoint_dir(workdir)}", flush=True)
  else:
    state = init(jax.random.key(config.seed))
  print(f"Model: {count_params(state.params):,} parameters; {dataset.num_classes} classes "
        f"({'conditional' if config.data.class_conditional else 'pooled'}); "
        f"{len(dataset.train_images)} training images; mesh {dict(mesh.shape)}", flush=True)

  total = num_train_steps(config, len(dataset.train_images))
  start = int(jax.device_get(state.step))
  objective = (config.train.objective, methods.objective_options(config.train))
  train_step = make_train_step(model, optimizer, norm, config.seed, config.train.ema_decay, mesh,
                               *objective, learning_rate=config.train.learning_rate,
                               warmup_steps=config.train.warmup_steps)
  labels = class_labels(config, dataset.train_classes, dataset.num_classes)
  workers = config.data.loader_workers
  full_meta = {"model": meta, "state": train_meta, "norm": norm.to_dict(),
               "batch_size": batch_size, "loader_workers": workers}
  iterator_state = None  # fresh stream, started at `start`
  if saved is not None:
    if saved.get("loader_workers") == workers and "data_iterator" in saved:
      iterator_state = saved["data_iterator"]
    else:
      print(f"data.loader_workers changed ({saved.get('loader_workers')} -> {workers}): the batch "
            f"stream restarts at step {start}, which gives the same batches.", flush=True)
  # Steps logged after the checkpoint a resume starts from are dropped.
  writer = MetricWriter(workdir, "train", resume_from=start)
  progress = Progress(total, "train", "steps", start=start, interval=config.train.log_every_seconds)
  trace = StepTrace(workdir, "train", config.train.profile_steps, "train.profile_steps")
  if start >= total:
    print(f"Training already done ({start}/{total} steps).", flush=True)
    manager.close()
    writer.close()
    return state

  source = pipeline.ArraySource(dataset.train_images, labels)
  stream = pipeline.train_dataset(source, batch_size, config.seed, jax.process_index(),
                                  jax.process_count())
  iterator = pipeline.train_iterator(stream, iterator_state, workers, config.data.loader_threads,
                                     start=start)
  batches = pipeline.DevicePrefetcher(iterator, mesh, total - start)
  try:
    for hook in hooks:
      hook.start(start, state)
    pending, t_last = [], time.time()
    for step in range(start + 1, total + 1):
      images, batch_labels = batches.next()
      for hook in hooks:
        hook.before_step(step, state, images, batch_labels)
      trace.before(step)
      state, step_metrics = train_step(state, images, batch_labels)
      trace.after(step, step_metrics)
      for hook in hooks:
        hook.after_step(step, state)
      pending.append(step_metrics)
      last = step == total
      save_now = step % config.train.checkpoint_every_steps == 0 or last
      if step % config.train.log_every_steps == 0 or save_now:
        logged = _check_finite(pending, step, config.model.dtype)
        n = len(logged["loss"])
        now = time.time()
        rate = n / max(now - t_last, 1e-9)
        pending, t_last = [], now
        # The loss is the mean since the last log; the norms are those of the last step.
        writer.write(step, **{k: (v.mean() if k == "loss" else v[-1]) for k, v in logged.items()},
                     steps_per_s=rate, images_per_s=rate * batch_size)
        progress.update(n, force=last, loss=float(logged["loss"][-1]), img_s=round(rate * batch_size, 1))
        if save_now and not np.isfinite(logged["param_norm"][-1]):
          # The losses so far used the previous parameters: the new ones are checked too.
          raise NonFiniteLossError(
              f"The parameters after step {step} are NaN or infinite (norm "
              f"{logged['param_norm'][-1]}); no checkpoint was written. "
              f"{_nan_advice(config.model.dtype)}")
        if save_now:
          checkpoint.save(manager, step, state, {**full_meta, "data_iterator": batches.state()})
          writer.flush()  # the logs reach the checkpoint (a bucket's JSONL is buffered)
          for hook in hooks:
            hook.flush()
  finally:
    for hook in hooks:
      hook.close()
    trace.close()
    progress.close()
    batches.close()
    manager.close()
    writer.close()
  return state
