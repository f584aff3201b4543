"""The seven anomaly-detection metrics: image/pixel AUROC, AP, F1-max and pixel AUPRO@0.3.

AUROC and AP follow scikit-learn (AP is the step-wise average precision);
F1-max is the largest F1 over the precision-recall curve; AUPRO follows the
official MVTec AD evaluation (8-connected ground-truth regions, FPR over all
normal pixels of the test set, trapezoid up to FPR 0.3 with interpolation at
0.3, divided by 0.3). All curves come from one sort of the scores, which is
much faster than scikit-learn's curves on tens of millions of pixels; the tests
check them against scikit-learn.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

METRIC_KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
               "pixel_f1_max", "pixel_aupro")


def _threshold_counts(scores: np.ndarray, weights_pos: np.ndarray, weights_neg: np.ndarray):
  """Cumulative positive/negative weight at each distinct threshold, scores descending."""
  order = np.argsort(scores, kind="stable")[::-1]
  s = scores[order]
  last_of_run = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
  tp = np.cumsum(weights_pos[order], dtype=np.float64)[last_of_run]
  fp = np.cumsum(weights_neg[order], dtype=np.float64)[last_of_run]
  return tp, fp, s[last_of_run]


def binary_curves(scores, labels) -> dict:
  """AUROC, AP (step-wise) and F1-max (+ its threshold) of scores for binary labels."""
  scores = np.asarray(scores, np.float64).ravel()
  labels = np.asarray(labels).ravel().astype(bool)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    warnings.warn(f"AUROC/AP/F1 are undefined with {n_pos} anomalous and {n_neg} normal "
                  "samples; reporting NaN.")
    return {"auroc": float("nan"), "ap": float("nan"), "f1_max": float("nan"),
            "f1_threshold": float("nan")}
  tp, fp, thresholds = _threshold_counts(scores, labels.astype(np.float64), (~labels).astype(np.float64))
  tpr = np.r_[0.0, tp / n_pos]
  fpr = np.r_[0.0, fp / n_neg]
  auroc = float(np.trapezoid(tpr, fpr))
  precision = tp / (tp + fp)
  recall = tp / n_pos
  ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
  f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
  best = int(np.argmax(f1))
  return {"auroc": auroc, "ap": ap, "f1_max": float(f1[best]), "f1_threshold": float(thresholds[best])}


def aupro(anomaly_maps, masks, fpr_limit: float = 0.3) -> float:
  """Area under the per-region-overlap curve up to `fpr_limit`, normalised to [0, 1]."""
  maps = np.asarray(anomaly_maps, np.float64)
  masks = np.asarray(masks).astype(bool)
  structure = np.ones((3, 3), int)
  region_weight = np.zeros(masks.shape, np.float64)
  sizes = []
  comp = np.zeros(masks.shape, np.int64)
  offset = 0
  for i in range(masks.shape[0]):
    labeled, n = ndimage.label(masks[i], structure=structure)
    comp[i] = np.where(labeled > 0, labeled + offset, 0)
    sizes.extend(np.bincount(labeled.ravel())[1:].tolist())
    offset += n
  num_regions = len(sizes)
  num_ok = int((~masks).sum())
  if num_regions == 0 or num_ok == 0:
    warnings.warn("AUPRO is undefined without both anomalous regions and normal pixels; NaN.")
    return float("nan")
  sizes = np.asarray([1.0] + sizes)  # index 0 (background) unused
  region_weight = np.where(comp > 0, 1.0 / (num_regions * sizes[comp]), 0.0)
  pro, fpr, _ = _threshold_counts(maps.ravel(), region_weight.ravel(),
                                  (~masks).ravel().astype(np.float64) / num_ok)
  fpr = np.r_[0.0, np.minimum(fpr, 1.0)]
  pro = np.r_[0.0, np.minimum(pro, 1.0)]
  inside = fpr <= fpr_limit
  x, y = fpr[inside], pro[inside]
  if x[-1] < fpr_limit and inside.sum() < fpr.size:
    j = int(inside.sum())  # first point beyond the limit
    frac = (fpr_limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
    x = np.r_[x, fpr_limit]
    y = np.r_[y, pro[j - 1] + frac * (pro[j] - pro[j - 1])]
  return float(np.trapezoid(y, x) / fpr_limit)


def compute_metrics(image_scores, image_labels, anomaly_maps=None, masks=None) -> dict:
  """The seven metrics (fractions) and the F1-optimal thresholds.

  image_scores [N], image_labels [N] (1 = anomalous), anomaly_maps [N,H,W] and
  masks [N,H,W]; without masks only the image-level keys are returned.
  """
  image = binary_curves(image_scores, image_labels)
  out = {"image_auroc": image["auroc"], "image_ap": image["ap"], "image_f1_max": image["f1_max"],
         "image_f1_threshold": image["f1_threshold"]}
  if masks is None:
    return out
  maps = np.asarray(anomaly_maps)
  masks = np.asarray(masks)
  if maps.shape != masks.shape:
    raise ValueError(f"anomaly_maps {maps.shape} and masks {masks.shape} differ in shape.")
  pixel = binary_curves(maps, masks)
  out.update({"pixel_auroc": pixel["auroc"], "pixel_ap": pixel["ap"], "pixel_f1_max": pixel["f1_max"],
              "pixel_f1_threshold": pixel["f1_threshold"], "pixel_aupro": aupro(maps, masks)})
  return out
