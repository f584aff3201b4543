"""Gaussian smoothing of heatmaps (`evaluate.smoothing_sigma`), before the image score.

The filter is scipy.ndimage.gaussian_filter's with its defaults (mode "reflect", truncate
4.0): a separable kernel of radius r = int(4 sigma + 0.5) with weights exp(-x^2 / (2 sigma^2))
normalised to sum 1, applied along rows then columns of a map padded by half-sample
reflection (d c b a | a b c d | d c b a). sigma is in pixels of the scored map.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TRUNCATE = 4.0


def kernel_1d(sigma: float) -> np.ndarray:
  """The normalised 1-D Gaussian weights [2r + 1], r = int(TRUNCATE sigma + 0.5)."""
  radius = int(TRUNCATE * float(sigma) + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / float(sigma)) ** 2)
  return (w / w.sum()).astype(np.float32)


def _reflect_indices(n: int, radius: int) -> np.ndarray:
  """Source indices of a length-n axis padded by `radius` with half-sample reflection,
  repeated for radii beyond n (scipy's "reflect")."""
  i = np.arange(-radius, n + radius)
  period = 2 * n
  i = np.mod(i, period)
  return np.where(i >= n, period - 1 - i, i)


def _smooth_axis(maps: jax.Array, weights: np.ndarray, axis: int) -> jax.Array:
  n, radius = maps.shape[axis], (len(weights) - 1) // 2
  padded = jnp.take(maps, jnp.asarray(_reflect_indices(n, radius)), axis=axis)
  out = jnp.zeros_like(maps)
  for k, w in enumerate(weights):  # 2r + 1 shifted, weighted copies (r is small)
    out = out + w * jax.lax.slice_in_dim(padded, k, k + n, axis=axis)
  return out


def smooth(heatmaps: jax.Array, sigma: float) -> jax.Array:
  """heatmaps [B,H,W] filtered by a Gaussian of `sigma` pixels (0: unchanged)."""
  if not sigma:
    return heatmaps
  weights = kernel_1d(sigma)
  out = _smooth_axis(heatmaps.astype(jnp.float32), weights, axis=1)
  return _smooth_axis(out, weights, axis=2)


def sigma_pixels(eval_config, height: int, width: int) -> float:
  """The configured sigma in pixels for a map of `height` x `width`: evaluate.smoothing_sigma
  (pixels), or evaluate.smoothing_sigma_fraction times the map's shorter side."""
  fraction = float(eval_config.get("smoothing_sigma_fraction", 0.0))
  if fraction:
    return fraction * min(height, width)
  return float(eval_config.get("smoothing_sigma", 0.0))
