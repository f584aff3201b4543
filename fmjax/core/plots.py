"""Figures with matplotlib, headless: shared pieces of the report's and the studies' pictures.

Figures are `matplotlib.figure.Figure` objects made without pyplot, so nothing here selects a
backend or keeps global state (PNG files are written by the Agg canvas); a notebook can draw
the same figures inline. Sizes are fixed (inches at `DPI`), so a PNG's pixel size is known.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from fmjax.core import files, ragged

DPI = 100
CMAP = "inferno"  # perceptually uniform, dark (low) to bright yellow (high)
OVERLAY_ALPHA = 0.8  # the opacity of the colour where the heatmap reaches the top of its scale
# Colour-blind-safe palette (Okabe-Ito), one colour per series.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


def figure(width: float, height: float) -> Figure:
  """A blank figure of width x height inches with constrained layout (no clipped labels)."""
  return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: str) -> None:
  """Writes `fig` as a PNG of exactly figsize * DPI pixels (a local path or a bucket's)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=DPI, format="png", facecolor="white")
  files.write_bytes(path, buffer.getvalue())


def pixel_size(fig: Figure) -> tuple[int, int]:
  """(width, height) in pixels of the PNG `save` writes."""
  w, h = fig.get_size_inches()
  return int(round(w * DPI)), int(round(h * DPI))


def heat_scale(heatmaps: np.ndarray) -> Normalize:
  """One colour scale for heatmaps [...]: from the median pixel (the background level, drawn
  transparent) to the 99.9th percentile (full colour). Logarithmic when those are positive
  and more than two decades apart (squared mismatches are heavy-tailed: on a linear scale a
  few extreme pixels would leave every other heatmap blank)."""
  values = ragged.pixels(heatmaps)
  values = values[np.isfinite(values)]
  if values.size == 0:
    return Normalize(0.0, 1.0, clip=True)
  vmin, vmax = float(np.median(values)), float(np.quantile(values, 0.999))
  if vmax <= vmin:
    vmax = vmin + max(abs(vmin) * 1e-6, 1e-12)
  if vmin > 0 and vmax / vmin > 100:
    return LogNorm(vmin, vmax, clip=True)
  return Normalize(vmin, vmax, clip=True)


def heat_scales(keys: np.ndarray, heatmaps: np.ndarray) -> dict:
  """{key: heat_scale of the heatmaps [M,...] whose keys [M] equal it}: one scale per category."""
  keys = np.asarray(keys)
  return {k: heat_scale(heatmaps[keys == k]) for k in np.unique(keys).tolist()}


def describe_scale(norm: Normalize) -> str:
  """The colour scale in words, for titles."""
  kind = "log colour scale" if isinstance(norm, LogNorm) else "colour scale"
  return (f"{kind} from {norm.vmin:.3g} (median pixel, transparent) to {norm.vmax:.3g} "
          f"(99.9th percentile)")


def heat_level(heatmap: np.ndarray, norm: Normalize) -> np.ndarray:
  """float64 [H,W] in [0, 1]: where the heatmap [H,W] lies on the colour scale `norm` (0 at
  norm.vmin, 1 at norm.vmax; NaN and masked values count as the top)."""
  level = np.ma.filled(norm(np.asarray(heatmap, np.float64)), 1.0).astype(np.float64)
  return np.clip(np.nan_to_num(level, nan=1.0), 0.0, 1.0)


def overlay(image: np.ndarray, heatmap: np.ndarray, norm: Normalize,
            alpha: float = OVERLAY_ALPHA) -> np.ndarray:
  """uint8 [H,W,3]: the heatmap [H,W] in CMAP under `norm`, blended over the uint8 image [H,W,3].

  The colour's opacity grows with the heatmap from 0 at norm.vmin to `alpha` at norm.vmax, so
  normal regions show the image as it is and anomalous ones the colour of their score.
  """
  level = heat_level(heatmap, norm)
  colour = colormaps[CMAP](level)[..., :3]
  weight = (alpha * level)[..., None]
  out = (1 - weight) * np.asarray(image, np.float64) / 255.0 + weight * colour
  return np.round(out * 255).astype(np.uint8)


def show_image(ax, image: np.ndarray, mask=None, contour_colour: str = "white") -> None:
  """An image without ticks; the ground-truth mask [H,W] as a contour line (Figure 4's style)."""
  ax.imshow(image, interpolation="nearest" if image.shape[0] < 128 else "antialiased")
  if mask is not None and np.any(mask):
    ax.contour(np.asarray(mask, np.float64), levels=[0.5], colors=contour_colour, linewidths=1.0)
  ax.set_xticks([])
  ax.set_yticks([])
  for spine in ax.spines.values():
    spine.set_visible(False)


def colour_bar(fig: Figure, axes, norm: Normalize, label: str) -> None:
  """A colour bar of CMAP under `norm` beside `axes`."""
  bar = fig.colorbar(ScalarMappable(norm, CMAP), ax=axes, shrink=0.9,
                     fraction=0.05, pad=0.02)
  bar.set_label(label, fontsize=8)
  bar.ax.tick_params(labelsize=7)


def legend(ax, **kwargs) -> None:
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8, framealpha=0.9, **kwargs)
