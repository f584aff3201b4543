"""Reflect (training-modified baseline, paper Appendix C.2): its objective and its scorer.

Pairs (y0, y1): y1 a normal image, y0 = y1 corrupted inside random-walk masks
(Eqs. 14-15); rectified-flow loss ||(y1 - y0) - v(y_t, t)||^2; heatmap =
||v(y, 0)||_2 per pixel (the size of the one-step correction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fmjax.model import flow
from fmjax.methods.base import Objective, Scorer, full_times, one_pass_heatmaps, pixel_norm
from fmjax.methods.settings import OBJECTIVE_OPTIONS


def random_walk_masks(key: jax.Array, batch: int, height: int, width: int, max_regions: int,
                      max_steps: int) -> jax.Array:
  """Binary masks [B,H,W] (float32): the union of 1..max_regions 8-connected random walks.

  Each walk starts at a uniform pixel and takes 1..max_steps steps (0: H*W/16) to
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


def reflect_corrupt(key: jax.Array, y1: jax.Array, max_regions: int, max_steps: int):
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


def reflect_loss(velocity_fn, y1: jax.Array, labels: jax.Array, key: jax.Array,
                 max_regions: int, max_steps: int) -> jax.Array:
  """Rectified-flow loss from corrupted y0 (t = 0) to the normal image y1 (t = 1)."""
  k_corrupt, k_time = jax.random.split(key)
  y0, _ = reflect_corrupt(k_corrupt, y1, max_regions, max_steps)
  t = flow.sample_time(k_time, y1.shape[0])
  v = velocity_fn(flow.interpolate(y0, y1, t), t, labels).astype(jnp.float32)
  return jnp.mean(jnp.square(v - (y1 - y0)))


def reflect_heatmaps(velocity_fn, y: jax.Array, labels: jax.Array, *,
                     max_forward_batch: int = 1024) -> jax.Array:
  """||v(y, 0)||_2 per pixel: [B,H,W]."""
  def heat(yc, lc):
    return pixel_norm(velocity_fn(yc, full_times(yc.shape[0], 0.0), lc).astype(jnp.float32))

  return one_pass_heatmaps(heat, y, labels, max_forward_batch)


def _check(options) -> list[str]:
  if options["max_regions"] < 1 or options["max_steps"] < 0:
    return ["train.reflect.max_regions must be >= 1 and train.reflect.max_steps >= 0"]
  return []


OBJECTIVE = Objective(
    name="reflect", title="Reflect",
    description="rectified flow from images corrupted inside random-walk masks back to the "
                "normal image",
    loss=reflect_loss,
    check=_check,
    options=OBJECTIVE_OPTIONS["reflect"])  # max_regions, max_steps

SCORER = Scorer(
    name="reflect", title="Reflect", objective="reflect",
    description="size of the one-step correction ||v(y, 0)|| of a model trained to repair "
                "corrupted images",
    heatmaps=lambda velocity, y, labels, ids, ctx: reflect_heatmaps(
        velocity, y, labels, max_forward_batch=ctx.max_forward_batch),
    summary=lambda s: "one forward pass", forwards=lambda s: 1)
