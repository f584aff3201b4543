"""Metrics against scikit-learn and an AUPRO oracle written here as a plain threshold loop."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fmjax.metrics import aupro, binary_curves, compute_metrics


def _oracle_aupro(maps, masks, limit=0.3):
  """For every distinct threshold: mean per-region overlap and FPR over all normal pixels."""
  masks = masks.astype(bool)
  regions = []
  for i in range(len(masks)):
    lab, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
    regions += [(i, lab == r) for r in range(1, n + 1)]
  normal = ~masks
  points = [(0.0, 0.0)]
  for th in np.unique(maps)[::-1]:
    pred = maps >= th
    fpr = (pred & normal).sum() / normal.sum()
    pro = np.mean([(pred[i] & reg).sum() / reg.sum() for i, reg in regions])
    points.append((fpr, pro))
  fpr, pro = np.array(points).T
  keep = fpr <= limit
  x, y = list(fpr[keep]), list(pro[keep])
  if x[-1] < limit and (~keep).any():
    j = np.argmax(~keep)
    y.append(pro[j - 1] + (limit - fpr[j - 1]) * (pro[j] - pro[j - 1]) / (fpr[j] - fpr[j - 1]))
    x.append(limit)
  return np.trapezoid(y, x) / limit


def _maps_and_masks(rng, n, size, ties=False):
  masks = np.zeros((n, size, size), np.uint8)
  for i in range(n):
    for _ in range(rng.integers(0, 3)):
      r, c = rng.integers(0, size - 3, 2)
      masks[i, r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = 1
  maps = rng.random((n, size, size)) + 0.8 * masks
  if ties:
    maps = np.round(maps * 4) / 4
  return maps, masks


@pytest.mark.parametrize("n,size,ties", [(4, 8, False), (6, 10, True), (3, 16, False)])
def test_aupro_matches_oracle(n, size, ties):
  maps, masks = _maps_and_masks(np.random.default_rng(n * size), n, size, ties)
  assert masks.any()
  assert aupro(maps, masks) == pytest.approx(_oracle_aupro(maps, masks), abs=1e-6)


@pytest.mark.parametrize("n,ties", [(40, False), (200, True), (1000, False)])
def test_binary_curves_match_sklearn(n, ties):
  rng = np.random.default_rng(n)
  labels = rng.random(n) < 0.3
  scores = rng.normal(size=n) + labels
  if ties:
    scores = np.round(scores)
  r = binary_curves(scores, labels)
  p, rc, _ = precision_recall_curve(labels, scores)
  assert r["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
  assert r["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
  assert r["f1_max"] == pytest.approx(np.max(2 * p * rc / np.maximum(p + rc, 1e-12)), abs=1e-9)


def test_compute_metrics_keys_and_image_only():
  rng = np.random.default_rng(0)
  maps, masks = _maps_and_masks(rng, 10, 12)
  labels = masks.reshape(10, -1).max(1)
  scores = maps.reshape(10, -1).max(1)
  full = compute_metrics(scores, labels, maps, masks)
  assert {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
          "pixel_aupro"} <= set(full)
  image_only = compute_metrics(scores, labels)
  assert "pixel_auroc" not in image_only and image_only["image_auroc"] == full["image_auroc"]


def test_perfect_and_undefined_cases():
  masks = np.zeros((2, 4, 4), np.uint8)
  masks[1, 1:3, 1:3] = 1
  perfect = compute_metrics(np.array([0.0, 1.0]), np.array([0, 1]), masks * 1.0, masks)
  for k in ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro"):
    assert perfect[k] == pytest.approx(1.0), k
  with pytest.warns(UserWarning, match="undefined"):
    out = compute_metrics(np.array([0.1, 0.2]), np.array([0, 0]))
  assert np.isnan(out["image_auroc"])
