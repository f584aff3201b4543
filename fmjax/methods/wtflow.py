"""WT-Flow (training-modified baseline, paper Appendix C.2 and the WT-Flow paper).

Per-image standardisation WT(x) = (x - mean) / sqrt(var + eps), reverse flow from
WT(x) (t = 0) to noise (t = 1): loss ||(x1 - WT(x)) - v(x_t, t)||^2 (Eqs. 22-23);
heatmap = Gaussian energy 0.5 sum_c x_hat(1)^2 after Euler-integrating WT(y) in T
steps (Eqs. 24-25).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fmjax.model import flow
from fmjax.methods.base import Objective, Scorer, one_pass_heatmaps


def wt_standardize(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """WT(x): each image [H,W,C] standardised by its own mean and variance (Eq. 21)."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  var = jnp.var(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps)


def wtflow_loss(velocity_fn, x: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
  """Reverse rectified flow: WT(x) at t = 0 to Gaussian noise at t = 1 (Eqs. 22-23)."""
  k_noise, k_time = jax.random.split(key)
  x0 = wt_standardize(x)
  x1 = jax.random.normal(k_noise, x.shape, jnp.float32)
  t = flow.sample_time(k_time, x.shape[0])
  v = velocity_fn(flow.interpolate(x0, x1, t), t, labels).astype(jnp.float32)
  return jnp.mean(jnp.square(v - (x1 - x0)))


def wtflow_heatmaps(velocity_fn, y: jax.Array, labels: jax.Array, num_steps: int, *,
                    max_forward_batch: int = 1024) -> jax.Array:
  """Gaussian energy 0.5 sum_c x_hat^2 of WT(y) transported to t = 1: [B,H,W]."""
  def heat(yc, lc):
    x_hat = flow.euler_integrate(velocity_fn, wt_standardize(yc), lc, 0.0, num_steps)
    return 0.5 * jnp.sum(jnp.square(x_hat), axis=-1)

  return one_pass_heatmaps(heat, y, labels, max_forward_batch)


OBJECTIVE = Objective(
    name="wtflow", title="WT-Flow",
    description="reverse rectified flow from per-image standardised images to Gaussian noise",
    loss=wtflow_loss)

SCORER = Scorer(
    name="wtflow", title="WT-Flow", objective="wtflow",
    description="Gaussian energy of the standardised test image transported to noise in T Euler "
                "steps",
    heatmaps=lambda velocity, y, labels, ids, ctx: wtflow_heatmaps(
        velocity, y, labels, ctx.num_times, max_forward_batch=ctx.max_forward_batch),
    uses=("num_times",), summary=lambda s: f"{s['num_times']} Euler steps to t = 1",
    forwards=lambda s: s["num_times"])
