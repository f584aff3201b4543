"""What training and evaluation share about a workdir, below both of them.

The workdir checks, the identity a checkpoint must match (derived from the whole
`config.model`, so a new architecture field can never escape the check), class
labels of a class set, and restoring the parameters (and EMA parameters) for
evaluation without the optimiser state.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from fmjax import checkpoint, sharding
from fmjax.data import NormStats
from fmjax.errors import MissingCheckpointError, WorkdirError
from fmjax.models.unet import build_unet

# config.model fields that set how the model computes, not what its parameters are.
COMPUTE_ONLY_MODEL_KEYS = ("dtype", "attention_impl", "dropout")


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir`; refuses a path that is a file."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir {workdir!r} is a file, not a directory; choose a directory.")
  os.makedirs(workdir, exist_ok=True)


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
  """What the rest of the train state holds: EMA parameters, AMSGrad statistics."""
  return {"ema": config.train.ema_decay > 0, "amsgrad": bool(config.train.amsgrad)}


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
  shapes = jax.eval_shape(lambda k: model.init(
      k, jnp.zeros((1, image_size, image_size, 3)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
  )["params"], jax.random.key(0))
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), shapes)


def load_params_for_eval(config, workdir: str, class_names=None, use_ema: bool = True,
                         step: int | None = None):
  """(params, step, NormStats, class names) of the checkpoint at `step` (default: the latest).

  The checkpoint must match the config's model and, when given, `class_names`;
  without them the checkpoint's own class names are used (scoring new images).
  The EMA parameters are used when `use_ema` and the checkpoint has them.
  """
  manager = checkpoint.make_manager(workdir, read_only=True)
  try:
    saved = manager.all_steps()
    if step is None:
      step = manager.latest_step()
      if step is None:
        raise MissingCheckpointError(f"No checkpoint in {checkpoint.checkpoint_dir(workdir)}: "
                                     "train first (--mode=train or train_and_evaluate).")
    elif step not in saved:
      raise MissingCheckpointError(f"No checkpoint for step {step} in "
                                   f"{checkpoint.checkpoint_dir(workdir)}; saved steps: "
                                   f"{sorted(saved)}.")
    meta = checkpoint.read_meta(manager, step)
    names = list(class_names) if class_names is not None else list(meta["model"]["class_names"])
    checkpoint.check_meta(meta["model"], model_meta(config, names), workdir)
    model = build_unet(config.model, len(names))
    target = abstract_params(model, config.data.image_size,
                             sharding.make_mesh(config.mesh.num_devices))
    with_ema = bool(use_ema and meta.get("state", {}).get("ema", False))
    params, ema = checkpoint.restore_params(manager, step, target, with_ema)
  finally:
    manager.close()
  return (ema if with_ema else params), step, NormStats.from_dict(meta["norm"]), names
