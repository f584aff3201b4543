"""What training and evaluation share about a run's checkpoints, below both of them.

The identity a checkpoint must match (derived from the whole `config.model`, so a new
architecture field can never escape the check), class labels of a class set, the fallback
past checkpoints that no longer restore, and restoring the parameters (and EMA parameters)
for evaluation without the optimiser state.
"""

from __future__ import annotations

import json
import os
import time
from typing import NamedTuple

import jax
import numpy as np

from fmjax.core import console, files, fingerprint, sharding
from fmjax.core.errors import CheckpointMismatchError, MissingCheckpointError, UserError
from fmjax.data import NormStats
from fmjax.model.unet import build_unet, init_params
from fmjax.train import checkpoint

CORRUPT_DIR = "corrupt_checkpoints"

# config.model fields that set how the model computes, not what its parameters are.
COMPUTE_ONLY_MODEL_KEYS = ("dtype", "attention_impl", "dropout", "group_norm")


def restore_newest(workdir: str, restore, *, keep: int = 3, read_only: bool = False,
                   move_aside: bool = False):
  """(manager, step, restore(manager, step)) for the newest checkpoint that restores.

  A checkpoint that fails to restore (truncated or missing files) is skipped with a
  warning naming it; with `move_aside` (training, which will write those steps again)
  the skipped ones are moved to <workdir>/corrupt_checkpoints/, never deleted. A
  `UserError` from `restore` (a checkpoint of another model) is raised as it is. With
  no checkpoint: (manager, None, None); when none restores: MissingCheckpointError.
  """
  manager = checkpoint.make_manager(workdir, keep, read_only=read_only)
  failed = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      result = restore(manager, step)
    except UserError:
      manager.close()
      raise
    except Exception as e:  # pylint: disable=broad-except  (Orbax/TensorStore read errors)
      reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
      failed.append((step, reason))
      continue
    for bad, why in failed:
      console.warn(f"checkpoint step {bad} in {checkpoint.checkpoint_dir(workdir)} does "
                   f"not restore ({why}); using step {step}.")
    if failed and move_aside:
      manager.close()
      for bad, _ in failed:
        aside = os.path.join(files.absolute(workdir), CORRUPT_DIR, f"{bad}-{int(time.time())}")
        files.move(os.path.join(checkpoint.checkpoint_dir(workdir), str(bad)), aside)
        console.warn(f"moved the unrestorable step {bad} to {aside} (kept for inspection).")
      manager = checkpoint.make_manager(workdir, keep, read_only=read_only)
    return manager, step, result
  if failed:
    manager.close()
    raise MissingCheckpointError(
        f"No checkpoint in {checkpoint.checkpoint_dir(workdir)} restores: " +
        "; ".join(f"step {s}: {why}" for s, why in failed) + ". Nothing was changed.")
  return manager, None, None


def _plain(value):
  """JSON round trip: tuples -> lists, as a checkpoint's metadata reads back."""
  return json.loads(json.dumps(value))


def model_meta(config, class_names) -> dict:
  """What a checkpoint's parameters are: every config.model field but the compute-only ones,
  the image size, the classes, conditional or pooled, and the training objective."""
  arch = {k: v for k, v in config.model.to_dict().items() if k not in COMPUTE_ONLY_MODEL_KEYS}
  return _plain({**arch, "image_size": config.data.image_size, "class_names": list(class_names),
                 "class_conditional": bool(config.data.class_conditional),
                 "objective": config.train.objective})


def state_meta(config) -> dict:
  """What the rest of the train state holds (EMA parameters, AMSGrad statistics) and which
  normal images training left out (data.val_fraction): a resume must keep all three."""
  return {"ema": config.train.ema_decay > 0, "amsgrad": bool(config.train.amsgrad),
          "val_fraction": float(config.data.val_fraction)}


def data_meta(dataset) -> dict:
  """What a checkpoint was trained on: the data set's name, its number of training images and
  their fingerprint (`AnomalyDataset.fingerprint`)."""
  return {"name": dataset.name, "train_images": len(dataset.train_images),
          "fingerprint": dataset.fingerprint()}


def check_data(saved: dict | None, current: dict, workdir: str) -> None:
  """CheckpointMismatchError when the checkpoint was trained on other data than `current`
  (checkpoints older than data fingerprints carry none and are not checked)."""
  if not saved or saved.get("fingerprint") == current["fingerprint"]:
    return
  raise CheckpointMismatchError(
      f"The checkpoint in {checkpoint.checkpoint_dir(workdir)} was trained on other data: "
      f"{saved.get('name')!r}, {saved.get('train_images')} training images (fingerprint "
      f"{fingerprint.short(saved.get('fingerprint'))}) there; {current['name']!r}, "
      f"{current['train_images']} (fingerprint {fingerprint.short(current['fingerprint'])}) now "
      "(data.* settings or files changed). Use a new --workdir, or restore the data it was "
      "trained on.")


