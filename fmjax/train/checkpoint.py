"""Orbax checkpoints in <workdir>/checkpoints: the train state plus JSON metadata.

Saved per step: `state` (params, optimiser state, EMA params) and `meta` (the
model config it was built with, class names, normalisation statistics). A
restore checks `meta` against the current config first and stops with a clear
message on a mismatch instead of failing deep inside Orbax. Evaluation restores
the parameters (and EMA parameters) only, never the optimiser state.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from fmjax.core import files, fingerprint
from fmjax.core.errors import CheckpointMismatchError, WorkdirError


class _QuietReadOnly(logging.Filter):
  """Drops Orbax's "Given directory is read only" warning: fmjax opens checkpoints read-only on
  purpose for every evaluation."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_QuietReadOnly())


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(files.absolute(workdir), "checkpoints")


def make_manager(workdir: str, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  """CheckpointManager keeping the last `keep` steps (synchronous saves)."""
  if read_only:  # save_interval_steps / max_to_keep do not apply (Orbax warns if set)
    options = ocp.CheckpointManagerOptions(create=False, read_only=True, save_interval_steps=0,
                                           max_to_keep=None, enable_async_checkpointing=False)
  else:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
  try:
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("state", "meta"))
  except ImportError as e:  # gs:// without google-cloud-storage (Orbax asks the bucket's layout)
    raise WorkdirError(f"Checkpoints in {checkpoint_dir(workdir)} need a library that is not "
                       f"installed ({e}). For gs:// install: pip install 'fmjax[gcs]'.") from e


def _host_array(a) -> np.ndarray:
  """A (replicated) parameter as a numpy array on this host."""
  if isinstance(a, jax.Array) and not a.is_fully_addressable:
    return np.asarray(a.addressable_data(0))  # replicated: every host holds all of it
  return np.asarray(jax.device_get(a))


def params_fingerprint(params, ema_params, norm: dict | None) -> str:
  """A checkpoint's identity (`fmjax.core.fingerprint`): its parameters, its EMA parameters
  ({} or None when not kept) and its normalisation statistics, in tree order."""
  leaves = [_host_array(a) for a in jax.tree.leaves(params) + jax.tree.leaves(ema_params or {})]
  if norm is not None:
    leaves += [np.asarray(norm["mean"], np.float64), np.asarray(norm["std"], np.float64)]
  return fingerprint.of_arrays(leaves)


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  """The train state at `step` with `meta` and the state's `params_fingerprint` in it."""
  meta = {**meta, "fingerprint": params_fingerprint(state.params, state.ema_params,
                                                    meta.get("norm"))}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def check_meta(saved: dict, expected: dict, workdir: str) -> None:
  """Raises CheckpointMismatchError naming every key whose value differs."""
  diffs = [f"{k}: checkpoint has {saved.get(k)!r}, config has {v!r}"
           for k, v in expected.items() if saved.get(k) != v]
  if diffs:
    raise CheckpointMismatchError(
        f"The checkpoint in {checkpoint_dir(workdir)} was written for a different model or "
        "dataset:\n  " + "\n  ".join(diffs) +
        "\nUse a new --workdir, or restore the config the checkpoint was trained with.")


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  """The state at `step`, laid out like `abstract_state` (shapes, dtypes, shardings)."""
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]


def restore_params(manager: ocp.CheckpointManager, step: int, abstract_params, with_ema: bool):
  """(params, ema_params or None) at `step`, laid out like `abstract_params`; nothing else is read."""
  target = {"params": abstract_params}
  if with_ema:
    target["ema_params"] = abstract_params
  restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype),
                              target)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True)))["state"]
  return out["params"], out.get("ema_params")
