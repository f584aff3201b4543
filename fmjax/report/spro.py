"""AU-sPRO: the area under the saturated per-region overlap curve (Bergmann et al. 2022, MVTec
LOCO AD), from its definition.

Each ground-truth region r (one mask file of MVTec LOCO AD, whatever its shape) has a
saturation area s_r: a fraction of its area (relative; the official evaluation rounds it down)
or a number of pixels (absolute; at most the region's area). At a pixel threshold t,
  sPRO(t) = mean over all regions of min(|region pixels scored >= t| / s_r, 1)
  FPR(t)  = the fraction of the defect-free pixels (every pixel of the images that lies in no
            region) scored >= t.
The curve joins the points of every distinct score, from (0, 0), with straight lines; AU-sPRO is
its area up to `fpr_limit` (cut there by linear interpolation) divided by `fpr_limit`, in
[0, 1]. The official evaluation samples thresholds and refines them until neighbouring points
are close; this is the curve it converges to.

One sort of all pixels gives the whole curve: a region's j-th highest pixel raises its overlap
term by min(j / s_r, 1) - min((j - 1) / s_r, 1), so sPRO(t) is a cumulative sum of those steps.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from fmjax.report.metrics import descending_order

FPR_LIMIT = 0.05  # MVTec LOCO AD's headline integration limit


@dataclasses.dataclass(frozen=True)
class SaturatedRegion:
  """One region at the size of its image's heatmap."""
  mask: np.ndarray  # bool [H,W]
  saturation: float  # pixels (> 0, at most the region's area)


def saturation_area(area: int, saturation: float, relative: bool, scale: float = 1.0) -> float:
  """The pixels at which a region of `area` pixels saturates: relative, floor(saturation *
  area) (at least 1); absolute, `saturation` file pixels times `scale` (the heatmap's pixels
  per file pixel), at most `area`."""
  if relative:
    return float(max(1, math.floor(saturation * area)))
  return float(min(saturation * scale, area))


def au_spro(heatmaps, regions, fpr_limit: float = FPR_LIMIT) -> float:
  """AU-sPRO up to `fpr_limit` of heatmaps [N,H,W] (or N of any sizes) whose images have the
  `regions` [[SaturatedRegion, ...] per image] (none for normal images); NaN with a warning
  when there is no region or no defect-free pixel."""
  if not 0 < fpr_limit <= 1:
    raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
  values, fpr_steps, spro_steps = [np.zeros(0, np.float32)], [np.zeros(0)], [np.zeros(0)]
  all_regions = [r for rs in regions for r in rs]
  num_regions = len(all_regions)
  for heat, rs in zip(heatmaps, regions, strict=True):
    heat = np.asarray(heat, np.float32)
    covered = np.zeros(heat.shape, bool)
    for r in rs:
      covered |= r.mask
      pixels = np.sort(heat[r.mask])[::-1]  # the region's pixels, highest first
      rank = np.arange(1, pixels.size + 1, dtype=np.float64)
      step = np.minimum(rank / r.saturation, 1) - np.minimum((rank - 1) / r.saturation, 1)
      values.append(pixels)
      fpr_steps.append(np.zeros(pixels.size))
      spro_steps.append(step / num_regions)
    free = heat[~covered]
    values.append(free)
    fpr_steps.append(np.ones(free.size))
    spro_steps.append(np.zeros(free.size))
  fpr_w, spro_w = np.concatenate(fpr_steps), np.concatenate(spro_steps)
  num_free = fpr_w.sum()
  if num_regions == 0 or num_free == 0:
    warnings.warn("AU-sPRO needs ground-truth regions and defect-free pixels; it is undefined "
                  "here.", stacklevel=2)
    return float("nan")
  scores = np.concatenate(values).astype(np.float32)
  order = descending_order(scores)
  s = scores[order]
  run_ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
  fpr = np.r_[0.0, np.cumsum(fpr_w[order])[run_ends] / num_free]
  spro = np.r_[0.0, np.minimum(np.cumsum(spro_w[order])[run_ends], 1.0)]
  return _area_to(fpr, spro, fpr_limit) / fpr_limit


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
  """The trapezoid area under the polyline (x ascending from 0) over [0, limit], the last
  segment cut at `limit` by linear interpolation."""
  inside = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
  xs, ys = x[:inside], y[:inside]
  if inside < x.size and xs[-1] < limit:
    x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
    xs = np.r_[xs, limit]
    ys = np.r_[ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0)]
  return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
