"""Metrics against scikit-learn and oracles written here as plain per-threshold loops."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fmjax.report.metrics import (METRIC_KEYS, aupro, binary_curves, compute_metrics, descending_order,
                           mean_over_categories, pixel_metrics)


def _oracle_curves(scores, labels):
  """AUROC (trapezoid), AP (sum of recall steps x precision) and F1-max by a loop over thresholds."""
  scores, labels = np.ravel(scores).astype(np.float64), np.ravel(labels).astype(bool)
  pos, neg = labels.sum(), (~labels).sum()
  roc, ap, f1s, prev_recall = [(0.0, 0.0)], 0.0, [], 0.0
  for th in np.unique(scores)[::-1]:
    pred = scores >= th
    tp, fp = (pred & labels).sum(), (pred & ~labels).sum()
    roc.append((fp / neg, tp / pos))
    precision, recall = tp / (tp + fp), tp / pos
    ap += (recall - prev_recall) * precision
    prev_recall = recall
    f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
  fpr, tpr = np.array(roc).T
  return {"auroc": np.trapezoid(tpr, fpr), "ap": ap, "f1_max": max(f1s)}


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


def _maps_and_masks(rng, n, size, ties=False, dtype=np.float64):
  masks = np.zeros((n, size, size), np.uint8)
  for i in range(n):
    for _ in range(rng.integers(0, 3)):
      r, c = rng.integers(0, size - 3, 2)
      masks[i, r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = 1
  maps = rng.random((n, size, size)) + 0.8 * masks
  if ties:
    maps = np.round(maps * 4) / 4
  return maps.astype(dtype), masks


@pytest.mark.parametrize("n,size,ties,dtype", [(4, 8, False, np.float64), (6, 10, True, np.float64),
                                               (3, 16, False, np.float32), (5, 12, True, np.float32)])
def test_pixel_metrics_match_oracles(n, size, ties, dtype):
  maps, masks = _maps_and_masks(np.random.default_rng(n * size), n, size, ties, dtype)
  assert masks.any()
  got = pixel_metrics(maps, masks)
  want = _oracle_curves(maps, masks)
  for k in ("auroc", "ap", "f1_max"):
    assert got[k] == pytest.approx(want[k], abs=1e-6), k
  assert got["aupro"] == pytest.approx(_oracle_aupro(maps, masks), abs=1e-6)
  assert aupro(maps, masks) == got["aupro"]


def test_pixel_metrics_pool_maps_of_different_sizes():
  """Maps of many sizes: every pixel pooled. Oracles: sklearn on the concatenated pixels, and
  per-region overlaps and the pooled false-positive rate computed map by map."""
  rng = np.random.default_rng(7)
  shapes = [(8, 13), (11, 6), (5, 5), (16, 9)]
  maps, masks = [], []
  for h, w in shapes:
    mask = np.zeros((h, w), np.uint8)
    r, c = rng.integers(0, h - 2), rng.integers(0, w - 2)
    mask[r:r + 2, c:c + rng.integers(1, 3)] = 1
    maps.append(rng.random((h, w)) + 0.7 * mask)
    masks.append(mask)
  values = np.concatenate([m.ravel() for m in maps])
  labels = np.concatenate([k.ravel() for k in masks])
  got = pixel_metrics(maps, masks)
  assert got["auroc"] == pytest.approx(roc_auc_score(labels, values), abs=1e-9)
  assert got["ap"] == pytest.approx(average_precision_score(labels, values), abs=1e-9)
  regions = []
  for i, k in enumerate(masks):
    lab, n = ndimage.label(k, structure=np.ones((3, 3)))
    regions += [(i, lab == r) for r in range(1, n + 1)]
  num_normal = sum(int((k == 0).sum()) for k in masks)
  points = [(0.0, 0.0)]
  for th in np.unique(values)[::-1]:
    fp = sum(int(((m >= th) & (k == 0)).sum()) for m, k in zip(maps, masks))
    pro = np.mean([((maps[i] >= th) & reg).sum() / reg.sum() for i, reg in regions])
    points.append((fp / num_normal, pro))
  fpr, pro = np.array(points).T
  inside = fpr <= 0.3
  x, y = list(fpr[inside]), list(pro[inside])
  j = int(np.argmax(~inside))
  y.append(pro[j - 1] + (0.3 - fpr[j - 1]) * (pro[j] - pro[j - 1]) / (fpr[j] - fpr[j - 1]))
  x.append(0.3)
  assert got["aupro"] == pytest.approx(np.trapezoid(y, x) / 0.3, abs=1e-9)
  # An object array (as the loader holds many sizes) gives the same.
  as_objects = np.empty(4, object)
  for i, m in enumerate(maps):
    as_objects[i] = m
  assert pixel_metrics(as_objects, masks) == got


@pytest.mark.parametrize("n,ties", [(40, False), (200, True), (1000, False)])
def test_binary_curves_match_sklearn_and_loop(n, ties):
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
  loop = _oracle_curves(scores, labels)
  for k in loop:
    assert r[k] == pytest.approx(loop[k], abs=1e-9), k
  # The F1 threshold reproduces F1-max when used as "score >= threshold".
  pred = scores >= r["f1_threshold"]
  tp = (pred & labels).sum()
  assert 2 * tp / (pred.sum() + labels.sum()) == pytest.approx(r["f1_max"], abs=1e-12)


def test_float32_key_sort_equals_argsort_with_negatives_zeros_and_ties():
  rng = np.random.default_rng(1)
  x = np.concatenate([rng.normal(size=5000), [0.0, -0.0, 0.0, np.float32(1e-38), -1e-38, 3e38, -3e38],
                      np.round(rng.normal(size=3000))]).astype(np.float32)
  order = descending_order(x)
  assert sorted(order.tolist()) == list(range(x.size))
  assert np.array_equal(x[order], np.sort(x)[::-1])
  labels = rng.random(x.size) < 0.4
  fast, slow = binary_curves(x, labels), binary_curves(x.astype(np.float64), labels)
  for k in ("auroc", "ap", "f1_max", "f1_threshold"):
    assert fast[k] == pytest.approx(slow[k], abs=1e-12), k


def test_compute_metrics_keys_and_image_only():
  rng = np.random.default_rng(0)
  maps, masks = _maps_and_masks(rng, 10, 12)
  labels = masks.reshape(10, -1).max(1)
  scores = maps.reshape(10, -1).max(1)
  full = compute_metrics(scores, labels, maps, masks)
  assert set(METRIC_KEYS) <= set(full)
  assert {"image_f1_threshold", "pixel_f1_threshold"} <= set(full)
  image_only = compute_metrics(scores, labels)
  assert not set(image_only) & {"pixel_auroc", "pixel_aupro"}
  assert image_only["image_auroc"] == full["image_auroc"]
  curves = compute_metrics(scores, labels, maps, masks, with_curves=True)
  assert curves["pixel_curves"]["tpr"][-1] == 1.0 and curves["image_curves"]["fpr"][0] == 0.0


def test_perfect_and_undefined_cases():
  masks = np.zeros((2, 4, 4), np.uint8)
  masks[1, 1:3, 1:3] = 1
  perfect = compute_metrics(np.array([0.0, 1.0]), np.array([0, 1]), masks * 1.0, masks)
  for k in METRIC_KEYS:
    assert perfect[k] == pytest.approx(1.0), k
  with pytest.warns(UserWarning, match="undefined with 0 anomalous and 2 normal"):
    all_normal = compute_metrics(np.array([0.1, 0.2]), np.array([0, 0]))
  assert np.isnan(all_normal["image_auroc"]) and np.isnan(all_normal["image_f1_max"])
  with pytest.warns(UserWarning, match="undefined with 2 anomalous and 0 normal"):
    all_anomalous = compute_metrics(np.array([0.1, 0.2]), np.array([1, 1]))
  assert np.isnan(all_anomalous["image_ap"])
  with pytest.warns(UserWarning, match="undefined"):  # masks given but no defect pixel anywhere
    empty = compute_metrics(np.array([0.1, 0.2]), np.array([0, 1]), np.ones((2, 4, 4)), np.zeros((2, 4, 4)))
  assert empty["image_auroc"] == 1.0
  assert all(np.isnan(empty[k]) for k in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro"))


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="non-finite"):
    compute_metrics(np.array([0.1, np.nan]), np.array([0, 1]))
  with pytest.raises(ValueError, match=r"anomaly map 0 \(4, 4\) and its mask \(4, 5\) must both be \[H,W\]"):
    compute_metrics(np.array([0.1, 0.2]), np.array([0, 1]), np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
  with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
    compute_metrics(np.array([0.1, 0.2]), np.array([0, 2]))
  with pytest.raises(ValueError, match="must both be \\[N\\]"):
    compute_metrics(np.array([0.1, 0.2]), np.array([0, 1, 1]))


def test_mean_over_categories_skips_undefined():
  per = {"a": {"image_auroc": 0.5, "pixel_aupro": float("nan")}, "b": {"image_auroc": 1.0, "pixel_aupro": 0.6}}
  mean = mean_over_categories(per)
  assert mean == {"image_auroc": 0.75, "pixel_aupro": 0.6}


def test_real_bottle_masks_with_synthetic_maps(shared_data):
  """Real MVTec bottle masks (8-connected regions as shipped), maps with ties and noise."""
  root = os.path.join(shared_data, "mvtec", "bottle", "ground_truth")
  paths = sorted(os.path.join(root, d, f) for d in os.listdir(root) for f in os.listdir(os.path.join(root, d)))
  masks = np.stack([np.asarray(Image.open(p).convert("L")) > 127 for p in paths[:24]]).astype(np.uint8)
  masks = masks[:, ::2, ::2]  # 64x64 keeps the per-threshold oracle quick
  masks = np.concatenate([masks, np.zeros((8,) + masks.shape[1:], np.uint8)])
  rng = np.random.default_rng(0)
  blurred = ndimage.gaussian_filter(masks.astype(np.float64), sigma=(0, 2, 2))
  maps = np.round((blurred + 0.4 * rng.random(masks.shape)) * 30) / 30  # ~50 distinct levels
  got = pixel_metrics(maps.astype(np.float32), masks)
  want = _oracle_curves(maps.astype(np.float32), masks)
  for k in ("auroc", "ap", "f1_max"):
    assert got[k] == pytest.approx(want[k], abs=1e-6), k
  assert got["aupro"] == pytest.approx(_oracle_aupro(maps.astype(np.float32), masks), abs=1e-6)
  assert 0.5 < got["aupro"] < 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 20), st.booleans()), min_size=2, max_size=60),
       st.sampled_from(["affine", "cube", "exp"]))
def test_strictly_increasing_transforms_change_nothing(pairs, transform):
  scores = np.array([p[0] for p in pairs], np.float64)
  labels = np.array([p[1] for p in pairs])
  if labels.all() or not labels.any():
    return
  f = {"affine": lambda s: 3.0 * s - 7.0, "cube": lambda s: s ** 3, "exp": lambda s: np.exp(s / 4.0)}[transform]
  a, b = binary_curves(scores, labels), binary_curves(f(scores), labels)
  for k in ("auroc", "ap", "f1_max"):
    assert a[k] == pytest.approx(b[k], abs=1e-12), k
  assert f(np.float64(a["f1_threshold"])) == pytest.approx(b["f1_threshold"], rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["affine", "square"]))
def test_pixel_metrics_invariant_to_increasing_transform_and_permutation(seed, transform):
  rng = np.random.default_rng(seed)
  maps, masks = _maps_and_masks(rng, 4, 8, ties=True)
  if not masks.any():
    return
  f = {"affine": lambda m: 2.0 * m + 1.0, "square": lambda m: m ** 2}[transform]  # maps >= 0
  perm = rng.permutation(len(maps))
  a, b = pixel_metrics(maps, masks), pixel_metrics(f(maps)[perm], masks[perm])
  for k in ("auroc", "ap", "f1_max", "aupro"):
    assert a[k] == pytest.approx(b[k], abs=1e-12), k
