"""AUPIMO (fmjax.report.pimo) against an oracle written here from the paper's definition."""

import math

import numpy as np
import pytest

from fmjax.report.pimo import aupimo


def oracle(heatmaps, masks, labels, lower, upper):
  """Per anomalous image: the shared FPR and TPR at every distinct normal-pixel score by plain
  loops, then TPR against log FPR sampled densely over [log lower, log upper] (np.interp between
  the thresholds' points) and averaged."""
  normal = [h for h, l in zip(heatmaps, labels) if l == 0]
  thresholds = sorted({float(v) for h in normal for v in np.ravel(h)}, reverse=True)
  fpr = [np.mean([np.mean(np.asarray(h) >= t) for h in normal]) for t in thresholds]
  grid = np.linspace(math.log(lower), math.log(upper), 200001)
  out = []
  for h, m, l in zip(heatmaps, masks, labels):
    if l != 1:
      continue
    defect = np.asarray(h)[np.asarray(m) > 0]
    tpr = [np.mean(defect >= t) for t in thresholds]
    values = np.interp(grid, np.log(fpr), tpr)
    out.append(np.trapezoid(values, grid) / (grid[-1] - grid[0]))
  return out


def _data(seed, n_normal, n_anomalous, size, shift):
  rng = np.random.default_rng(seed)
  heat = rng.normal(size=(n_normal + n_anomalous, size, size))
  masks = np.zeros(heat.shape, np.uint8)
  for i in range(n_normal, n_normal + n_anomalous):
    y, x = rng.integers(0, size - 6, 2)
    masks[i, y:y + 6, x:x + 6] = 1
    heat[i][masks[i] > 0] += shift * (1 + i % 3)
  labels = np.r_[np.zeros(n_normal, int), np.ones(n_anomalous, int)]
  return heat, masks, labels


@pytest.mark.parametrize("bounds", [(1e-3, 1e-1), (1e-2, 0.5)])
def test_aupimo_equals_the_oracle(bounds):
  heat, masks, labels = _data(0, 6, 4, 24, 1.5)
  got = aupimo(heat, masks, labels, bounds)
  want = oracle(heat, masks, labels, *bounds)
  np.testing.assert_allclose([v for v in got["per_image"] if not np.isnan(v)], want, atol=1e-6)
  assert got["aupimo"] == pytest.approx(np.mean(want), abs=1e-6)
  assert all(np.isnan(got["per_image"][:6]))  # normal images have none


@pytest.mark.parametrize("seed", [3, 4])
def test_aupimo_equals_the_oracle_with_ties(seed):
  heat, masks, labels = _data(seed, 6, 4, 24, 1.0)
  heat = np.round(heat, 1)  # many pixels share a score, across normal and defect pixels
  got = aupimo(heat, masks, labels, (1e-2, 0.3))
  want = oracle(heat, masks, labels, 1e-2, 0.3)
  np.testing.assert_allclose([v for v in got["per_image"] if not np.isnan(v)], want, atol=1e-6)


def test_default_bounds_on_enough_pixels_and_images_of_several_sizes():
  heat, masks, labels = _data(1, 8, 3, 120, 2.0)  # 115,200 normal pixels: FPR 1e-5 resolvable
  ragged_heat = np.empty(len(heat), object)
  ragged_masks = np.empty(len(heat), object)
  for i in range(len(heat)):
    cut = 120 - 8 * (i % 2)  # two sizes
    ragged_heat[i], ragged_masks[i] = heat[i][:cut], masks[i][:cut]
  got = aupimo(ragged_heat, ragged_masks, labels)
  want = oracle(list(ragged_heat), list(ragged_masks), labels, 1e-5, 1e-4)
  assert got["aupimo"] == pytest.approx(np.mean(want), abs=1e-6)


def test_closed_forms_and_undefined_cases():
  heat, masks, labels = _data(2, 4, 2, 16, 0.0)
  high = heat.copy()
  high[masks > 0] = 100.0  # every defect pixel above every normal pixel
  assert aupimo(high, masks, labels, (1e-2, 1e-1))["aupimo"] == 1.0
  low = heat.copy()
  low[masks > 0] = -100.0  # below every normal pixel
  assert aupimo(low, masks, labels, (1e-2, 1e-1))["aupimo"] == 0.0
  with pytest.warns(UserWarning, match="too few pixels to reach a false-positive rate of 1e-05"):
    assert np.isnan(aupimo(heat, masks, labels)["aupimo"])  # 1,024 normal pixels < 1e5
  with pytest.warns(UserWarning, match="needs normal and anomalous"):
    assert np.isnan(aupimo(heat[:4], masks[:4], labels[:4], (1e-2, 1e-1))["aupimo"])
  with pytest.raises(ValueError, match="fpr_bounds"):
    aupimo(heat, masks, labels, (1e-1, 1e-2))
