"""Self-contained HTML pages to explore results: <workdir>/eval/report.html and the studies'.

One file, opened from disk, a bucket download or a notebook cell, with no server: the data is
one JSON block inside the page, images are embedded as compressed thumbnails (JPEG images,
PNG heatmaps and masks, base64 data URIs), and the script and styles (`page/page.js`,
`page/page.css`, plain JavaScript and SVG drawn in the page) are inlined. A Content-Security-
Policy in the page forbids every request but data: and blob: images, so it makes none.

The evaluation page (`evaluation_page`) has, per category: a gallery of its test images (sort by
score, filter by defect, label and decision, the ground truth outlined, the heatmap overlay on
the report's colour scale, the predicted defect outlined on flagged images, a click opens it
large), a threshold slider whose false-alarm rate, recall, precision, F1 and confusion counts
follow it live, with the calibrated and F1-optimal thresholds marked, the score histograms and
the image ROC and PR curves with the current threshold on them.

Thresholds follow the report's rules: the slider's position k flags the images whose score is
at or above the k-th lowest distinct score; the F1-optimal threshold t (flagged: score >= t) and
a calibrated one t (flagged: score > t) are the positions that flag the same images.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import warnings
from importlib import resources

import numpy as np
from matplotlib import colormaps
from PIL import Image

from fmjax import methods
from fmjax.core import console, files, fingerprint, plots
from fmjax.core.errors import ConfigError

MAX_IMAGES = 20000  # beyond this a page would not stay interactive; the report says so
# (up to this many test images, the long side in pixels of their thumbnails, of their heatmaps):
# the page of 2,000 images stays under 25 MB (benchmarks/report_page.py). Heatmaps are
# lossless PNGs of noisy maps, so they cost more per pixel than the JPEG images.
THUMBNAIL_SIDES = ((400, 192, 192), (1000, 160, 128), (2000, 128, 96), (MAX_IMAGES, 96, 64))
JPEG_QUALITY = 85


class PageError(ValueError):
  """The page cannot be written (the evaluation writes everything else)."""


# The embedded pictures of a page stay under this many bytes (base64 included) where the smallest
# thumbnails allow: maps noisier than usual step down to the next row of THUMBNAIL_SIDES.
MAX_PICTURE_BYTES = 23_000_000


def thumbnail_tier(num_images: int) -> int:
  """The row of THUMBNAIL_SIDES for a page of `num_images` images."""
  for tier, (limit, _, _) in enumerate(THUMBNAIL_SIDES):
    if num_images <= limit:
      return tier
  raise PageError(f"{num_images} test images are more than a page can hold ({MAX_IMAGES})")


def thumbnail_side(num_images: int) -> tuple[int, int]:
  """The long sides (pixels) of the images' and the heatmaps' thumbnails in a page of
  `num_images` images (before MAX_PICTURE_BYTES asks for smaller ones)."""
  return THUMBNAIL_SIDES[thumbnail_tier(num_images)][1:]


def _fit(h: int, w: int, side: int) -> tuple[int, int]:
  """(height, width) scaled so the long side is at most `side`, aspect kept."""
  f = min(1.0, side / max(h, w))
  return max(1, round(h * f)), max(1, round(w * f))


def _data_uri(image: Image.Image, fmt: str, **options) -> str:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **options)
  mime = "jpeg" if fmt == "JPEG" else fmt.lower()
  return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_thumbnail(image: np.ndarray, side: int) -> str:
  """A uint8 image [H,W,3] or [H,W] as a JPEG data URI, long side at most `side`."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  h, w = _fit(image.shape[0], image.shape[1], side)
  picture = Image.fromarray(image.astype(np.uint8))
  if (h, w) != image.shape[:2]:
    picture = picture.resize((w, h), Image.Resampling.BILINEAR)
  return _data_uri(picture.convert("RGB"), "JPEG", quality=JPEG_QUALITY)


def heat_levels(heatmap: np.ndarray, norm) -> np.ndarray:
  """uint8 [H,W]: `plots.heat_level` (the overlay's) in 256 steps (0 at vmin, 255 at vmax)."""
  return np.round(plots.heat_level(heatmap, norm) * 255).astype(np.uint8)


