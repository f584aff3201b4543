"""StableAdamW (AdamW + per-tensor update-RMS clipping), optionally with AMSGrad.

Built from optax pieces: `optax.scale_by_amsgrad` (or `scale_by_adam`) and
`optax.add_decayed_weights`, wrapped by `clip_by_update_rms`, which divides each
tensor's update (weight decay included) by max(1, RMS(g^2 / v_hat) / threshold)
as in StableAdamW (Wortsman et al., 2023), then `scale_by_learning_rate`.

Reductions over the parameters are written so XLA runs few of them: the paper model has 777
parameter tensors of 39 shapes, and one reduction per tensor (optax.global_norm, a per-tensor
mean) was, on an H200, about 3,000 of a batch-32 step's 8,642 kernels, most under 3 us each
(benchmarks/README.md, "Where an H200 train step's time goes"). `global_norm` is one reduction
over all tensors; `per_tensor_means` one per distinct shape.
"""

from __future__ import annotations

import collections
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


def global_norm(tree) -> jax.Array:
  """The L2 norm of all of `tree`'s leaves together (float32 scalar): one sum of squares over
  their concatenation, which XLA can fuse into that one reduction (optax.global_norm reduces
  each leaf separately)."""
  leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)]
  if not leaves:
    return jnp.float32(0.0)
  return jnp.sqrt(jnp.sum(jnp.square(jnp.concatenate(leaves))))


def per_tensor_means(fn: Callable[..., jax.Array], *trees) -> list[jax.Array]:
  """[mean of fn(a, b, ...) over each leaf's elements] for the leaves (a, b, ...) of `trees`
  (same structure), in leaf order: float32 scalars. The leaves of one shape are stacked and
  reduced together, so there is one reduction per distinct shape, not per leaf."""
  structure = jax.tree.structure(trees[0])
  if any(jax.tree.structure(t) != structure for t in trees[1:]):
    raise ValueError("per_tensor_means needs trees of one structure.")
  columns = [jax.tree.leaves(t) for t in trees]
  by_shape = collections.defaultdict(list)
  for i, leaf in enumerate(columns[0]):
    by_shape[leaf.shape].append(i)
  means = [None] * len(columns[0])
  for indices in by_shape.values():
    stacked = fn(*[jnp.stack([c[i] for i in indices]) for c in columns])  # [k, *shape]
    row_means = jnp.mean(stacked.reshape(len(indices), -1).astype(jnp.float32), axis=1)
    for j, i in enumerate(indices):
      means[i] = row_means[j]
  return means


class ClipByUpdateRmsState(NamedTuple):
  inner: optax.OptState


def _second_moment(inner_state, b2: float):
  """v_hat, the bias-corrected second moment the Adam update divides by."""
  for s in jax.tree.leaves(inner_state, is_leaf=lambda x: hasattr(x, "nu")):
    if isinstance(s, optax.ScaleByAmsgradState):
      return s.nu_max
    if isinstance(s, optax.ScaleByAdamState):
      return optax.tree.bias_correction(s.nu, b2, s.count)
  raise ValueError("clip_by_update_rms needs scale_by_adam or scale_by_amsgrad inside.")


def clip_by_update_rms(inner: optax.GradientTransformation, b2: float, eps: float,
                       threshold: float = 1.0) -> optax.GradientTransformation:
  """Scales `inner`'s update of each tensor by 1 / max(1, RMS(g^2 / max(v_hat, eps^2)) / threshold)."""

  def init_fn(params):
    return ClipByUpdateRmsState(inner.init(params))

  def update_fn(grads, state, params=None):
    updates, inner_state = inner.update(grads, state.inner, params)
    v_hat = _second_moment(inner_state, b2)
    mean_squares = per_tensor_means(
        lambda g, v: jnp.square(g.astype(jnp.float32)) / jnp.maximum(v, eps * eps), grads, v_hat)
    leaves, treedef = jax.tree.flatten(updates)
    scaled = [u / jnp.maximum(1.0, jnp.sqrt(ms) / threshold)
              for u, ms in zip(leaves, mean_squares, strict=True)]
    return jax.tree.unflatten(treedef, scaled), ClipByUpdateRmsState(inner_state)

  return optax.GradientTransformation(init_fn, update_fn)


def stable_adamw(learning_rate, b1: float = 0.9, b2: float = 0.99, eps: float = 1e-6,
                 weight_decay: float = 1e-4, amsgrad: bool = True,
                 update_rms_clip: float | None = 1.0,
                 grad_clip_norm: float | None = None) -> optax.GradientTransformation:
  """The paper's optimiser: StableAdamW with AMSGrad, lr 1e-4, wd 1e-4, betas (0.9, 0.99), eps 1e-6."""
  moments = (optax.scale_by_amsgrad(b1, b2, eps) if amsgrad else optax.scale_by_adam(b1, b2, eps))
  direction = optax.chain(moments, optax.add_decayed_weights(weight_decay))
  if update_rms_clip:
    direction = clip_by_update_rms(direction, b2, eps, update_rms_clip)
  parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  return optax.chain(*parts, direction, optax.scale_by_learning_rate(learning_rate))


LR_RULES = ("none", "linear", "sqrt")


def scaled_learning_rate(base_lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
  """The learning rate for `batch_size` under a batch-scaling rule, from `base_lr` at
  `base_batch_size`: none (base_lr), linear (x B/B0) or sqrt (x sqrt(B/B0), Adam's usual rule)."""
  ratio = batch_size / base_batch_size
  if rule == "none":
    return float(base_lr)
  if rule == "linear":
    return float(base_lr * ratio)
  if rule == "sqrt":
    return float(base_lr * math.sqrt(ratio))
  raise ValueError(f"learning-rate rule must be one of {LR_RULES}, got {rule!r}")


def warmup_factor(step, warmup_steps: int):
  """min(1, (step + 1) / warmup_steps): the fraction of the learning rate used by update
  `step` (0-based; float32); 1 when warmup_steps <= 0.

  The train step multiplies the optimiser's update by it. That equals scheduling the
  learning rate, because `scale_by_learning_rate` is the optimiser's last, linear stage
  (weight decay included), and it adds no optimiser state, so checkpoints with and
  without warm-up have the same layout.
  """
  if warmup_steps <= 0:
    return jnp.float32(1.0)
  return jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1.0) / warmup_steps)


def build_optimizer(train_config) -> optax.GradientTransformation:
  """The optimiser described by `config.train`."""
  return stable_adamw(
      learning_rate=train_config.learning_rate, b1=train_config.b1, b2=train_config.b2,
      eps=train_config.eps, weight_decay=train_config.weight_decay,
      amsgrad=train_config.amsgrad, update_rms_clip=train_config.update_rms_clip,
      grad_clip_norm=train_config.grad_clip_norm)
