"""The affine probability path and the conditional flow-matching (CFM) loss.

x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) (t = 0) and x1 a data image (t = 1);
the target velocity is x1 - x0. Images are NHWC float arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def interpolate(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
  """x_t for x0, x1 [N,H,W,C] and t [N] (or a scalar)."""
  t = jnp.asarray(t, jnp.float32).reshape(jnp.shape(t) + (1,) * (x1.ndim - jnp.ndim(t)))
  return (1.0 - t) * x0 + t * x1


def target_velocity(x0: jax.Array, x1: jax.Array) -> jax.Array:
  """d x_t / dt = x1 - x0 along the affine path."""
  return x1 - x0


def sample_time(key: jax.Array, n: int) -> jax.Array:
  """t ~ U(0, 1), shape [n], float32."""
  return jax.random.uniform(key, (n,), jnp.float32)


def cfm_loss(velocity_fn, x1: jax.Array, key: jax.Array) -> jax.Array:
  """Mean squared CFM residual over a batch x1 [N,H,W,C] (scalar, float32).

  `velocity_fn(x_t [N,H,W,C], t [N]) -> v [N,H,W,C]`. Noise and times are drawn
  for the whole (global) batch from `key`, so the loss does not depend on how the
  batch is sharded.
  """
  noise_key, time_key = jax.random.split(key)
  x0 = jax.random.normal(noise_key, x1.shape, jnp.float32)
  t = sample_time(time_key, x1.shape[0])
  v = velocity_fn(interpolate(x0, x1, t), t).astype(jnp.float32)
  return jnp.mean(jnp.square(v - target_velocity(x0, x1)))
