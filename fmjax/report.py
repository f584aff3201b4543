"""The evaluation report in <workdir>/eval/: tables, per-image scores and pictures.

  metrics.json          overall, mean over categories, per category, settings, per-image scores
  metrics.md            one row per category in the layout of the paper's Tables 4/5, plus Mean
  scores.csv            path, category, defect, label, score, threshold, decision
  grid_<category>.png   test images with the ground-truth contour | heatmap overlay
  score_histogram.png   image scores of normal vs anomalous images, per category
  roc_pr.png            ROC and precision-recall curves (image and pixel level)
  heatmaps/             the highest- and lowest-scoring images at full size
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil

import numpy as np
from PIL import Image, ImageDraw

from fmjax import methods, plots
from fmjax.data import AnomalyDataset

# Anchor colours of a perceptually ordered dark-to-bright map (black-purple-orange-yellow).
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                    np.float64) / 255.0
TABLE_COLUMNS = (("image_auroc", "I-AUROC"), ("image_ap", "I-AP"), ("image_f1_max", "I-F1max"),
                 ("pixel_auroc", "P-AUROC"), ("pixel_ap", "P-AP"), ("pixel_f1_max", "P-F1max"),
                 ("pixel_aupro", "PRO"))


def colormap(x: np.ndarray) -> np.ndarray:
  """Values in [0, 1] [...] -> RGB float [...,3]."""
  pos = np.clip(x, 0, 1) * (len(_ANCHORS) - 1)
  lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
  frac = (pos - lo)[..., None]
  return _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac


def _outline(mask: np.ndarray) -> np.ndarray:
  """The pixels just outside a binary mask (8-neighbourhood), so thin defects stay visible."""
  m = mask.astype(bool)
  padded = np.pad(m, 1)
  grown = np.zeros_like(m)
  h, w = m.shape
  for dy in range(3):
    for dx in range(3):
      grown |= padded[dy:dy + h, dx:dx + w]
  return grown & ~m


def overlay(image: np.ndarray, heatmap: np.ndarray, vmax: float, mask=None) -> np.ndarray:
  """uint8 image [H,W,3] blended with the colour-mapped heatmap / vmax; mask outline in white."""
  heat = colormap(heatmap / max(vmax, 1e-12))
  out = 0.45 * image.astype(np.float64) / 255.0 + 0.55 * heat
  if mask is not None:
    out[_outline(mask)] = 1.0
  return np.round(out * 255).astype(np.uint8)


def with_contour(image: np.ndarray, mask=None) -> np.ndarray:
  out = image.copy()
  if mask is not None:
    out[_outline(mask)] = (0, 255, 0)
  return out


def heatmap_panel(image: np.ndarray, heatmap: np.ndarray, vmax: float, mask=None) -> np.ndarray:
  """uint8 [H, 2W, 3]: the image | heatmap overlay, ground truth outlined."""
  return np.concatenate([with_contour(image, mask), overlay(image, heatmap, vmax, mask)], axis=1)


def _upscale(a: np.ndarray, target: int = 128) -> Image.Image:
  im = Image.fromarray(a)
  scale = max(1, target // a.shape[0])
  return im.resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST) if scale > 1 else im


def fresh_dir(directory: str) -> None:
  """An empty `directory`: a rerun's pictures replace the earlier ones, none are mixed in."""
  shutil.rmtree(directory, ignore_errors=True)
  os.makedirs(directory)