def saved_meta(workdir: str, step: int) -> dict:
  """The metadata saved with the checkpoint at `step` (model, state, norm, ...)."""
  manager = checkpoint.make_manager(workdir, read_only=True)
  try:
    return checkpoint.read_meta(manager, step)
  finally:
    manager.close()


def class_labels(config, classes: np.ndarray, num_classes: int) -> np.ndarray:
  """Model labels [N] for class indices [N]: the classes when conditional, else the null label
  (= num_classes) for every image."""
  if config.data.class_conditional:
    return np.asarray(classes, np.int32)
  return np.full(np.shape(classes), num_classes, np.int32)


def saved_steps(workdir: str) -> list[int]:
  """The steps of the checkpoints kept in `workdir`, ascending."""
  manager = checkpoint.make_manager(workdir, read_only=True)
  steps = sorted(manager.all_steps())
  manager.close()
  return steps


def abstract_params(model, image_size: int, mesh):
  """Shapes, dtypes and (replicated) shardings of the model's parameters, nothing allocated."""
  rep = sharding.replicated(mesh)
  shapes = jax.eval_shape(lambda k: init_params(model, k, (image_size, image_size, 3)),
                          jax.random.key(0))
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), shapes)


class Loaded(NamedTuple):
  """A checkpoint restored for scoring."""
  params: dict  # the EMA parameters when asked for and kept, else the parameters
  step: int
  norm: NormStats
  class_names: list[str]
  fingerprint: str  # the checkpoint's `checkpoint.params_fingerprint`


def _fingerprint(manager, step: int, meta: dict, target, params, ema) -> str:
  """The checkpoint's fingerprint: the one saved with it, or (checkpoints saved before
  fingerprints) computed from its parameters and EMA parameters."""
  if isinstance(meta.get("fingerprint"), str):
    return meta["fingerprint"]
  has_ema = bool(meta.get("state", {}).get("ema", False))
  if has_ema and ema is None or params is None:
    params, ema = checkpoint.restore_params(manager, step, target, has_ema)
  return checkpoint.params_fingerprint(params, ema if has_ema else None, meta.get("norm"))


def load_params_for_eval(config, workdir: str, class_names=None, use_ema: bool = True,
                         step: int | None = None, mesh=None) -> Loaded:
  """The checkpoint at `step` (default: the newest that restores), as a `Loaded`.

  The checkpoint must match the config's model and, when given, `class_names`;
  without them the checkpoint's own class names are used (scoring new images).
  The EMA parameters are used when `use_ema` and the checkpoint has them. The parameters are
  replicated over `mesh` (default: config.mesh.num_devices devices).
  """
  mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh.num_devices)

  def restore(manager, step):
    meta = checkpoint.read_meta(manager, step)
    names = list(class_names) if class_names is not None else list(meta["model"]["class_names"])
    checkpoint.check_meta(meta["model"], model_meta(config, names), workdir)
    target = abstract_params(build_unet(config.model, len(names)), config.data.image_size, mesh)
    with_ema = bool(use_ema and meta.get("state", {}).get("ema", False))
    params, ema = checkpoint.restore_params(manager, step, target, with_ema)
    fp = _fingerprint(manager, step, meta, target, params, ema)
    return (ema if with_ema else params), NormStats.from_dict(meta["norm"]), names, fp

  if step is None:  # the newest that restores
    manager, step, restored = restore_newest(workdir, restore, read_only=True)
    manager.close()
    if step is None:
      raise MissingCheckpointError(f"No checkpoint in {checkpoint.checkpoint_dir(workdir)}: "
                                   "train first (--mode=train or train_and_evaluate).")
  else:
    manager = checkpoint.make_manager(workdir, read_only=True)
    try:
      if step not in manager.all_steps():
        raise MissingCheckpointError(f"No checkpoint for step {step} in "
                                     f"{checkpoint.checkpoint_dir(workdir)}; saved steps: "
                                     f"{sorted(manager.all_steps())}.")
      restored = restore(manager, step)
    finally:
      manager.close()
  params, norm, names, fp = restored
  return Loaded(params, int(step), norm, names, fp)


def checkpoint_fingerprint(config, workdir: str, step: int) -> str:
  """The fingerprint of the checkpoint at `step` of `workdir`: read from its metadata (no
  parameters are restored unless the checkpoint predates fingerprints)."""
  manager = checkpoint.make_manager(workdir, read_only=True)
  try:
    meta = checkpoint.read_meta(manager, step)
    if isinstance(meta.get("fingerprint"), str):
      return meta["fingerprint"]
    names = list(meta["model"]["class_names"])
    target = abstract_params(build_unet(config.model, len(names)), config.data.image_size,
                             sharding.make_mesh(config.mesh.num_devices))
    return _fingerprint(manager, step, meta, target, None, None)
  finally:
    manager.close()
