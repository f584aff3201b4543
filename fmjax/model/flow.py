"""The affine probability path, the conditional flow-matching (CFM) loss, Euler integration.

x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) (t = 0) and x1 a data image (t = 1);
the target velocity is x1 - x0. Images are NHWC float arrays; velocity fields are
`velocity(x [N,H,W,C], t [N], labels [N]) -> [N,H,W,C]`.
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


def cfm_loss(velocity_fn, x1: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
  """Mean squared CFM residual over a batch x1 [N,H,W,C] with labels [N] (scalar, float32).

  Noise and times are drawn for the whole (global) batch from `key`, so the loss
  does not depend on how the batch is sharded.
  """
  noise_key, time_key = jax.random.split(key)
  x0 = jax.random.normal(noise_key, x1.shape, jnp.float32)
  t = sample_time(time_key, x1.shape[0])
  v = velocity_fn(interpolate(x0, x1, t), t, labels).astype(jnp.float32)
  return jnp.mean(jnp.square(v - target_velocity(x0, x1)))


def euler_integrate(velocity_fn, x: jax.Array, labels: jax.Array, t_start: float, num_steps: int,
                    remat: bool = False) -> jax.Array:
  """x(1) from x(t_start) [N,H,W,C] by `num_steps` Euler steps of dx/dt = v(x, t, labels)."""
  if num_steps < 1:
    raise ValueError(f"The number of integration steps must be >= 1, got {num_steps}.")
  dt = (1.0 - t_start) / num_steps

  def step(x, i):
    t = jnp.full((x.shape[0],), t_start + i * dt, jnp.float32)
    return x + dt * velocity_fn(x, t, labels).astype(jnp.float32), None

  if remat:
    step = jax.checkpoint(step)
  x, _ = jax.lax.scan(step, x.astype(jnp.float32), jnp.arange(num_steps, dtype=jnp.float32))
  return x