def write_heatmaps(directory: str, dataset: AnomalyDataset, heatmaps: np.ndarray,
                   scores: np.ndarray, count: int) -> list[str]:
  """Saves the `count` highest- and lowest-scoring test images' panels as PNGs; returns paths."""
  fresh_dir(directory)
  order = np.argsort(-scores)
  chosen = list(dict.fromkeys(list(order[: (count + 1) // 2]) + list(order[::-1][: count // 2])))
  vmax = float(np.quantile(heatmaps, 0.999))
  paths = []
  for rank, i in enumerate(chosen):
    mask = None if dataset.test_masks is None else dataset.test_masks[i]
    img = _upscale(heatmap_panel(dataset.test_images[i], heatmaps[i], vmax, mask), 256)
    name = (f"{rank:02d}_{dataset.class_names[dataset.test_classes[i]]}_{dataset.test_defects[i]}"
            f"_{scores[i]:.3g}.png")
    path = os.path.join(directory, name)
    img.save(path)
    paths.append(path)
  return paths


def grid_selection(scores: np.ndarray, labels: np.ndarray, columns: int) -> list[tuple[int, str]]:
  """Indices (into scores) and captions: best and worst anomalous, worst and best normal images."""
  anomalous = np.flatnonzero(labels == 1)
  normal = np.flatnonzero(labels == 0)
  anomalous = anomalous[np.argsort(-scores[anomalous], kind="stable")]
  normal = normal[np.argsort(-scores[normal], kind="stable")]
  n_anom = min(len(anomalous), max(columns - min(len(normal), columns // 3), (columns + 1) // 2))
  n_norm = min(len(normal), columns - n_anom)
  top_a = (n_anom + 1) // 2
  picks = [(int(i), "best detected") for i in anomalous[:top_a]]
  picks += [(int(i), "hardest defect") for i in anomalous[::-1][: n_anom - top_a][::-1]]
  top_n = n_norm // 2
  picks += [(int(i), "highest normal") for i in normal[:top_n]]
  picks += [(int(i), "lowest normal") for i in normal[::-1][: n_norm - top_n][::-1]]
  return list(dict.fromkeys(picks))


def category_grid(dataset: AnomalyDataset, heatmaps: np.ndarray, scores: np.ndarray,
                  category: int, threshold: float, columns: int = 8) -> Image.Image:
  """Columns of test images of one category: image + contour over heatmap overlay, captioned."""
  idx = np.flatnonzero(dataset.test_classes == category)
  sel = grid_selection(scores[idx], dataset.test_labels[idx], columns)
  vmax = float(np.quantile(heatmaps[idx], 0.999))
  f = plots.font(11)
  tiles = []
  for local, why in sel:
    i = idx[local]
    mask = None if dataset.test_masks is None else dataset.test_masks[i]
    top = _upscale(with_contour(dataset.test_images[i], mask))
    bottom = _upscale(overlay(dataset.test_images[i], heatmaps[i], vmax, mask))
    w = top.width
    tile = Image.new("RGB", (w, 46 + 2 * top.height + 4), (255, 255, 255))
    d = ImageDraw.Draw(tile)
    flagged = "flagged" if scores[i] >= threshold else "passed"
    captions = (dataset.test_defects[i][:22], f"score {scores[i]:.4g} ({flagged})", why)
    for row, text in enumerate(captions):
      d.text((w / 2, 2 + 14 * row), text, fill=(30, 30, 30), font=f, anchor="mt")
    tile.paste(top, (0, 46))
    tile.paste(bottom, (0, 46 + top.height + 4))
    tiles.append(tile)
  grid = plots.side_by_side(tiles, gap=6)
  title = Image.new("RGB", (max(grid.width, 420), 34), (255, 255, 255))
  d = ImageDraw.Draw(title)
  d.text((4, 3), f"{dataset.class_names[category]}: top, image + ground truth (green); bottom, heatmap",
         fill=(30, 30, 30), font=f)
  d.text((4, 18), f"colour scale 0 to {vmax:.3g} (99.9th percentile of the category)",
         fill=(30, 30, 30), font=f)
  return plots.stacked([title, grid], gap=2)


def format_percent(v) -> str:
  """A fraction as percent with one decimal; "-" when undefined (None or NaN)."""
  return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def present_columns(metric_dicts) -> list[tuple[str, str]]:
  """The (key, column name) pairs of TABLE_COLUMNS found in any of the metric dicts."""
  metric_dicts = list(metric_dicts)
  return [(k, name) for k, name in TABLE_COLUMNS if any(k in m for m in metric_dicts)]


def metrics_table(result: dict) -> str:
  """Markdown: one row per category and a Mean row (percent, one decimal), as in Tables 4/5."""
  keys = present_columns(result["per_category"].values())
  lines = ["| Category | " + " | ".join(name for _, name in keys) + " |",
           "|---|" + "---:|" * len(keys)]
  rows = list(result["per_category"].items()) + [("Mean", result["mean"])]
  for name, m in rows:
    cells = [format_percent(m.get(k)) for k, _ in keys]
    bold = "**" if name == "Mean" else ""
    lines.append(f"| {bold}{name}{bold} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def scorer_settings(s: dict) -> str:
  """The scorer's settings in words, from metrics.json's settings (method, method_options)."""
  return methods.scorer(s["method"]).summary(s["method_options"])


def metrics_markdown(result: dict) -> str:
  s = result["settings"]
  scorer = methods.scorer(s["method"])
  overall = " ".join(f"{name} {format_percent(result.get(k))}" for k, name in TABLE_COLUMNS if k in result)
  return "\n".join([
      f"# {scorer.title} evaluation: {s['dataset']}", "",
      f"{scorer.title}: {scorer.description}.", "",
      f"Checkpoint step {s['checkpoint_step']}; {scorer_settings(s)}; {s['num_test_images']} test "
      f"images scored at {s['images_per_s']:.2f} images/s.", "",
      "Percent. I- = image level, P- = pixel level, PRO = pixel AUPRO up to FPR 0.3. "
      "Mean = average over categories (the papers' convention).", "",
      metrics_table(result), "",
      f"All test images pooled into one ranking: {overall}.", ""])


def write_scores_csv(path: str, result: dict) -> None:
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "category", "defect", "label", "score", "threshold", "decision"])
    for r in result["images"]:
      t = result["per_category"][r["category"]]["image_f1_threshold"]
      decision = "" if not np.isfinite(t) else ("anomalous" if r["score"] >= t else "normal")
      w.writerow([r["path"], r["category"], r["defect"], r["label"], f"{r['score']:.8g}",
                  f"{t:.8g}", decision])


def histogram_figure(dataset: AnomalyDataset, scores: np.ndarray, result: dict) -> Image.Image:
  """Normal vs anomalous image scores per category (log10 axis when scores span > 1.5 decades)."""
  charts = []
  for ci, name in enumerate(dataset.class_names):
    sel = dataset.test_classes == ci
    labels = dataset.test_labels[sel]
    values = scores[sel].astype(np.float64)
    threshold = result["per_category"][name]["image_f1_threshold"]
    xlabel = "score (max + top-1% mean)"
    if values.min() > 0 and values.max() / values.min() > 10 ** 1.5:
      values, xlabel = np.log10(values), "log10 score (max + top-1% mean)"
      threshold = np.log10(threshold) if np.isfinite(threshold) and threshold > 0 else None
    charts.append(plots.histogram_chart(
        [("normal", values[labels == 0]), ("anomalous", values[labels == 1])],
        f"{name}: image scores", xlabel, threshold=threshold))
  cols = min(3, len(charts))
  rows = [plots.side_by_side(charts[i:i + cols]) for i in range(0, len(charts), cols)]
  return plots.stacked(rows)


def roc_pr_figure(curves: dict, result: dict) -> Image.Image | None:
  """ROC and PR curves of all test images pooled; image level, and pixel level when masks exist."""
  roc, pr = [], []
  for level in ("image", "pixel"):
    c = curves.get(f"{level}_curves")
    if c is None:
      continue
    roc.append((f"{level} AUROC {format_percent(result[f'{level}_auroc'])}", c["fpr"], c["tpr"]))
    pr.append((f"{level} AP {format_percent(result[f'{level}_ap'])}", np.r_[0.0, c["recall"]],
               np.r_[c["precision"][0], c["precision"]]))
  if not roc:
    return None
  return plots.side_by_side([
      plots.line_chart(roc, "ROC (all test images)", "false positive rate", "true positive rate",
                       xlim=(0, 1), ylim=(0, 1)),
      plots.line_chart(pr, "Precision-recall (all test images)", "recall", "precision",
                       xlim=(0, 1), ylim=(0, 1), legend_corner="bl")])


def write_report(eval_dir: str, result: dict, dataset: AnomalyDataset, heatmaps: np.ndarray,
                 scores: np.ndarray, curves: dict, num_heatmaps: int = 12,
                 grid_columns: int = 8) -> list[str]:
  """Writes every file listed in the module docstring; returns their paths."""
  os.makedirs(eval_dir, exist_ok=True)
  written = []

  def path(name):
    written.append(os.path.join(eval_dir, name))
    return written[-1]

  with open(path("metrics.json"), "w") as f:
    json.dump(json_safe(result), f, indent=1)
  with open(path("metrics.md"), "w") as f:
    f.write(metrics_markdown(result))
  write_scores_csv(path("scores.csv"), result)
  for ci, name in enumerate(dataset.class_names):
    threshold = result["per_category"][name]["image_f1_threshold"]
    category_grid(dataset, heatmaps, scores, ci, threshold, grid_columns).save(
        path(f"grid_{safe_name(name)}.png"))
  histogram_figure(dataset, scores, result).save(path("score_histogram.png"))
  figure = roc_pr_figure(curves, result)
  if figure is not None:
    figure.save(path("roc_pr.png"))
  # Always: with num_heatmaps = 0 it leaves an empty folder, no stale pictures of an earlier run.
  write_heatmaps(os.path.join(eval_dir, "heatmaps"), dataset, heatmaps, scores, num_heatmaps)
  return written


def write_unlabeled_report(out_dir: str, rows: list[dict], images: np.ndarray,
                           heatmaps: np.ndarray, threshold: float) -> None:
  """scores.csv (path, category, score, threshold, decision) and a heatmap panel per image."""
  fresh_dir(os.path.join(out_dir, "heatmaps"))
  known = np.isfinite(threshold)
  with open(os.path.join(out_dir, "scores.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "category", "score", "threshold", "decision"])
    for r in rows:
      decision = ("anomalous" if r["score"] >= threshold else "normal") if known else ""
      w.writerow([r["path"], r["category"], f"{r['score']:.8g}", f"{threshold:.8g}" if known else "",
                  decision])
  vmax = float(np.quantile(heatmaps, 0.999))
  for i, r in enumerate(rows):
    stem = safe_name(os.path.splitext(os.path.basename(r["path"]))[0])
    _upscale(heatmap_panel(images[i], heatmaps[i], vmax), 256).save(
        os.path.join(out_dir, "heatmaps", f"{i:05d}_{stem}.png"))


def safe_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def json_safe(obj):
  """NaN/inf -> None, so metrics.json is strict JSON."""
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def summary_lines(result: dict) -> list[str]:
  """The table printed at the end of an evaluation."""
  keys = present_columns([result, result["mean"]])
  lines = ["category        " + " ".join(f"{n:>8s}" for _, n in keys)]
  for name, m in list(result["per_category"].items()) + [("Mean", result["mean"])]:
    lines.append(f"{name[:15]:15s} " + " ".join(f"{format_percent(m.get(k)):>8s}" for k, _ in keys))
  s = result["settings"]
  lines.append(f"{methods.scorer(s['method']).title}: {scorer_settings(s)}; "
               f"step {s['checkpoint_step']}; {s['images_per_s']:.2f} images/s")
  return lines

