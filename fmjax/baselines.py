"""The paper's flow-matching baselines on the same U-Net backbone (Appendix C.2).

Inference-only (vanilla CFM training, the same model as Flow Mismatching):
  ReconFlow  y_t = (1 - t0) x0 + t0 y from K seeds x0, Euler-integrate the flow from
             t0 to 1 in `num_steps` steps -> y_hat_k; heatmap = min_k ||y - y_hat_k||_2.
  D-Flow     optimise the initial noise x0 so that the flow's endpoint Phi(x0) (Euler,
             `num_steps` steps from t = 0) matches y in MSE, with Adam for `iterations`
             steps; heatmap = ||y - Phi(x0*)||_2. Gradients go through the unrolled
             integration by autodiff (each step rematerialised), exact where the
             paper's FlowGrad approximates.

Training-modified (each its own objective, `train.objective`, and scorer):
  Reflect    pairs (y0, y1): y1 a normal image, y0 = y1 corrupted inside random-walk
             masks (Eqs. 14-15); rectified-flow loss ||(y1 - y0) - v(y_t, t)||^2;
             heatmap = ||v(y, 0)||_2 (the one-step correction).
  TCCM       contraction field: loss ||v(x, t) + x||_2 (per image, not squared);
             heatmap = ||v(y, 1) + y||_2.
  WT-Flow    per-image standardisation WT(x) = (x - mean) / sqrt(var + eps), reverse flow
             from WT(x) (t = 0) to noise (t = 1): loss ||(x1 - WT(x)) - v(x_t, t)||^2;
             heatmap = Gaussian energy 0.5 sum_c x_hat(1)^2 after Euler-integrating WT(y).

Heatmaps are per pixel ([B,H,W]); image scores use Flow Mismatching's rule (max +
mean of the top 1% of pixels). Images are NHWC float32 (normalised);
velocity_fn(x [N,H,W,C], t [N]) -> [N,H,W,C].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fmjax import flow
from fmjax.mismatch import VelocityFn, image_score, map_image_chunks

# Scoring method -> the training objective its model needs.
METHOD_OBJECTIVE = {"flow_mismatch": "cfm", "reconflow": "cfm", "dflow": "cfm",
                    "reflect": "reflect", "tccm": "tccm", "wtflow": "wtflow"}
METHODS = tuple(METHOD_OBJECTIVE)
OBJECTIVES = ("cfm", "reflect", "tccm", "wtflow")


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


def _with_labels(velocity_fn, labels_given: bool, labels: jax.Array):
  """v(x, t): `velocity_fn` with per-sample `labels` bound when the caller gave labels."""
  return (lambda x, t: velocity_fn(x, t, labels)) if labels_given else velocity_fn


def _image_labels(labels: jax.Array | None, batch: int) -> jax.Array:
  return jnp.zeros((batch,), jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)


def recon_flow(velocity_fn: VelocityFn, y: jax.Array, x0: jax.Array, t_init: float = 0.5,
               num_steps: int = 10, *, labels: jax.Array | None = None,
               max_forward_batch: int = 1024, top_fraction: float = 0.01):
  """ReconFlow heatmaps [B,H,W] and scores [B] for y [B,H,W,C] and seeds x0 [B,K,H,W,C]."""
  if not 0.0 <= t_init < 1.0:
    raise ValueError(f"ReconFlow needs t_init in [0, 1), got {t_init}.")
  b, k = x0.shape[:2]

  def chunk_heatmaps(yc, x0c, lc):
    start = (1.0 - t_init) * x0c + t_init * yc[:, None]  # [bc,K,H,W,C]
    flat = start.reshape((-1,) + start.shape[2:])
    field = _with_labels(velocity_fn, labels is not None, jnp.repeat(lc, k))
    y_hat = euler_integrate(field, flat, t_init, num_steps).reshape(start.shape)
    return jnp.min(_residual(yc[:, None], y_hat), axis=1)

  heat = map_image_chunks(chunk_heatmaps, y.astype(jnp.float32), x0.astype(jnp.float32),
                          _image_labels(labels, b), chunk=max_forward_batch // k)
  return heat, image_score(heat, top_fraction)


def d_flow(velocity_fn: VelocityFn, y: jax.Array, x0: jax.Array, num_steps: int = 10,
           iterations: int = 20, learning_rate: float = 0.1, *, labels: jax.Array | None = None,
           max_forward_batch: int = 1024, top_fraction: float = 0.01):
  """D-Flow heatmaps [B,H,W] and scores [B] for y [B,H,W,C] from initial noise x0 [B,H,W,C].

  Each image's x0 is optimised on its own loss (the batch loss is a sum over images).
  """
  if iterations < 0:
    raise ValueError(f"D-Flow needs iterations >= 0, got {iterations}.")
  optimizer = optax.adam(learning_rate)

  def chunk_heatmaps(yc, x0c, lc):
    field = _with_labels(velocity_fn, labels is not None, lc)
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

  heat = map_image_chunks(chunk_heatmaps, y.astype(jnp.float32), x0.astype(jnp.float32),
                          _image_labels(labels, y.shape[0]), chunk=max_forward_batch)
  return heat, image_score(heat, top_fraction)


# --------------------------------------------------------------------------------------
# Training-modified baselines: objectives and scorers.


def random_walk_masks(key: jax.Array, batch: int, height: int, width: int, max_regions: int = 3,
                      max_steps: int = 0) -> jax.Array:
  """Binary masks [B,H,W] (float32): the union of 1..max_regions 8-connected random walks.

  Each walk starts at a uniform pixel and takes 1..max_steps steps (default H*W/16) to
  one of its 8 neighbours with equal probability, reflecting at the image border;
  the visited pixels are masked. Vectorised: no loop over steps.
  """
  max_steps = max_steps or max(1, height * width // 16)
  k_count, k_start, k_len, k_move = jax.random.split(key, 4)
  shape = (batch, max_regions)
  count = jax.random.randint(k_count, (batch, 1), 1, max_regions + 1)
  start = jnp.stack([jax.random.randint(k_start, shape, 0, height),
                     jax.random.randint(jax.random.fold_in(k_start, 1), shape, 0, width)], -1)
  length = jax.random.randint(k_len, shape, 1, max_steps + 1)
  directions = jnp.array([[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]])
  moves = directions[jax.random.randint(k_move, shape + (max_steps,), 0, 8)]  # [B,R,S,2]
  path = start[:, :, None] + jnp.cumsum(moves, axis=2)
  path = jnp.concatenate([start[:, :, None], path], axis=2)  # [B,R,S+1,2], unbounded

  def reflect(p, size):  # fold the unbounded walk into [0, size - 1]
    period = max(2 * (size - 1), 1)
    p = jnp.mod(p, period)
    return jnp.where(p > size - 1, period - p, p)

  rows, cols = reflect(path[..., 0], height), reflect(path[..., 1], width)
  steps = jnp.arange(max_steps + 1)
  region_on = jnp.arange(max_regions)[None, :] < count  # [B,R]: the first `count` regions
  visited = (steps[None, None] <= length[..., None]) & region_on[..., None]  # [B,R,S+1]
  flat = (rows * width + cols).reshape(batch, -1)
  masks = jax.vmap(lambda idx, on: jnp.zeros(height * width, jnp.float32).at[idx].max(
      on.astype(jnp.float32)))(flat, visited.reshape(batch, -1))
  return masks.reshape(batch, height, width)


def reflect_corrupt(key: jax.Array, y1: jax.Array, max_regions: int = 3, max_steps: int = 0):
  """(y0, masks): y1 [B,H,W,C] corrupted inside random-walk masks, Eqs. 14-15.

  y0 = (sqrt(1 - a) y1 + sqrt(a) r) * m + y1 * (1 - m), r = sqrt(b) q + sqrt(1 - b) p with
  a, b ~ U[0, 1] per image, q ~ N(0, 1) per image and channel, p ~ N(0, I) per pixel.
  """
  b, h, w, c = y1.shape
  k_mask, k_a, k_b, k_q, k_p = jax.random.split(key, 5)
  m = random_walk_masks(k_mask, b, h, w, max_regions, max_steps)[..., None]
  alpha = jax.random.uniform(k_a, (b, 1, 1, 1))
  beta = jax.random.uniform(k_b, (b, 1, 1, 1))
  r = jnp.sqrt(beta) * jax.random.normal(k_q, (b, 1, 1, c)) + jnp.sqrt(1 - beta) * jax.random.normal(
      k_p, y1.shape)
  y0 = (jnp.sqrt(1 - alpha) * y1 + jnp.sqrt(alpha) * r) * m + y1 * (1 - m)
  return y0, m[..., 0]


def reflect_loss(velocity_fn, y1: jax.Array, key: jax.Array, max_regions: int = 3,
                 max_steps: int = 0) -> jax.Array:
  """Rectified-flow loss from corrupted y0 (t = 0) to the normal image y1 (t = 1)."""
  k_corrupt, k_time = jax.random.split(key)
  y0, _ = reflect_corrupt(k_corrupt, y1, max_regions, max_steps)
  t = flow.sample_time(k_time, y1.shape[0])
  v = velocity_fn(flow.interpolate(y0, y1, t), t).astype(jnp.float32)
  return jnp.mean(jnp.square(v - (y1 - y0)))


def tccm_loss(velocity_fn, x: jax.Array, key: jax.Array) -> jax.Array:
  """Mean over images of ||v(x, t) + x||_2 (the whole image's L2 norm), t ~ U[0, 1]."""
  t = flow.sample_time(key, x.shape[0])
  v = velocity_fn(x, t).astype(jnp.float32)
  return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(v + x), axis=(1, 2, 3)) + 1e-12))