def level_of(value: float | None, norm) -> int | None:
  """A pixel-score threshold as a level 0..256 of `heat_levels` (pixels at or above it are the
  predicted defect; 256: none), or None without one."""
  if value is None or not math.isfinite(value):
    return None
  if value > norm.vmax:
    return 256
  return int(heat_levels(np.array([[value]]), norm)[0, 0])


def grey_png(levels: np.ndarray, side: int, nearest: bool = False) -> str:
  """uint8 [H,W] as a greyscale PNG data URI, long side at most `side`."""
  h, w = _fit(levels.shape[0], levels.shape[1], side)
  picture = Image.fromarray(np.ascontiguousarray(levels, np.uint8), mode="L")
  if (h, w) != levels.shape:
    picture = picture.resize((w, h), Image.Resampling.NEAREST if nearest
                             else Image.Resampling.BILINEAR)
  return _data_uri(picture, "PNG", optimize=False)


def colour_table() -> str:
  """The overlay's colour map (`plots.CMAP`) as 256 RGB triples in hex."""
  rgb = np.round(colormaps[plots.CMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
  return rgb.tobytes().hex()


def _number(v) -> float | None:
  """A JSON number, or None for None, NaN and infinities."""
  return None if v is None or not math.isfinite(float(v)) else float(v)


def _assets() -> tuple[str, str]:
  folder = resources.files("fmjax.report") / "page"
  return ((folder / "page.js").read_text(encoding="utf-8"),
          (folder / "page.css").read_text(encoding="utf-8"))


CSP = ("default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")


def render(title: str, data: dict) -> str:
  """The page: `data` (kind "evaluation", "study" or "scaling") inside, script and styles
  inlined."""
  script, style = _assets()
  payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
  payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head><body>\n"
          "<div id=\"app\"><p id=\"loading\">Loading the report...</p></div>\n"
          f"<script type=\"application/json\" id=\"fmjax-data\">{payload}</script>\n"
          f"<script>{script}</script>\n</body></html>\n")


def write(path: str, data: dict) -> None:
  """The page of `data` (titled with its "title") at `path`."""
  files.write_text(path, render(data["title"], data))


def evaluation_page(result, dataset, heatmaps, scores, *, scales: dict,
                    decision_thresholds: dict | None = None, context: dict | None = None,
                    links: list[str] = ()) -> dict:
  """The data of an evaluation's page.

  result: `records.Evaluation`; dataset: its `AnomalyDataset`; heatmaps [N,H,W] (or an object
  array of [H_i,W_i]) and scores [N] of the test images; scales: {class index: colour scale}
  (`plots.heat_scales`, the PNG grids' own); decision_thresholds: {category: threshold moved by
  evaluate.sensitivity}; context: {"model": ..., "data": ...} in words; links: the report's
  other files, relative to the page.
  """
  n = len(scores)
  if n == 0 or dataset.test_images is None or len(dataset.test_images) != n:
    raise PageError("no test images to embed")
  tier = thumbnail_tier(n)
  s = result.settings
  options = s.method_options or {}
  settings = [["method", s.method]]
  for key, label in (("num_seeds", "K (seeds)"), ("num_times", "T (time steps)"),
                     ("aggregator", "aggregator")):
    if key in options:
      settings.append([label, str(options[key])])
  settings += [["checkpoint step", str(s.checkpoint_step)]]
  if s.checkpoint:
    settings.append(["checkpoint", fingerprint.short(s.checkpoint)])
  settings += [["images/s", f"{s.images_per_s:.3g}" if s.images_per_s else "-"],
               ["EMA parameters", "yes" if s.use_ema else "no"],
               ["test images", str(s.num_test_images)], ["dataset", s.dataset]]
  for key, value in (context or {}).items():
    settings.append([key, str(value)])
  other = {k: v for k, v in options.items()
           if k not in ("num_seeds", "num_times", "aggregator") and v is not None}
  if other:
    settings.append(["other scorer settings",
                     ", ".join(f"{k}={v}" for k, v in sorted(other.items()))])
  if s.pixel_metrics_at == "native":
    settings.append(["pixel metrics", "at each test file's own size"])

  # The tables' columns and figures (writer imports this module, so not at the top).
  from fmjax.report.writer import (columns_note, format_percent as percent,  # noqa: PLC0415
                                   present_columns)
  columns = present_columns(list(result.per_category.values()) + [result.mean])
  metric_rows = [{"name": name, "cells": [percent(getattr(m, k)) for k, _ in columns]}
                 for name, m in list(result.per_category.items()) + [("Mean", result.mean)]]

  calibrated = result.calibrated.per_category if result.calibrated is not None else {}
  categories = []
  for ci, name in enumerate(dataset.class_names):
    norm = scales.get(ci)
    metrics = result.per_category.get(name)
    marks = []
    if metrics is not None and _number(metrics.image_f1_threshold) is not None:
      marks.append({"kind": "f1", "threshold": float(metrics.image_f1_threshold), "strict": False,
                    "label": "F1-optimal (tuned on the test labels)"})
    outcomes = calibrated.get(name)
    pixel, pixel_kind = None, ""
    if outcomes is not None:
      for k, row in outcomes.rates.items():
        marks.append({"kind": "calibrated", "threshold": float(row.threshold), "strict": True,
                      "label": f"calibrated: {100 * float(k):g}% false alarms on "
                               f"{outcomes.num_held_out} held-out normals" +
                               ("" if row.resolved else " (unresolved)"),
                      "false_alarm_rate": percent(row.false_alarm_rate),
                      "recall": percent(row.recall)})
        if pixel is None and _number(row.pixel_threshold) is not None:
          pixel = float(row.pixel_threshold)
          pixel_kind = (f"pixel threshold {pixel:.4g}, calibrated at {100 * float(k):g}% of "
                        "held-out normal pixels")
    moved = (decision_thresholds or {}).get(name)
    if moved is not None and outcomes is not None and all(
        m["threshold"] != moved for m in marks if m["kind"] == "calibrated"):
      marks.append({"kind": "decision", "threshold": float(moved), "strict": True,
                    "label": f"decision threshold (evaluate.sensitivity = {s.sensitivity:g})"})
    if pixel is None and metrics is not None and _number(metrics.pixel_f1_threshold) is not None:
      pixel = float(metrics.pixel_f1_threshold)
      pixel_kind = f"pixel threshold {pixel:.4g}, F1-optimal on the test masks"
    categories.append({
        "name": name, "marks": marks,
        "scale": None if norm is None else {"vmin": float(norm.vmin), "vmax": float(norm.vmax),
                                            "words": plots.describe_scale(norm)},
        "pixel_level": None if norm is None else level_of(pixel, norm),
        "pixel_words": pixel_kind})

  while True:  # the largest thumbnails whose pictures fit MAX_PICTURE_BYTES
    side, heat_side = THUMBNAIL_SIDES[tier][1:]
    images = _image_entries(result, dataset, heatmaps, scores, scales, side, heat_side)
    size = sum(len(e[k]) for e in images for k in ("img", "heat", "mask") if k in e)
    if size <= MAX_PICTURE_BYTES or tier == len(THUMBNAIL_SIDES) - 1:
      break
    tier += 1

  try:
    method = methods.scorer(s.method).title
  except ConfigError:  # an evaluation of a scorer this version does not know
    method = s.method
  return {"kind": "evaluation", "title": f"{method} evaluation: {s.dataset}",
          "settings": settings, "columns": [name for _, name in columns], "metrics": metric_rows,
          "columns_note": columns_note(columns, result.settings.aupimo_fpr),
          "groups": [{"title": group, "columns": [name for _, name in group_columns],
                      "rows": [[n] + [percent(getattr(m, k)) for k, _ in group_columns]
                               for n, m in list(g.per_category.items()) + [("Mean", g.mean)]]}
                     for group, g in (result.by_defect_group or {}).items()
                     for group_columns in [present_columns(list(g.per_category.values()))]],
          "links": list(links), "colours": colour_table(), "alpha": plots.OVERLAY_ALPHA,
          "categories": categories, "images": images, "thumbnails": [side, heat_side]}


def _image_entries(result, dataset, heatmaps, scores, scales: dict, side: int,
                   heat_side: int) -> list[dict]:
  """Per test image: what the page shows of it, its image, heatmap levels and mask embedded
  with long sides `side`, `heat_side` and `side`."""
  images = []
  masks = dataset.test_masks
  for i in range(len(scores)):
    r = result.images[i]
    ci = int(dataset.test_classes[i])
    image = dataset.test_images[i]
    entry = {"c": ci, "path": r.path, "name": os.path.basename(r.path), "defect": r.defect,
             "label": int(r.label), "score": float(scores[i]),
             "w": int(image.shape[1]), "h": int(image.shape[0]),
             "img": image_thumbnail(image, side)}
    if r.normalised_score is not None:
      entry["normalised"] = float(r.normalised_score)
    if r.calibrated_decision is not None:
      entry["decision"] = r.calibrated_decision
    if ci in scales:
      entry["heat"] = grey_png(heat_levels(np.asarray(heatmaps[i]), scales[ci]), heat_side)
    mask = None if masks is None else np.asarray(masks[i])
    if mask is not None and mask.any():
      entry["mask"] = grey_png((mask > 0).astype(np.uint8) * 255, side, nearest=True)
    images.append(entry)
  return images


def markdown_tables(text: str) -> list[dict]:
  """The Markdown tables of `text` (results.md) as [{"title": the heading above it or "",
  "columns": [...], "rows": [[cell text, ...]]}] (emphasis marks dropped)."""
  tables, title, block = [], "", []

  def flush():
    if len(block) >= 2:
      cells = [[c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
               for line in block]
      tables.append({"title": title, "columns": cells[0], "rows": cells[2:]})
    block.clear()

  for line in text.splitlines():
    if line.lstrip().startswith("|"):
      block.append(line)
      continue
    flush()
    if line.startswith("#"):
      title = line.lstrip("#").strip()
  flush()
  return tables


def series(name: str, points) -> dict:
  """A plot's line: `points` [(x, y) or (x, y, label)], those with an undefined value left out."""
  kept = []
  for point in points:
    x, y = point[0], point[1]
    if x is None or y is None or not (math.isfinite(float(x)) and math.isfinite(float(y))):
      continue
    kept.append([float(x), float(y)] + ([str(point[2])] if len(point) > 2 else []))
  return {"name": name, "points": kept}


def table_page(kind: str, title: str, intro: str, markdown: str, plots_: list[dict],
               links: list[str] = ()) -> dict:
  """The data of a study's or the scaling study's page: the tables of its results.md (sortable
  by a click on a column) and plots [{"title", "x", "y" (axis labels), "log_x", "log_y",
  "x_ticks": [[x, label]] (optional, for settings), "series": [`series`]}] drawn in the page
  with hover values and log-axis switches."""
  return {"kind": kind, "title": title, "intro": intro, "links": list(links),
          "tables": markdown_tables(markdown), "plots": list(plots_)}


def write_safely(path: str, build) -> bool:
  """Writes the page of the data `build()` returns to `path`; a page that cannot be made (a
  PageError, a value JSON cannot hold, a file that cannot be written) is one warning line, and
  the caller's other files are written all the same. True when written."""
  try:
    write(path, build())
    return True
  except (PageError, ValueError, OSError) as e:
    console.warn(f"{path} not written ({e}); the other files are.")
    return False


def show(path: str, height: int = 900):
  """The page at `path` inline in a notebook (Colab, Jupyter): an iframe holding the file, so
  its styles and script stay apart from the notebook's."""
  from IPython.display import HTML  # noqa: PLC0415  (notebooks only)
  text = files.read_text(path)
  with warnings.catch_warnings():  # IPython suggests its IFrame, which needs a URL to load
    warnings.simplefilter("ignore", UserWarning)
    return HTML(f'<iframe class="fmjax-report" srcdoc="{html.escape(text, quote=True)}" '
                f'style="width:100%;height:{int(height)}px;border:1px solid #ccc"></iframe>')
