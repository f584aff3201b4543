"""Predicted masks and regions (fmjax/decide/regions.py) against hand-made heatmaps."""

import numpy as np

from fmjax.decide import regions
from fmjax.decide.normalize import ScoreScale


def _heatmap():
  """A 6x8 map: a 2x3 block (scores 5..10), a diagonal pair (touching at a corner: one region
  under 8-connectivity) and a lone pixel at the edge; the rest 0.1."""
  h = np.full((6, 8), 0.1)
  h[1:3, 1:4] = [[5, 6, 7], [8, 9, 10]]
  h[4, 5], h[5, 6] = 3.0, 4.0
  h[0, 7] = 2.0
  return h


def test_the_mask_is_the_pixels_above_the_threshold():
  h = _heatmap()
  mask = regions.predicted_mask(h, 1.0)
  assert mask.dtype == bool and mask.shape == (6, 8) and int(mask.sum()) == 6 + 2 + 1
  assert not regions.predicted_mask(h, 2.0)[0, 7]  # at the threshold: not above it
  assert not regions.predicted_mask(h, float("nan")).any()  # no threshold: nothing predicted


def test_regions_are_8_connected_with_area_bbox_peak_and_mean():
  h = _heatmap()
  found = regions.regions(h, regions.predicted_mask(h, 1.0))
  assert found == [
      {"id": 1, "area": 1, "bbox": [7, 0, 8, 1], "peak": 2.0, "mean": 2.0},  # first by row
      {"id": 2, "area": 6, "bbox": [1, 1, 4, 3], "peak": 10.0, "mean": 7.5},
      {"id": 3, "area": 2, "bbox": [5, 4, 7, 6], "peak": 4.0, "mean": 3.5}]
  assert regions.regions(h, np.zeros((6, 8), bool)) == []


def test_a_calibrated_scale_adds_the_normalised_peak():
  h = _heatmap()
  scale = ScoreScale(low=0.0, threshold=4.0)  # 0.5 at 4: 10 -> 1 (clipped), 2 -> 0.25
  found = regions.regions(h, regions.predicted_mask(h, 1.0), scale)
  assert [r["normalised_peak"] for r in found] == [0.25, 1.0, 0.5]
