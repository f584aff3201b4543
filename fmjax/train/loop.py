"""Conditional flow-matching training: train state, the jitted step, and the loop.

The step is a pure function `(state, images uint8 [B,H,W,3], labels [B]) -> (state,
metrics)` compiled once with explicit shardings (batch split on the "data" mesh axis,
state replicated) and the state donated. Batches come from a grain pipeline
(`fmjax.data.pipeline`) that is a pure function of (seed, step); its iterator
state is saved with every checkpoint, so a resumed run sees exactly the batches
an uninterrupted one would. `train` runs the update; logging, the NaN guard, checkpoints and
profiling are hooks (`fmjax.train.hooks`).
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import optax

from fmjax.train import checkpoint
from fmjax.core import console, files, sharding
from fmjax import methods
from fmjax.data import AnomalyDataset, NormStats, load_dataset, pipeline
from fmjax.data.dataset import workdir_stats_path
from fmjax.core.errors import ConfigError, NonFiniteError
from fmjax.model.unet import build_unet, count_params, init_params
from fmjax.model.optim import build_optimizer, global_norm, warmup_factor
from fmjax.core.runlog import MetricWriter, StepTrace
from fmjax.core.workdir import prepare_workdir
from fmjax.train.hooks import (Checkpointer, Hooks, MetricLog, NonFiniteGuard, Profiler,
                               StepMetrics, TimeBudget, TrainHook)
from fmjax.train.restore import (check_data, class_labels, data_meta, model_meta, restore_newest,
                                 state_meta)

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
    metrics = {"loss": loss, "grad_norm": global_norm(grads), "param_norm": global_norm(params),
               "update_rms": global_norm(updates) / jnp.sqrt(jnp.float32(size))}
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


def norm_stats_for(workdir: str, dataset: AnomalyDataset) -> NormStats:
  """The workdir's stored statistics when they were computed on this data (or the file
  predates data fingerprints), else fresh ones from the normal training images (stored)."""
  path = workdir_stats_path(workdir)
  if files.exists(path):
    stats, data = NormStats.load(path)
    if data is None or data == dataset.fingerprint():
      return stats
  stats = NormStats.of(dataset.train_images)
  if console.is_main_process():
    stats.save(path, dataset.fingerprint())
  return stats


def training_image_shape(config, dataset: AnomalyDataset) -> tuple[int, int, int]:
  """[H,W,3] of a training batch's images: data.crop_size square crops, else the dataset's one
  size; ConfigError when the images have many sizes and no crop is set, or a crop does not fit
  the smallest image."""
  crop = int(config.data.get("crop_size", 0))
  sizes = dataset.train_sizes()
  if crop:
    (h, w), path = _smallest(dataset)
    if crop > min(h, w):
      raise ConfigError(f"data.crop_size {crop} is larger than the smallest training image "
                        f"({w}x{h}{', ' + path if path else ''}); use at most {min(h, w)} "
                        "(a multiple of the model's stride) or a larger data.resize.")
    return crop, crop, 3
  if len(sizes) > 1:
    examples = ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:3])
    raise ConfigError(f"The training images have {len(sizes)} sizes ({examples}, ...): set "
                      "data.crop_size to train on square crops of one size (a multiple of the "
                      "model's stride).")
  return dataset.image_shape


def _smallest(dataset: AnomalyDataset) -> tuple[tuple[int, int], str]:
  """((height, width) of the training image with the shortest side, its path or "")."""
  shapes = [im.shape[:2] for im in dataset.train_images]
  i = min(range(len(shapes)), key=lambda j: (min(shapes[j]), j))
  return tuple(shapes[i]), (dataset.train_paths[i] if dataset.train_paths else "")


def _restore_or_create(config, workdir: str, dataset: AnomalyDataset, mesh, model, optimizer):
  """(manager, state, saved checkpoint meta or None, {"model", "state"} meta): the newest
  checkpoint that restores and matches the config, else a fresh state."""
  ema = config.train.ema_decay > 0
  shape = training_image_shape(config, dataset)
  abstract = abstract_train_state(model, optimizer, shape, dataset.num_classes, ema, mesh)
  meta = {"model": model_meta(config, dataset.class_names), "state": state_meta(config),
          "data": data_meta(dataset)}

  def restore(manager, step):
    saved = checkpoint.read_meta(manager, step)
    checkpoint.check_meta({**saved["model"], **saved.get("state", {})},
                          {**meta["model"], **meta["state"]}, workdir)
    check_data(saved.get("data"), meta["data"], workdir)
    return saved, checkpoint.restore(manager, step, abstract)

  manager, latest, restored = restore_newest(workdir, restore, keep=config.train.keep_checkpoints,
                                             move_aside=console.is_main_process())
  saved = None
  if restored is not None:
    saved, state = restored
    console.say(f"Resuming from step {latest} in {checkpoint.checkpoint_dir(workdir)}")
  else:
    init = jax.jit(lambda k: create_train_state(model, optimizer, shape, dataset.num_classes, k,
                                                ema),
                   out_shardings=sharding.replicated(mesh))
    state = init(jax.random.key(config.seed))
  console.say(f"Model: {count_params(state.params):,} parameters; {dataset.num_classes} classes "
              f"({'conditional' if config.data.class_conditional else 'pooled'}); "
              f"{len(dataset.train_images)} training images; mesh {dict(mesh.shape)}")
  return manager, state, saved, meta


def _saved_iterator_state(saved: dict | None, workers: int, start: int) -> dict | None:
  """The checkpoint's grain iterator state, or None (a fresh stream started at `start`) when
  there is none or data.loader_workers changed."""
  if saved is None:
    return None
  if saved.get("loader_workers") == workers and "data_iterator" in saved:
    return saved["data_iterator"]
  console.say(f"data.loader_workers changed ({saved.get('loader_workers')} -> {workers}): the "
              f"batch stream restarts at step {start}, which gives the same batches.")
  return None


def _batches(config, dataset: AnomalyDataset, mesh, iterator_state, start: int, total: int):
  """The global batches of updates start+1..total on the mesh: a pure function of (seed, step)."""
  labels = class_labels(config, dataset.train_classes, dataset.num_classes)
  source = pipeline.ArraySource(dataset.train_images, labels)
  stream = pipeline.train_dataset(source, config.train.batch_size, config.seed,
                                  jax.process_index(), jax.process_count(),
                                  int(config.data.get("crop_size", 0)))
  iterator = pipeline.train_iterator(stream, iterator_state, config.data.loader_workers,
                                     config.data.loader_threads, start=start)
  return pipeline.DevicePrefetcher(iterator, mesh, total - start)


def _logs(config, workdir: str, metrics: StepMetrics, start: int, total: int):
  """(MetricLog, Profiler). The log drops the rows after `start` (of a run resumed from it)."""
  writer = MetricWriter(workdir, "train", resume_from=start)
  progress = console.Progress(total, "train", "steps", start=start,
                              interval=config.train.log_every_seconds)
  trace = StepTrace(workdir, "train", config.train.profile_steps, "train.profile_steps")
  log_every = (config.train.log_every_steps, config.train.checkpoint_every_steps)
  return (MetricLog(metrics, writer, progress, log_every, config.train.batch_size),
          Profiler(trace, metrics))


def _all_hooks(config, hooks, metrics: StepMetrics, log: MetricLog, profiler: Profiler, manager,
               meta: dict, norm: NormStats, batches, total: int) -> Hooks:
  """profiler, the caller's hooks, the NaN guard, the metric log and the checkpointer."""
  check_every = (config.train.log_every_steps, config.train.checkpoint_every_steps)
  others = (profiler, *hooks, NonFiniteGuard(metrics, check_every, config.model.dtype), log)
  meta = {**meta, "norm": norm.to_dict(), "batch_size": config.train.batch_size,
          "loader_workers": config.data.loader_workers}
  saver = Checkpointer(manager, config.train.checkpoint_every_steps, meta, batches.state, others)
  return Hooks((*others, saver), metrics, total)


