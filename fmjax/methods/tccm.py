"""TCCM (training-modified baseline, paper Appendix C.2): contraction field v = -x.

Loss ||v(x, t) + x||_2 per image (the whole image's L2 norm, not squared), t ~ U[0, 1];
heatmap = ||v(y, t_fixed) + y||_2 per pixel (Eq. 20), t_fixed = 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fmjax.model import flow
from fmjax.methods.base import Objective, Scorer, full_times, one_pass_heatmaps, pixel_norm


def tccm_loss(velocity_fn, x: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
  """Mean over images of ||v(x, t) + x||_2 (the whole image's L2 norm), t ~ U[0, 1]."""
  t = flow.sample_time(key, x.shape[0])
  v = velocity_fn(x, t, labels).astype(jnp.float32)
  return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(v + x), axis=(1, 2, 3)) + 1e-12))


def tccm_heatmaps(velocity_fn, y: jax.Array, labels: jax.Array, t_fixed: float = 1.0, *,
                  max_forward_batch: int = 1024) -> jax.Array:
  """||v(y, t_fixed) + y||_2 per pixel (the contraction residual): [B,H,W]."""
  residual = lambda yc, lc: velocity_fn(yc, full_times(yc.shape[0], t_fixed), lc).astype(
      jnp.float32) + yc
  return one_pass_heatmaps(lambda yc, lc: pixel_norm(residual(yc, lc)), y, labels, max_forward_batch)


SCORER = Scorer(
    name="tccm", title="TCCM", objective="tccm",
    description="contraction residual ||v(y, 1) + y|| of a model trained to contract normal images",
    heatmaps=lambda velocity, y, labels, ids, ctx: tccm_heatmaps(
        velocity, y, labels, max_forward_batch=ctx.max_forward_batch),
    summary=lambda s: "one forward pass", forwards=lambda s: 1)

OBJECTIVE = Objective(
    name="tccm", title="TCCM",
    description="time-conditioned contraction: v(x, t) = -x on normal images",
    loss=tccm_loss)