def wt_standardize(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """WT(x): each image [H,W,C] standardised by its own mean and variance (Eq. 21)."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  var = jnp.var(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps)


def wtflow_loss(velocity_fn, x: jax.Array, key: jax.Array) -> jax.Array:
  """Reverse rectified flow: WT(x) at t = 0 to Gaussian noise at t = 1 (Eqs. 22-23)."""
  k_noise, k_time = jax.random.split(key)
  x0 = wt_standardize(x)
  x1 = jax.random.normal(k_noise, x.shape, jnp.float32)
  t = flow.sample_time(k_time, x.shape[0])
  v = velocity_fn(flow.interpolate(x0, x1, t), t).astype(jnp.float32)
  return jnp.mean(jnp.square(v - (x1 - x0)))


def objective_loss(objective: str, velocity_fn, x1: jax.Array, key: jax.Array, **options):
  """The training loss of `objective` (cfm, reflect, tccm, wtflow) on a normal batch x1."""
  if objective == "cfm":
    return flow.cfm_loss(velocity_fn, x1, key)
  if objective == "reflect":
    return reflect_loss(velocity_fn, x1, key, options.get("reflect_max_regions", 3),
                        options.get("reflect_max_steps", 0))
  if objective == "tccm":
    return tccm_loss(velocity_fn, x1, key)
  if objective == "wtflow":
    return wtflow_loss(velocity_fn, x1, key)
  raise ValueError(f"Unknown training objective {objective!r}: use one of {OBJECTIVES}.")


def _one_pass_heatmaps(heat_fn, velocity_fn: VelocityFn, y: jax.Array, labels, max_forward_batch,
                       top_fraction):
  """heat_fn(field, y_chunk) -> [c,H,W] over chunks of at most max_forward_batch images."""
  def chunk_heatmaps(yc, lc):
    return heat_fn(_with_labels(velocity_fn, labels is not None, lc), yc)

  heat = map_image_chunks(chunk_heatmaps, y.astype(jnp.float32), _image_labels(labels, y.shape[0]),
                          chunk=max_forward_batch)
  return heat, image_score(heat, top_fraction)


def reflect_heatmaps(velocity_fn: VelocityFn, y: jax.Array, *, labels: jax.Array | None = None,
                     max_forward_batch: int = 1024, top_fraction: float = 0.01):
  """Reflect: ||v(y, 0)||_2 per pixel (the size of the one-step correction)."""
  def heat(field, yc):
    return _residual(field(yc, jnp.zeros((yc.shape[0],), jnp.float32)).astype(jnp.float32), 0.0)

  return _one_pass_heatmaps(heat, velocity_fn, y, labels, max_forward_batch, top_fraction)


def tccm_heatmaps(velocity_fn: VelocityFn, y: jax.Array, t_fixed: float = 1.0, *,
                  labels: jax.Array | None = None, max_forward_batch: int = 1024,
                  top_fraction: float = 0.01):
  """TCCM: ||v(y, t_fixed) + y||_2 per pixel (the contraction residual, Eq. 20)."""
  def heat(field, yc):
    v = field(yc, jnp.full((yc.shape[0],), t_fixed, jnp.float32)).astype(jnp.float32)
    return _residual(-yc, v)

  return _one_pass_heatmaps(heat, velocity_fn, y, labels, max_forward_batch, top_fraction)


def wtflow_heatmaps(velocity_fn: VelocityFn, y: jax.Array, num_steps: int = 10, *,
                    labels: jax.Array | None = None, max_forward_batch: int = 1024,
                    top_fraction: float = 0.01):
  """WT-Flow: Gaussian energy 0.5 sum_c x_hat^2 of WT(y) transported to t = 1 (Eqs. 24-25)."""
  def heat(field, yc):
    x_hat = euler_integrate(field, wt_standardize(yc), 0.0, num_steps)
    return 0.5 * jnp.sum(jnp.square(x_hat), axis=-1)

  return _one_pass_heatmaps(heat, velocity_fn, y, labels, max_forward_batch, top_fraction)