def train(config, workdir: str, dataset: AnomalyDataset | None = None,
          hooks: tuple[TrainHook, ...] = ()) -> TrainState:
  """Trains (or resumes) the velocity model in `workdir`; returns the final state.

  `hooks` run inside the loop, after the profiler and before the NaN guard, the metric log and
  the checkpointer (see `fmjax.train.hooks`); none run when training is already done. With
  train.max_seconds > 0 the run stops at the first log step after that much time, checkpointed
  there (a later run resumes towards the full length).
  """
  prepare_workdir(workdir)
  dataset = dataset if dataset is not None else load_dataset(config.data)
  mesh = sharding.make_mesh(config.mesh.num_devices)
  sharding.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
  model, optimizer = build_unet(config.model, dataset.num_classes), build_optimizer(config.train)
  manager, state, saved, meta = _restore_or_create(config, workdir, dataset, mesh, model, optimizer)
  norm = norm_stats_for(workdir, dataset)  # after the checkpoint's data check: nothing refused writes
  total = num_train_steps(config, len(dataset.train_images))
  start = int(jax.device_get(state.step))
  train_step = make_train_step(model, optimizer, norm, config.seed, config.train.ema_decay, mesh,
                               config.train.objective, methods.objective_options(config.train),
                               learning_rate=config.train.learning_rate,
                               warmup_steps=config.train.warmup_steps)
  iterator_state = _saved_iterator_state(saved, config.data.loader_workers, start)
  metrics = StepMetrics()
  log, profiler = _logs(config, workdir, metrics, start, total)
  if start >= total:
    console.say(f"Training already done ({start}/{total} steps).")
    manager.close()
    log.close()
    return state

  batches = _batches(config, dataset, mesh, iterator_state, start, total)
  run = _all_hooks(config, hooks, metrics, log, profiler, manager, meta, norm, batches, total)
  try:
    run.start(start, state)
    budget = TimeBudget(config.train.max_seconds, config.train.log_every_steps)  # clock from here
    for step in range(start + 1, total + 1):
      images, labels = batches.next()
      run.before_step(step, state, images, labels)
      state, step_metrics = train_step(state, images, labels)
      stop = step < total and budget.spent(step)
      run.after_step(step, state, step_metrics, last=stop)
      if stop:
        epochs = step * config.train.batch_size / len(dataset.train_images)
        console.say(f"Stopped after update {step} of {total} ({epochs:.1f} epochs): "
                    f"train.max_seconds={config.train.max_seconds:g} has passed; run again to "
                    "continue from this checkpoint.")
        break
  finally:
    batches.close()
    run.close()
  return state
