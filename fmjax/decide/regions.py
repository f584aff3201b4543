"""Predicted defects of one heatmap: its binary mask and connected regions (numpy and scipy).

A pixel is predicted defective when its heatmap score is above the category's calibrated pixel
threshold (`Decision.pixel_threshold`, moved by evaluate.sensitivity like the image threshold).
Regions are the mask's 8-connected components, numbered from 1 in scipy.ndimage.label's
order (row-major by each region's first pixel), each described by

  area         pixels in the region
  bbox         [x0, y0, x1, y1]: columns x0..x1-1 and rows y0..y1-1 (exclusive ends)
  peak, mean   the highest and the mean heatmap score over its pixels (raw units)
  normalised_peak  the peak on the normalised pixel scale (0.5: the threshold), when calibrated
"""

from __future__ import annotations

import numpy as np

from fmjax.score import maps

EIGHT_CONNECTED = np.ones((3, 3), bool)


def predicted_mask(heatmap: np.ndarray, pixel_threshold: float) -> np.ndarray:
  """bool [H,W]: the pixels scored above `pixel_threshold` (none when it is NaN)."""
  heatmap = np.asarray(heatmap)
  if not np.isfinite(pixel_threshold):
    return np.zeros(heatmap.shape, bool)
  return heatmap > pixel_threshold


def regions(heatmap: np.ndarray, mask: np.ndarray, pixel_scale=None) -> list[dict]:
  """The 8-connected regions of `mask` [H,W] with their scores in `heatmap` [H,W] (module
  docstring); `pixel_scale` (a `normalize.ScoreScale`) adds each peak's normalised score."""
  from scipy import ndimage  # here: scoring without masks needs no scipy
  heatmap = np.asarray(heatmap, np.float64)
  labeled, count = ndimage.label(np.asarray(mask, bool), structure=EIGHT_CONNECTED)
  if count == 0:
    return []
  index = np.arange(1, count + 1)
  areas = np.bincount(labeled.ravel(), minlength=count + 1)[1:]
  peaks = ndimage.maximum(heatmap, labeled, index)
  means = ndimage.mean(heatmap, labeled, index)
  out = []
  for i, box in enumerate(ndimage.find_objects(labeled)):
    rows, cols = box
    region = {"id": i + 1, "area": int(areas[i]),
              "bbox": [int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)],
              "peak": float(peaks[i]), "mean": float(means[i])}
    if pixel_scale is not None:
      region["normalised_peak"] = float(pixel_scale(peaks[i]))
    out.append(region)
  return out


def at_file_size(heatmap: np.ndarray, height: int, width: int, pixel_threshold: float,
                 pixel_scale=None) -> tuple[np.ndarray, list[dict]]:
  """(the predicted mask bool [height,width], its `regions`) of a heatmap enlarged to its
  file's size (`maps.resize_map`): what --mode=score, fmjax.deploy and the service write."""
  enlarged = maps.resize_map(heatmap, height, width)
  mask = predicted_mask(enlarged, pixel_threshold)
  return mask, regions(enlarged, mask, pixel_scale)
