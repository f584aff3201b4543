"""Small charts drawn with Pillow (lines, histograms, bars), so reports need no plotting library.

Every function returns a `PIL.Image.Image` (RGB); `side_by_side` / `stacked` tile them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Colour-blind-safe palette (Okabe-Ito).
PALETTE = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0),
           (86, 180, 233), (0, 0, 0))
_BG, _FG, _GRID = (255, 255, 255), (30, 30, 30), (225, 225, 225)
_MARGIN = (62, 34, 18, 46)  # left, top, right, bottom (pixels)


def font(size: int = 13):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1: bitmap font, one size
    return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  if hi <= lo:
    return [lo]
  raw = (hi - lo) / count
  step = 10 ** math.floor(math.log10(raw))
  step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
  first = math.ceil(lo / step - 1e-9) * step
  return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_label(v: float) -> str:
  return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2g}"


class _Axes:
  """Maps data coordinates into a plotting rectangle and draws the frame, grid and labels."""

  def __init__(self, size, xlim, ylim, title, xlabel, ylabel, xlog=False, xticks=None):
    self.image = Image.new("RGB", size, _BG)
    self.draw = ImageDraw.Draw(self.image)
    w, h = size
    left, top, right, bottom = _MARGIN
    self.box = (left, top, w - right, h - bottom)
    self.xlim, self.ylim, self.xlog = xlim, ylim, xlog
    f = font(12)
    self.draw.text((w / 2, 6), title, fill=_FG, font=font(14), anchor="mt")
    self.draw.text(((left + w - right) / 2, h - 6), xlabel, fill=_FG, font=f, anchor="mb")
    label = Image.new("RGB", (h, 16), _BG)
    ImageDraw.Draw(label).text((h / 2 - (top - bottom) / 2, 8), ylabel, fill=_FG, font=f, anchor="mm")
    self.image.paste(label.rotate(90, expand=True), (2, 0))
    x0, y0, x1, y1 = self.box
    if xticks is not None:  # (position, label) pairs: categories, no vertical grid
      for v, text in xticks:
        self.draw.text((self.px(v, ylim[0])[0], y1 + 4), text, fill=_FG, font=f, anchor="mt")
    else:
      if xlog:
        lo, hi = math.log10(xlim[0]), math.log10(xlim[1])
        values = [10 ** e for e in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
      else:
        values = _nice_ticks(*xlim)
      for v in values:
        px = self.px(v, ylim[0])[0]
        self.draw.line([(px, y0), (px, y1)], fill=_GRID)
        self.draw.text((px, y1 + 4), _tick_label(v), fill=_FG, font=f, anchor="mt")
    for v in _nice_ticks(*ylim):
      py = self.px(xlim[0], v)[1]
      self.draw.line([(x0, py), (x1, py)], fill=_GRID)
      self.draw.text((x0 - 4, py), _tick_label(v), fill=_FG, font=f, anchor="rm")
    self.draw.rectangle(self.box, outline=_FG)

  def px(self, x, y):
    x0, y0, x1, y1 = self.box
    if self.xlog:
      fx = (math.log10(max(x, 1e-300)) - math.log10(self.xlim[0])) / (
          math.log10(self.xlim[1]) - math.log10(self.xlim[0]))
    else:
      fx = (x - self.xlim[0]) / max(self.xlim[1] - self.xlim[0], 1e-300)
    fy = (y - self.ylim[0]) / max(self.ylim[1] - self.ylim[0], 1e-300)
    return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

  def legend(self, entries: Sequence[tuple[str, tuple]], corner: str = "br"):
    f = font(12)
    widths = [self.draw.textlength(name, font=f) for name, _ in entries]
    w, h = max(widths, default=0) + 30, 16 * len(entries) + 6
    x0, y0, x1, y1 = self.box
    left = {"r": x1 - w - 6, "l": x0 + 6, "c": (x0 + x1 - w) / 2}[corner[1]]
    top = y1 - h - 6 if corner[0] == "b" else y0 + 6
    self.draw.rectangle((left, top, left + w, top + h), fill=_BG, outline=_GRID)
    for i, (name, color) in enumerate(entries):
      y = top + 11 + 16 * i
      self.draw.line([(left + 5, y), (left + 21, y)], fill=color, width=3)
      self.draw.text((left + 26, y), name, fill=_FG, font=f, anchor="lm")


def _downsample(xs: np.ndarray, ys: np.ndarray, max_points: int = 2000):
  if xs.size <= max_points:
    return xs, ys
  keep = np.unique(np.r_[np.linspace(0, xs.size - 1, max_points).astype(int), xs.size - 1])
  return xs[keep], ys[keep]


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], title: str,
               xlabel: str, ylabel: str, xlim=None, ylim=None, xlog: bool = False,
               markers: bool = False, legend_corner: str = "br", size=(440, 360)) -> Image.Image:
  """One line per (name, xs, ys); long curves are thinned to 2,000 points for drawing."""
  xs_all = np.concatenate([np.asarray(s[1], np.float64) for s in series])
  ys_all = np.concatenate([np.asarray(s[2], np.float64) for s in series])
  if xlim is None and xlog:  # whole decades, at least one
    lo = 10 ** math.floor(math.log10(xs_all.min()))
    xlim = (lo, max(10 ** math.ceil(math.log10(xs_all.max())), 10 * lo))
  elif xlim is None:
    xlim = (xs_all.min(), xs_all.max())
  if ylim is None:
    span, scale = ys_all.max() - ys_all.min(), max(np.abs(ys_all).max(), 1e-6)
    pad = 0.05 * span if span > 0.01 * scale else 0.02 * scale  # flat data: a readable band
    ylim = (ys_all.min() - pad, ys_all.max() + pad)
  ax = _Axes(size, xlim, ylim, title, xlabel, ylabel, xlog)
  entries = []
  for i, (name, xs, ys) in enumerate(series):
    color = PALETTE[i % len(PALETTE)]
    xs, ys = _downsample(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    points = [ax.px(x, y) for x, y in zip(xs, ys)]
    if len(points) > 1:
      ax.draw.line(points, fill=color, width=2, joint="curve")
    if markers or len(points) == 1:
      for px, py in points:
        ax.draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=color)
    entries.append((name, color))
  ax.legend(entries, legend_corner)
  return ax.image


def histogram_chart(groups: Sequence[tuple[str, Sequence[float]]], title: str, xlabel: str,
                    bins: int = 30, threshold: float | None = None, size=(440, 320)) -> Image.Image:
  """Overlaid histograms (fraction of each group per bin); optional vertical threshold line."""
  values = [np.asarray(v, np.float64) for _, v in groups]
  everything = np.concatenate([v for v in values if v.size] or [np.zeros(1)])
  lo, hi = float(everything.min()), float(everything.max())
  if hi <= lo:
    hi = lo + 1.0
  edges = np.linspace(lo, hi, bins + 1)
  fractions = [np.histogram(v, edges)[0] / max(v.size, 1) for v in values]
  top = max(float(max((f.max() for f in fractions), default=0)), 1e-6) * 1.1
  ax = _Axes(size, (lo, hi), (0.0, top), title, xlabel, "fraction of images")
  overlay = Image.new("RGBA", size, (0, 0, 0, 0))
  draw = ImageDraw.Draw(overlay)
  entries = []
  for i, ((name, v), frac) in enumerate(zip(groups, fractions)):
    color = PALETTE[i % len(PALETTE)]
    for j, f in enumerate(frac):
      if f > 0:
        (x0, y0), (x1, y1) = ax.px(edges[j], f), ax.px(edges[j + 1], 0.0)
        draw.rectangle((x0, y0, x1, y1), fill=color + (110,), outline=color + (255,))
    entries.append((f"{name} (n={len(v)})", color))
  ax.image.paste(overlay, (0, 0), overlay)
  if threshold is not None and lo <= threshold <= hi:
    (px, py0), (_, py1) = ax.px(threshold, top), ax.px(threshold, 0.0)
    ax.draw.line([(px, py0), (px, py1)], fill=_FG, width=2)
    entries.append(("F1-optimal threshold", _FG))
  ax.legend(entries, "tc")
  return ax.image


def bar_chart(groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], title: str,
              ylabel: str, ylim=None, legend_corner: str = "tr", size=None) -> Image.Image:
  """Grouped bars: one group per name in `groups`, one bar per (name, values) series.

  NaN values (undefined metrics) leave their bar out.
  """
  values = np.asarray([np.asarray(v, np.float64) for _, v in series])  # [S, G]
  finite = values[np.isfinite(values)]
  if ylim is None:
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = max(0.05 * (hi - lo), 0.01 * max(abs(hi), 1e-6))
    bottom = lo - 4 * pad  # bars start below the smallest value, so differences show
    ylim = (bottom, hi + (0.09 * len(series) + 0.03) * (hi - bottom))  # room for the legend
  n = len(groups)
  size = size or (max(360, 70 * n + 90), 340)
  ax = _Axes(size, (0.0, float(n)), ylim, title, "", ylabel,
             xticks=[(g + 0.5, name) for g, name in enumerate(groups)])
  width = 0.8 / max(len(series), 1)
  entries = []
  for i, (name, _) in enumerate(series):
    color = PALETTE[i % len(PALETTE)]
    for g in range(n):
      v = values[i, g]
      if np.isfinite(v):
        left = g + 0.1 + i * width
        (x0, y0), (x1, y1) = ax.px(left, min(max(v, ylim[0]), ylim[1])), ax.px(left + width, ylim[0])
        ax.draw.rectangle((x0, y0, x1 - 1, y1), fill=color)
    entries.append((name, color))
  ax.legend(entries, legend_corner)
  return ax.image


def side_by_side(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
  w = sum(im.width for im in images) + gap * (len(images) - 1)
  out = Image.new("RGB", (w, max(im.height for im in images)), _BG)
  x = 0
  for im in images:
    out.paste(im, (x, 0))
    x += im.width + gap
  return out


def stacked(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
  h = sum(im.height for im in images) + gap * (len(images) - 1)
  out = Image.new("RGB", (max(im.width for im in images), h), _BG)
  y = 0
  for im in images:
    out.paste(im, (0, y))
    y += im.height + gap
  return out
