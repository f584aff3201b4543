"""What happens to a heatmap after the model (numpy and scipy, no JAX): Gaussian smoothing
(`evaluate.smoothing_sigma`), the image score, and resizing a map to its file's size.

Smoothing is scipy.ndimage.gaussian_filter with its defaults (mode "reflect", truncate 4.0),
sigma in pixels of the heatmap; it runs before the image score. The image score is Flow
Mismatching's: the map's maximum plus the mean of its top 1% of pixels.
"""

from __future__ import annotations

import math

import numpy as np


def sigma_pixels(eval_config, height: int, width: int) -> float:
  """The configured sigma in pixels for a map of `height` x `width`: evaluate.smoothing_sigma
  (pixels), or evaluate.smoothing_sigma_fraction times the map's shorter side."""
  fraction = float(eval_config.get("smoothing_sigma_fraction", 0.0))
  if fraction:
    return fraction * min(height, width)
  return float(eval_config.get("smoothing_sigma", 0.0))


def smooth(heatmap: np.ndarray, sigma: float) -> np.ndarray:
  """A heatmap [H,W] filtered by a Gaussian of `sigma` pixels (0: unchanged), float32."""
  heatmap = np.asarray(heatmap, np.float32)
  if not sigma:
    return heatmap
  import scipy.ndimage  # here: an ONNX deployment that never smooths on the host needs no scipy
  return scipy.ndimage.gaussian_filter(heatmap.astype(np.float64), sigma).astype(np.float32)


def image_score(heatmap: np.ndarray, top_fraction: float = 0.01) -> np.float32:
  """max + mean of the top ceil(top_fraction * H * W) pixels of a heatmap [H,W]."""
  flat = np.asarray(heatmap, np.float32).ravel()
  k = max(1, math.ceil(top_fraction * flat.size))
  top = np.partition(flat, flat.size - k)[flat.size - k:]
  return np.float32(top.max() + top.astype(np.float64).mean())


def finish(heatmap: np.ndarray, eval_config) -> tuple[np.ndarray, np.float32]:
  """(the smoothed heatmap [H,W], its image score) of a blended, cropped heatmap."""
  h, w = heatmap.shape
  smoothed = smooth(heatmap, sigma_pixels(eval_config, h, w))
  return smoothed, image_score(smoothed)


def resize_map(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
  """A heatmap [h,w] resized to [height,width] float32 with the images' filter (Pillow's
  bilinear, antialiased when shrinking; pixel centres at half-integers, so a linear ramp stays
  the same ramp in the interior). Unchanged when the size is already right."""
  heatmap = np.asarray(heatmap, np.float32)
  if heatmap.shape == (height, width):
    return heatmap
  from PIL import Image
  resized = Image.fromarray(heatmap, mode="F").resize((width, height), Image.BILINEAR,
                                                      reducing_gap=None)
  return np.asarray(resized, np.float32)
