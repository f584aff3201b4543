"""AUPIMO: the area under the per-image overlap curves (Bertoldo et al. 2024), from its definition.

For a pixel threshold t:
  shared FPR(t) = mean over the normal test images of the fraction of their pixels scored >= t;
  TPR_i(t)      = the fraction of anomalous image i's defect pixels scored >= t.
Each anomalous image's PIMO curve is TPR_i against log FPR. AUPIMO_i integrates it over
log FPR from `fpr_bounds[0]` to `fpr_bounds[1]` (default 1e-5 to 1e-4) and divides by the
width of that interval, so it lies in [0, 1]; the data set's AUPIMO is their mean.

The curve is evaluated at every distinct normal-pixel score (the only places the shared FPR
changes), joined by straight lines in (log FPR, TPR), and cut at the bounds by linear
interpolation. The lower bound needs at least 1 / fpr_bounds[0] normal pixels (weighted per
image) above the threshold resolution: when the smallest FPR the normal images can give is above
it, the result is NaN with a warning.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def aupimo(heatmaps, masks, labels, fpr_bounds: tuple[float, float] = (1e-5, 1e-4)) -> dict:
  """{"aupimo": mean over anomalous images, "per_image": [AUPIMO_i] (NaN for normal images and
  for anomalous ones without defect pixels)} of heatmaps and {0,1} masks [N,H,W] (or object
  arrays of [H_i,W_i]) with image labels [N]."""
  lower, upper = float(fpr_bounds[0]), float(fpr_bounds[1])
  if not 0 < lower < upper <= 1:
    raise ValueError(f"fpr_bounds must satisfy 0 < lower < upper <= 1, got {fpr_bounds}")
  labels = np.asarray(labels)
  normal = np.flatnonzero(labels == 0)
  per_image = np.full(len(labels), np.nan)
  if normal.size == 0 or not (labels == 1).any():
    warnings.warn("AUPIMO needs normal and anomalous test images; it is undefined here.",
                  stacklevel=2)
    return {"aupimo": float("nan"), "per_image": per_image.tolist()}
  # The shared FPR at every distinct normal-pixel score t (pixels >= t), thresholds descending.
  values = np.concatenate([np.asarray(heatmaps[i], np.float64).ravel() for i in normal])
  weights = np.concatenate([np.full(np.asarray(heatmaps[i]).size,
                                    1.0 / (normal.size * np.asarray(heatmaps[i]).size))
                            for i in normal])
  order = np.argsort(-values, kind="stable")
  values, weights = values[order], weights[order]
  run_ends = np.r_[np.flatnonzero(np.diff(values) != 0), values.size - 1]
  thresholds = values[run_ends]  # descending
  fpr = np.minimum(np.cumsum(weights)[run_ends], 1.0)  # ascending
  if fpr[0] > lower:
    warnings.warn(f"AUPIMO is undefined (NaN) where the normal test images have too few pixels "
                  f"to reach a false-positive rate of {lower:g} (about {1 / lower:.0f} are "
                  "needed); evaluate.aupimo_fpr sets the range.", stacklevel=2)
    return {"aupimo": float("nan"), "per_image": per_image.tolist()}
  # Only the thresholds around [lower, upper] matter: one point outside each bound.
  first = max(int(np.searchsorted(fpr, lower, side="right")) - 1, 0)
  last = min(int(np.searchsorted(fpr, upper, side="left")), fpr.size - 1)
  thresholds, log_fpr = thresholds[first:last + 1], np.log(fpr[first:last + 1])
  lo, hi = math.log(lower), math.log(upper)
  for i in np.flatnonzero(labels == 1):
    heat = np.asarray(heatmaps[i], np.float64).ravel()
    defect = np.sort(heat[np.asarray(masks[i]).ravel() > 0])
    if defect.size == 0:
      continue
    tpr = (defect.size - np.searchsorted(defect, thresholds, side="left")) / defect.size
    per_image[i] = _area(log_fpr, tpr, lo, hi) / (hi - lo)
  anomalous = per_image[labels == 1]
  anomalous = anomalous[np.isfinite(anomalous)]
  return {"aupimo": float(anomalous.mean()) if anomalous.size else float("nan"),
          "per_image": per_image.tolist()}


def _area(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
  """The integral over [lo, hi] of the polyline through (x, y) (x ascending, repeated x values
  allowed: vertical steps add nothing), the ends cut by linear interpolation."""
  total = 0.0
  for k in range(x.size - 1):
    x0, x1, y0, y1 = x[k], x[k + 1], y[k], y[k + 1]
    a, b = max(x0, lo), min(x1, hi)
    if b <= a or x1 == x0:
      continue
    ya = y0 + (y1 - y0) * (a - x0) / (x1 - x0)
    yb = y0 + (y1 - y0) * (b - x0) / (x1 - x0)
    total += 0.5 * (ya + yb) * (b - a)
  return total

