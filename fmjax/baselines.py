"""Inference-only flow-matching baselines on the same trained model (paper Appendix C.2).

Both keep vanilla CFM training and change only test-time inference; heatmaps are
per-pixel L2 reconstruction residuals and image scores use the same rule as
Flow Mismatching (max + mean of the top 1% of pixels).

  ReconFlow  y_t = (1 - t0) x0 + t0 y from K seeds x0, Euler-integrate the flow from
             t0 to 1 in `num_steps` steps -> y_hat_k; heatmap = min_k ||y - y_hat_k||_2.
  D-Flow     optimise the initial noise x0 so that the flow's endpoint Phi(x0) (Euler,
             `num_steps` steps from t = 0) matches y in MSE, with Adam for `iterations`
             steps; heatmap = ||y - Phi(x0*)||_2. Gradients go through the unrolled
             integration by autodiff (each step rematerialised), exact where the
             paper's FlowGrad approximates.

Shapes: images NHWC float32 (normalised); velocity_fn(x [N,H,W,C], t [N]) -> [N,H,W,C].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fmjax.mismatch import VelocityFn, image_score

METHODS = ("flow_mismatch", "reconflow", "dflow")


def euler_integrate(velocity_fn: VelocityFn, x: jax.Array, t_start: float, num_steps: int,
                    remat: bool = False) -> jax.Array:
  """x(1) from x(t_start) [N,H,W,C] by `num_steps` Euler steps of dx/dt = v(x, t)."""
  if num_steps < 1:
    raise ValueError(f"The number of integration steps must be >= 1, got {num_steps}.")
  dt = (1.0 - t_start) / num_steps

  def step(x, i):
    t = jnp.full((x.shape[0],), t_start + i * dt, jnp.float32)
    return x + dt * velocity_fn(x, t).astype(jnp.float32), None

  if remat:
    step = jax.checkpoint(step)
  x, _ = jax.lax.scan(step, x.astype(jnp.float32), jnp.arange(num_steps, dtype=jnp.float32))
  return x


def _residual(y: jax.Array, y_hat: jax.Array) -> jax.Array:
  """Per-pixel L2 norm over channels ||y - y_hat||_2: [...,H,W,C] -> [...,H,W]."""
  return jnp.sqrt(jnp.sum(jnp.square(y - y_hat), axis=-1))


def _per_image_chunks(fn, y: jax.Array, *per_image, chunk: int):
  """Applies fn(y_chunk, *chunks) -> heatmaps over images in chunks of `chunk` (padded)."""
  b = y.shape[0]
  chunk = max(1, min(b, chunk))
  n = -(-b // chunk)
  pad = lambda a: jnp.pad(a, [(0, n * chunk - b)] + [(0, 0)] * (a.ndim - 1))
  split = lambda a: pad(a).reshape((n, chunk) + a.shape[1:])
  heat = jax.lax.map(lambda args: fn(*args), (split(y),) + tuple(split(a) for a in per_image))
  return heat.reshape((n * chunk,) + heat.shape[2:])[:b]


def recon_flow(velocity_fn: VelocityFn, y: jax.Array, x0: jax.Array, t_init: float = 0.5,
               num_steps: int = 10, *, labels: jax.Array | None = None,
               max_forward_batch: int = 1024, top_fraction: float = 0.01):
  """ReconFlow heatmaps [B,H,W] and scores [B] for y [B,H,W,C] and seeds x0 [B,K,H,W,C]."""
  if not 0.0 <= t_init < 1.0:
    raise ValueError(f"ReconFlow needs t_init in [0, 1), got {t_init}.")
  b, k = x0.shape[:2]
  lab = jnp.zeros((b,), jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)

  def chunk_heatmaps(yc, x0c, lc):
    start = (1.0 - t_init) * x0c + t_init * yc[:, None]  # [bc,K,H,W,C]
    flat = start.reshape((-1,) + start.shape[2:])
    lab_k = jnp.repeat(lc, k)
    field = velocity_fn if labels is None else (lambda x, t: velocity_fn(x, t, lab_k))
    y_hat = euler_integrate(field, flat, t_init, num_steps).reshape(start.shape)
    return jnp.min(_residual(yc[:, None], y_hat), axis=1)

  heat = _per_image_chunks(chunk_heatmaps, y.astype(jnp.float32), x0.astype(jnp.float32), lab,
                           chunk=max_forward_batch // k)
  return heat, image_score(heat, top_fraction)


def d_flow(velocity_fn: VelocityFn, y: jax.Array, x0: jax.Array, num_steps: int = 10,
           iterations: int = 20, learning_rate: float = 0.1, *, labels: jax.Array | None = None,
           max_forward_batch: int = 1024, top_fraction: float = 0.01):
  """D-Flow heatmaps [B,H,W] and scores [B] for y [B,H,W,C] from initial noise x0 [B,H,W,C].

  Each image's x0 is optimised on its own loss (the batch loss is a sum over images).
  """
  if iterations < 0:
    raise ValueError(f"D-Flow needs iterations >= 0, got {iterations}.")
  b = y.shape[0]
  lab = jnp.zeros((b,), jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
  optimizer = optax.adam(learning_rate)

  def chunk_heatmaps(yc, x0c, lc):
    field = velocity_fn if labels is None else (lambda x, t: velocity_fn(x, t, lc))
    endpoint = lambda x: euler_integrate(field, x, 0.0, num_steps, remat=True)

    def loss(x):  # sum over images of each image's MSE: per-image gradients
      return jnp.sum(jnp.mean(jnp.square(endpoint(x) - yc), axis=(1, 2, 3)))

    def opt_step(carry, _):
      x, state = carry
      grads = jax.grad(loss)(x)
      updates, state = optimizer.update(grads, state, x)
      return (optax.apply_updates(x, updates), state), None

    (x_opt, _), _ = jax.lax.scan(opt_step, (x0c, optimizer.init(x0c)), None, length=iterations)
    return _residual(yc, endpoint(x_opt))

  heat = _per_image_chunks(chunk_heatmaps, y.astype(jnp.float32), x0.astype(jnp.float32), lab,
                           chunk=max_forward_batch)
  return heat, image_score(heat, top_fraction)
