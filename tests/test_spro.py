"""AU-sPRO (fmjax.report.spro) against an oracle written here from the definition of MVTec LOCO
AD's evaluation: thresholds at every distinct score, a pixel positive when strictly above the
threshold, each region's saturated overlap counted directly."""

import math

import numpy as np
import pytest

from fmjax.report.spro import SaturatedRegion, au_spro, saturation_area


def oracle(heatmaps, regions, limit):
  """Per threshold (above the maximum, then every distinct score): FPR over the pixels in no
  region and the mean over regions of min(overlap / saturation, 1), with pixels > threshold;
  the polyline's area up to `limit` (cut by interpolation) over `limit`."""
  values = sorted({float(v) for h in heatmaps for v in np.ravel(h)}, reverse=True)
  thresholds = [values[0] + 1.0] + values[1:] + [values[-1] - 1.0]
  free = [np.ones(np.shape(h), bool) for h in heatmaps]
  for f, rs in zip(free, regions):
    for r in rs:
      f &= ~r.mask
  num_free = sum(f.sum() for f in free)
  all_regions = [(i, r) for i, rs in enumerate(regions) for r in rs]
  points = []
  for t in thresholds:
    fp = sum(int(((np.asarray(h) > t) & f).sum()) for h, f in zip(heatmaps, free))
    spro = np.mean([min(int((np.asarray(heatmaps[i])[r.mask] > t).sum()) / r.saturation, 1.0)
                    for i, r in all_regions])
    points.append((fp / num_free, spro))
  area = 0.0
  for (x0, y0), (x1, y1) in zip(points, points[1:]):
    if x0 >= limit:
      break
    if x1 > limit:
      y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
      x1 = limit
    area += (x1 - x0) * (y0 + y1) / 2
  return area / limit


def _case(seed, n=5, size=12, decimals=1):
  """Random maps rounded to `decimals` (many ties), regions on the anomalous half, saturations
  relative and absolute."""
  rng = np.random.default_rng(seed)
  heatmaps = np.round(rng.normal(size=(n, size, size)), decimals).astype(np.float32)
  regions = [[] for _ in range(n)]
  for i in range(n // 2, n):
    for k in range(1 + i % 2):
      mask = np.zeros((size, size), bool)
      y, x = rng.integers(0, size - 4, 2)
      mask[y:y + 2 + k, x:x + 4] = True
      heatmaps[i][mask] += 0.8
      relative = bool(k % 2)
      saturation = saturation_area(int(mask.sum()), 0.5 if relative else 3.0, relative)
      regions[i].append(SaturatedRegion(mask, saturation))
  return heatmaps, regions


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_au_spro_matches_the_oracle_with_ties(seed, limit):
  heatmaps, regions = _case(seed, decimals=1 if seed % 2 else 2)
  assert au_spro(heatmaps, regions, limit) == pytest.approx(oracle(heatmaps, regions, limit),
                                                            abs=1e-6)


def test_closed_forms():
  # Every region pixel above every defect-free pixel: each region saturates before any false
  # positive, so sPRO is 1 over the whole range.
  heat = np.zeros((2, 8, 8), np.float32)
  heat[0] = np.linspace(0, 0.5, 64).reshape(8, 8)
  mask = np.zeros((8, 8), bool)
  mask[:2, :4] = True
  heat[1][mask] = 1.0
  regions = [[], [SaturatedRegion(mask, 8.0)]]
  assert au_spro(heat, regions, 0.05) == pytest.approx(1.0)
  # Half of the region above everything, half at the bottom: with saturation at the full area
  # the curve sits at 0.5 until the false positives are almost all counted.
  heat[1][mask] = 0.0
  heat[1][0, :4] = 1.0
  assert au_spro(heat, [[], [SaturatedRegion(mask, 8.0)]], 0.05) == pytest.approx(0.5)
  # ... and saturating at half the area, the detected half is enough.
  assert au_spro(heat, [[], [SaturatedRegion(mask, 4.0)]], 0.05) == pytest.approx(1.0)


def test_saturation_areas():
  assert saturation_area(10, 0.25, True) == 2.0  # floor(2.5)
  assert saturation_area(3, 0.1, True) == 1.0  # at least one pixel
  assert saturation_area(100, 40, False, scale=0.25) == 10.0  # file pixels at a quarter
  assert saturation_area(5, 40, False) == 5.0  # at most the region's area


def test_undefined_without_regions():
  with pytest.warns(UserWarning, match="needs ground-truth regions"):
    assert math.isnan(au_spro(np.zeros((2, 4, 4)), [[], []]))
