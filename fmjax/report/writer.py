"""The evaluation report in <workdir>/eval/: tables, per-image scores and pictures.

  metrics.json          overall, mean over categories, per category, settings, per-image scores
  metrics.md            one row per category in the layout of the paper's Tables 4/5, plus Mean
  scores.csv            path, category, defect, label, score, threshold, decision
  grid_<category>.png   test images with the ground-truth contour | heatmap overlay
  score_histogram.png   image scores of normal vs anomalous images, per category
  roc_pr.png            ROC and precision-recall curves (image and pixel level)
  heatmaps/             the highest- and lowest-scoring images at full size
  report.html           one self-contained page to explore all of it (`fmjax.report.page`)
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from fmjax.decide import calibration, regions
from fmjax.decide.cascade import CascadeResults
from fmjax.core import files, plots
from fmjax.core.records import json_safe  # noqa: F401  (studies write their JSON with it)
from fmjax import methods
from fmjax.data import AnomalyDataset
from fmjax.report import page
from fmjax.report.records import EvalSettings, Evaluation, Metrics

# (Metrics attribute, column name) of the tables, in the papers' order.
TABLE_COLUMNS = (("image_auroc", "I-AUROC"), ("image_ap", "I-AP"), ("image_f1_max", "I-F1max"),
                 ("pixel_auroc", "P-AUROC"), ("pixel_ap", "P-AP"), ("pixel_f1_max", "P-F1max"),
                 ("pixel_aupro", "PRO"), ("pixel_aupimo", "AUPIMO"), ("pixel_spro", "sPRO"))


def fresh_dir(directory: str) -> None:
  """An empty `directory`: a rerun's pictures replace the earlier ones, none are mixed in."""
  files.rmtree(directory)
  files.makedirs(directory)


def heatmap_figure(image: np.ndarray, heatmap: np.ndarray, scale, title: str, mask=None,
                   predicted=None):
  """One image at full size: the image (ground truth outlined) | its heatmap overlay, colour
  bar; `predicted` [H,W] bool (pixels above a calibrated pixel threshold) outlined in cyan."""
  fig = plots.figure(7.0, 3.6)
  axes = fig.subplots(1, 2)
  plots.show_image(axes[0], image, mask, contour_colour="lime")
  axes[0].set_title("image" + (" + ground truth" if mask is not None and np.any(mask) else ""),
                    fontsize=9)
  plots.show_image(axes[1], plots.overlay(image, heatmap, scale), mask)
  has_prediction = predicted is not None and np.any(predicted)
  if has_prediction:
    axes[1].contour(np.asarray(predicted, np.float64), levels=[0.5], colors="cyan", linewidths=1.0,
                    linestyles="--")
  axes[1].set_title("anomaly heatmap" + (" (cyan: predicted defect)" if has_prediction else ""),
                    fontsize=9)
  plots.colour_bar(fig, axes[1], scale, "pixel score")
  fig.suptitle(title, fontsize=10)
  return fig


def write_heatmaps(directory: str, dataset: AnomalyDataset, heatmaps: np.ndarray,
                   scores: np.ndarray, count: int, scales: dict) -> list[str]:
  """Saves the `count` highest- and lowest-scoring test images' panels as PNGs, each on its
  category's colour scale ({class index: norm}, `plots.heat_scales`); returns the paths."""
  fresh_dir(directory)
  order = np.argsort(-scores)
  chosen = list(dict.fromkeys(list(order[: (count + 1) // 2]) + list(order[::-1][: count // 2])))
  paths = []
  for rank, i in enumerate(chosen):
    mask = None if dataset.test_masks is None else dataset.test_masks[i]
    category = dataset.class_names[dataset.test_classes[i]]
    title = f"{category} / {dataset.test_defects[i]}: image score {scores[i]:.4g} (rank {rank + 1})"
    fig = heatmap_figure(dataset.test_images[i], heatmaps[i], scales[int(dataset.test_classes[i])],
                         title, mask)
    path = os.path.join(directory, f"{rank:02d}_{category}_{dataset.test_defects[i]}"
                                   f"_{scores[i]:.3g}.png")
    plots.save(fig, path)
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
                  category: int, threshold: float, columns: int = 8, scale=None):
  """A figure of one category's test images in columns (`grid_selection`): the image with the
  ground truth outlined above its heatmap overlay, captioned with defect, score and decision;
  one colour scale for the category (`scale`, by default `plots.heat_scale` of its heatmaps),
  shown as a colour bar."""
  idx = np.flatnonzero(dataset.test_classes == category)
  sel = grid_selection(scores[idx], dataset.test_labels[idx], columns)
  scale = plots.heat_scale(heatmaps[idx]) if scale is None else scale
  n = max(len(sel), 1)
  fig = plots.figure(1.55 * n + 1.3, 4.3)
  axes = fig.subplots(2, n, squeeze=False)
  for col, (local, why) in enumerate(sel):
    i = idx[local]
    mask = None if dataset.test_masks is None else dataset.test_masks[i]
    image = dataset.test_images[i]
    plots.show_image(axes[0, col], image, mask, contour_colour="lime")
    plots.show_image(axes[1, col], plots.overlay(image, heatmaps[i], scale), mask)
    decided = "" if not np.isfinite(threshold) else (
        " flagged" if scores[i] >= threshold else " passed")
    axes[0, col].set_title(f"{dataset.test_defects[i][:16]}\n{why}\nscore {scores[i]:.4g}{decided}",
                           fontsize=7.5)
  for col in range(len(sel), n):
    axes[0, col].set_axis_off()
    axes[1, col].set_axis_off()
  axes[0, 0].set_ylabel("image +\nground truth", fontsize=8)
  axes[1, 0].set_ylabel("heatmap\noverlay", fontsize=8)
  plots.colour_bar(fig, axes[1, :], scale, "pixel score")
  threshold_text = f"; F1-optimal image threshold {threshold:.4g}" if np.isfinite(threshold) else ""
  fig.suptitle(f"{dataset.class_names[category]}: {plots.describe_scale(scale)}{threshold_text}",
               fontsize=9)
  return fig


def format_percent(v) -> str:
  """A fraction as percent with one decimal; "-" when undefined (None or NaN)."""
  return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def present_columns(metrics) -> list[tuple[str, str]]:
  """The (attribute, column name) pairs of TABLE_COLUMNS measured in any of the `Metrics`."""
  metrics = list(metrics)
  return [(k, name) for k, name in TABLE_COLUMNS
          if any(getattr(m, k) is not None for m in metrics)]


def columns_note(columns, aupimo_fpr=None) -> str:
  """What the tables' columns mean, in a sentence, for the (attribute, name) pairs shown."""
  keys = {k for k, _ in columns}
  lo, hi = aupimo_fpr or (1e-5, 1e-4)
  return " ".join(
      ["Percent. I- = image level, P- = pixel level, PRO = pixel AUPRO up to FPR 0.3."] +
      ([f"AUPIMO = each anomalous image's overlap against the normal images' shared FPR, "
        f"averaged on a log axis over FPR {lo:g} to {hi:g}."] if "pixel_aupimo" in keys else []) +
      (["sPRO = saturated per-region overlap, its area up to FPR 0.05."]
       if "pixel_spro" in keys else []))


def metrics_table(per_category: dict[str, Metrics], mean: Metrics) -> str:
  """Markdown: one row per category and a Mean row (percent, one decimal), as in Tables 4/5."""
  keys = present_columns(per_category.values())
  lines = ["| Category | " + " | ".join(name for _, name in keys) + " |",
           "|---|" + "---:|" * len(keys)]
  for name, m in list(per_category.items()) + [("Mean", mean)]:
    cells = [format_percent(getattr(m, k)) for k, _ in keys]
    bold = "**" if name == "Mean" else ""
    lines.append(f"| {bold}{name}{bold} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def scorer_settings(s: EvalSettings) -> str:
  """The scorer's settings in words (method, method_options)."""
  return methods.scorer(s.method).summary(s.method_options)


def metrics_markdown(result: Evaluation) -> str:
  """metrics.md: the settings, the per-category table, the pooled metrics, then the calibrated
  decisions and the cascade when the evaluation has them."""
  s = result.settings
  scorer = methods.scorer(s.method)
  overall = " ".join(f"{name} {format_percent(getattr(result.pooled, k))}"
                     for k, name in TABLE_COLUMNS if getattr(result.pooled, k) is not None)
  return "\n".join([
      f"# {scorer.title} evaluation: {s.dataset}", "",
      f"{scorer.title}: {scorer.description}.", "",
      f"Checkpoint step {s.checkpoint_step}; {scorer_settings(s)}; {s.num_test_images} test "
      f"images scored at {s.images_per_s:.2f} images/s.", "",
      columns_note(present_columns(result.per_category.values()), s.aupimo_fpr) +
      " Mean = average over categories (the papers' convention)." +
      (" Pixel metrics at each test file's own size: every heatmap enlarged to it (bilinear) "
       "and compared with the mask as the file has it." if s.pixel_metrics_at == "native" else ""),
      "",
      metrics_table(result.per_category, result.mean), "",
      f"All test images pooled into one ranking: {overall}.", ""] +
      (defect_group_section(result) if result.by_defect_group else []) + ([
      "## Decisions without test labels", "",
      "Image thresholds calibrated on normal training images held out of training "
      "(`calibration.json`; flagged when the score is above the threshold), and what they give "
      "on this test split. The F1-optimal row is tuned on the test labels themselves: an upper "
      "reference, not available on a production line." +
      (f" scores.csv decides each image at the first threshold moved by evaluate.sensitivity = "
       f"{s.sensitivity:g} (its calibrated_threshold column)." if s.sensitivity != 0.5 else ""),
      "", calibrated_table(result.calibrated), ""] if result.calibrated is not None else []) +
      (cascade_section(result.cascade) if result.cascade is not None else []))


def defect_group_section(result: Evaluation) -> list[str]:
  """Markdown lines: each defect group's table (its anomalous images with the normal test
  images, as MVTec LOCO AD reports logical and structural anomalies) and the groups' mean."""
  groups = result.by_defect_group
  lines = ["## By defect type", "",
           "Each defect type's anomalous test images with all the normal test images, measured "
           "apart (the benchmark's protocol); the last line averages the types' Mean rows.", ""]
  for group, g in groups.items():
    lines += [f"### {group}", "", metrics_table(g.per_category, g.mean), ""]
  keys = present_columns([g.mean for g in groups.values()])
  means = " ".join(
      f"{name} {format_percent(float(np.mean([getattr(g.mean, k) for g in groups.values()])))}"
      for k, name in keys if all(getattr(g.mean, k) is not None for g in groups.values()))
  return lines + [f"Mean over {' and '.join(groups)}: {means}.", ""]


def cascade_section(c: CascadeResults) -> list[str]:
  """Markdown lines: how many images the cascade sent to the full setting, its agreement with
  full scoring, its throughput."""
  lines = ["## Cascade scoring", "",
           f"Every image scored at K = {c.num_seeds}, T = {c.num_times}; those whose cheap "
           f"score fell in the band calibrated on the held-out normals scored again with the full "
           f"setting: {c.rescored} of {c.images} images took the expensive path. Decisions "
           f"agree with full scoring on {format_percent(c.agreement)}% of the test images; "
           f"{c.images_per_s:.3g} images/s against {c.full_images_per_s:.3g} for full "
           f"scoring ({c.speedup:.2f}x, from the measured cheap and full images/s).", "",
           "| Category | images | rescored | agreement | band of cheap scores |",
           "|---|---:|---:|---:|---|"]
  for name, p in c.per_category.items():
    lines.append(f"| {name} | {p.images} | {p.rescored} | {format_percent(p.agreement)} | "
                 f"{p.band[0]:.4g} to {p.band[1]:.4g} |")
  return lines + [""]


def write_scores_csv(path: str, result: Evaluation, decision_thresholds: dict | None = None) -> None:
  """One row per test image: its size as scored (width, height in pixels; left out for an
  evaluation from before sizes were recorded), the decision at the F1-optimal threshold (tuned
  on the test labels, score >= threshold) and, when calibrated, at the first calibrated rate
  (score > threshold; `decision_thresholds` {category: threshold} when evaluate.sensitivity
  moved it) with the normalised score."""
  sized = any(r.width for r in result.images)
  normalised = any(r.normalised_score is not None for r in result.images)
  rows = [["path", "category", "defect", "label"] + (["width", "height"] if sized else []) +
          ["score", "threshold", "decision", "calibrated_threshold", "calibrated_decision"] +
          (["normalised_score"] if normalised else [])]
  f1_thresholds = result.f1_thresholds()
  for r in result.images:
    t = f1_thresholds[r.category]
    decision = "" if not np.isfinite(t) else ("anomalous" if r.score >= t else "normal")
    ct = None if result.calibrated is None else result.calibrated.first_threshold(r.category)
    ct = (decision_thresholds or {}).get(r.category, ct)
    rows.append([r.path, r.category, r.defect, r.label] + ([r.width, r.height] if sized else []) +
                [f"{r.score:.8g}", f"{t:.8g}", decision, "" if ct is None else f"{ct:.8g}",
                 r.calibrated_decision or ""] +
                ([_number(r.normalised_score)] if normalised else []))
  files.write_text(path, files.csv_text(rows))


def calibrated_table(cal: calibration.CalibratedResults) -> str:
  """Markdown: per category, each calibrated rate's threshold with the false-alarm rate and
  recall it gives on the test split, and the F1-optimal threshold's (tuned on test labels)."""
  lines = ["| Category | held-out normals | threshold at | threshold | test false alarms | "
           "test recall |", "|---|---:|---|---:|---:|---:|"]
  for name, c in cal.per_category.items():
    for k, row in c.rates.items():
      rate = f"{100 * float(k):g}% false alarms" + ("" if row.resolved else " (unresolved)")
      lines.append(f"| {name} | {c.num_held_out} | {rate} | {row.threshold:.4g} | "
                   f"{format_percent(row.false_alarm_rate)} | {format_percent(row.recall)} |")
    f1 = c.f1_optimal
    threshold = "-" if f1.threshold is None or not np.isfinite(f1.threshold) else f"{f1.threshold:.4g}"
    lines.append(f"| {name} | | F1-optimal (tuned on the test labels) | {threshold} | "
                 f"{format_percent(f1.false_alarm_rate)} | {format_percent(f1.recall)} |")
  return "\n".join(lines)


def histogram_figure(dataset: AnomalyDataset, scores: np.ndarray, f1_thresholds: dict[str, float]):
  """Normal vs anomalous image scores [N] per category, each category's F1-optimal threshold
  ({category: image score}) marked (log axis when the scores span more than 1.5 decades)."""
  n = len(dataset.class_names)
  cols = min(3, n)
  rows = (n + cols - 1) // cols
  fig = plots.figure(4.2 * cols, 3.2 * rows)
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  for ci, name in enumerate(dataset.class_names):
    ax = axes[ci]
    sel = dataset.test_classes == ci
    labels = dataset.test_labels[sel]
    values = scores[sel].astype(np.float64)
    threshold = f1_thresholds[name]
    log = values.min() > 0 and values.max() / values.min() > 10 ** 1.5
    edges = (np.geomspace(values.min(), values.max(), 31) if log
             else np.linspace(values.min(), values.max() + (values.max() == values.min()), 31))
    for k, (group, colour) in enumerate((("normal", plots.PALETTE[0]), ("anomalous", plots.PALETTE[1]))):
      v = values[labels == k]
      if v.size:
        ax.hist(v, edges, weights=np.full(v.size, 1.0 / v.size), color=colour, alpha=0.55,
                edgecolor=colour, label=f"{group} (n={v.size})")
    if threshold is not None and np.isfinite(threshold):
      ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2,
                 label=f"F1-optimal threshold {threshold:.3g}")
    if log:
      ax.set_xscale("log")
    ax.set_title(f"{name}: image scores", fontsize=10)
    ax.set_xlabel("image score" + (" (log scale)" if log else ""), fontsize=9)
    ax.set_ylabel("fraction of the group's images", fontsize=9)
    plots.legend(ax, loc="upper right")
  for ax in axes[n:]:
    ax.set_axis_off()
  return fig


def roc_pr_figure(curves: dict, pooled: Metrics):
  """ROC and PR curves of all test images pooled ({"image_curves"/"pixel_curves": fpr, tpr,
  precision, recall}), labelled with the `pooled` AUROC and AP; image level, and pixel level
  when masks exist."""
  levels = [level for level in ("image", "pixel") if curves.get(f"{level}_curves") is not None]
  if not levels:
    return None
  fig = plots.figure(9.0, 4.2)
  roc, pr = fig.subplots(1, 2)
  for level, colour in zip(levels, plots.PALETTE):
    c = curves[f"{level}_curves"]
    roc.plot(c["fpr"], c["tpr"], color=colour, linewidth=1.8,
             label=f"{level}: AUROC {format_percent(getattr(pooled, f'{level}_auroc'))}%")
    pr.step(np.r_[0.0, c["recall"]], np.r_[c["precision"][0], c["precision"]], where="post",
            color=colour, linewidth=1.8,
            label=f"{level}: AP {format_percent(getattr(pooled, f'{level}_ap'))}%")
  roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
  for ax, title, xlabel, ylabel, loc in (
      (roc, "ROC (all test images)", "false positive rate", "true positive rate", "lower right"),
      (pr, "Precision-recall (all test images)", "recall", "precision", "lower left")):
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    plots.legend(ax, loc=loc)
  return fig


def write_report(eval_dir: str, result: Evaluation, dataset: AnomalyDataset, heatmaps: np.ndarray,
                 scores: np.ndarray, curves: dict, num_heatmaps: int = 12,
                 grid_columns: int = 8, decision_thresholds: dict | None = None,
                 context: dict | None = None) -> list[str]:
  """Writes every file listed in the module docstring from the evaluation, its test images'
  heatmaps [N,H,W] and image scores [N] and the pooled `curves` (roc_pr_figure); returns the
  paths. `decision_thresholds`: see `write_scores_csv`; `context`: {"model": ..., "data": ...}
  in words for the page's header. A page that cannot be written is one warning line; every
  other file is written."""
  files.makedirs(eval_dir)
  written = []

  def path(name):
    written.append(os.path.join(eval_dir, name))
    return written[-1]

  files.write_json(path("metrics.json"), result.to_json())
  files.write_text(path("metrics.md"), metrics_markdown(result))
  write_scores_csv(path("scores.csv"), result, decision_thresholds)
  scales = plots.heat_scales(dataset.test_classes, heatmaps)  # one per category, computed once
  f1_thresholds = result.f1_thresholds()
  for ci, name in enumerate(dataset.class_names):
    plots.save(category_grid(dataset, heatmaps, scores, ci, f1_thresholds[name], grid_columns,
                             scales.get(ci)),
               path(f"grid_{safe_name(name)}.png"))
  plots.save(histogram_figure(dataset, scores, f1_thresholds), path("score_histogram.png"))
  figure = roc_pr_figure(curves, result.pooled)
  if figure is not None:
    plots.save(figure, path("roc_pr.png"))
  # Always: with num_heatmaps = 0 it leaves an empty folder, no stale pictures of an earlier run.
  write_heatmaps(os.path.join(eval_dir, "heatmaps"), dataset, heatmaps, scores, num_heatmaps,
                 scales)
  links = [os.path.basename(p) for p in written] + ["heatmaps/"]
  report_path = os.path.join(eval_dir, "report.html")
  if page.write_safely(report_path, lambda: page.evaluation_page(
      result, dataset, heatmaps, scores, scales=scales, decision_thresholds=decision_thresholds,
      context=context, links=links)):
    written.append(report_path)
  return written


def write_unlabeled_report(out_dir: str, rows: list[dict], images: np.ndarray,
                           heatmaps: np.ndarray, decision: calibration.Decision,
                           flags=None) -> None:
  """scores.csv, a heatmap panel per image (the predicted defect outlined) and, with a pixel
  threshold, the predicted defects at each file's size: masks/<panel name>_mask.png (0 or 255:
  pixels above the pixel threshold, of the heatmap enlarged to the file's width x height with
  `maps.resize_map`) and regions.json ({"images": [{path, width, height, mask, regions}]},
  `fmjax.decide.regions`). scores.csv has per image: path, category, width, height (the
  file's), score, scored_with, threshold, threshold_kind, decision, normalised_score (empty
  without a calibrated scale), mask (its file, relative to `out_dir`) and num_regions.
  `rows` are dicts with path, category, score and optionally scored_with, normalised_score,
  width and height (default: the scored image's); `flags` [M] bool are the decisions (None:
  undecided)."""
  fresh_dir(os.path.join(out_dir, "heatmaps"))
  fresh_dir(os.path.join(out_dir, "masks"))
  flags = [None] * len(rows) if flags is None else flags
  words = ["" if f is None else ("anomalous" if f else "normal") for f in flags]
  table = [["path", "category", "width", "height", "score", "scored_with", "threshold",
            "threshold_kind", "decision", "normalised_score", "mask", "num_regions"]]
  found = []
  for i, (r, word) in enumerate(zip(rows, words)):
    h, w = r.get("height", heatmaps[i].shape[0]), r.get("width", heatmaps[i].shape[1])
    mask_file, count = "", ""
    if np.isfinite(decision.pixel_threshold):
      mask, described = regions.at_file_size(heatmaps[i], h, w, decision.pixel_threshold,
                                             decision.pixel_scale)
      mask_file = os.path.join("masks", f"{_panel_name(i, r['path'])}_mask.png")
      files.write_bytes(os.path.join(out_dir, mask_file), _png(mask.astype(np.uint8) * 255))
      found.append({"path": r["path"], "width": w, "height": h, "mask": mask_file,
                    "regions": described})
      count = len(described)
    table.append([r["path"], r["category"], w, h, f"{r['score']:.8g}",
                  r.get("scored_with", "full"),
                  f"{decision.threshold:.8g}" if decision.known else "", decision.kind, word,
                  _number(r.get("normalised_score")), mask_file, count])
  files.write_text(os.path.join(out_dir, "scores.csv"), files.csv_text(table))
  regions_path = os.path.join(out_dir, "regions.json")
  if found:
    files.write_json(regions_path, {"pixel_threshold": decision.pixel_threshold, "images": found})
  elif files.exists(regions_path):
    files.remove(regions_path)  # no stale regions of an earlier, calibrated scoring
  scales = plots.heat_scales([r["category"] for r in rows], heatmaps)
  pixel = decision.pixel_threshold
  for i, (r, word) in enumerate(zip(rows, words)):
    title = (f"{os.path.basename(r['path'])[:40]}: score {r['score']:.4g} "
             f"({word or 'no threshold'})")
    predicted = heatmaps[i] > pixel if np.isfinite(pixel) else None
    plots.save(heatmap_figure(images[i], heatmaps[i], scales[r["category"]], title,
                              predicted=predicted),
               os.path.join(out_dir, "heatmaps", f"{_panel_name(i, r['path'])}.png"))


def _panel_name(i: int, path: str) -> str:
  """<5-digit index>_<the file's stem, made safe>: one image's pictures in a scored folder."""
  return f"{i:05d}_{safe_name(os.path.splitext(os.path.basename(path))[0])}"


def _png(array: np.ndarray) -> bytes:
  """A uint8 [H,W] array as PNG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _number(value: float | None) -> str:
  """A CSV cell: the value to 6 digits, or empty for None."""
  return "" if value is None else f"{value:.6g}"


def safe_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def summary_lines(result: Evaluation) -> list[str]:
  """The table printed at the end of an evaluation."""
  keys = present_columns([result.pooled, result.mean])
  lines = ["category        " + " ".join(f"{n:>8s}" for _, n in keys)]
  for name, m in list(result.per_category.items()) + [("Mean", result.mean)]:
    lines.append(f"{name[:15]:15s} " +
                 " ".join(f"{format_percent(getattr(m, k)):>8s}" for k, _ in keys))
  s = result.settings
  lines.append(f"{methods.scorer(s.method).title}: {scorer_settings(s)}; "
               f"step {s.checkpoint_step}; {s.images_per_s:.2f} images/s")
  per_category = {} if result.calibrated is None else result.calibrated.per_category
  for name, c in per_category.items():
    for k, row in c.rates.items():
      lines.append(f"{name}: threshold {row.threshold:.4g} calibrated on {c.num_held_out} "
                   f"held-out normals at {100 * float(k):g}% false alarms"
                   f"{'' if row.resolved else ' (unresolved: their maximum)'} -> on the test "
                   f"split {format_percent(row.false_alarm_rate)}% false alarms, "
                   f"{format_percent(row.recall)}% recall")
  c = result.cascade
  if c is not None:
    lines.append(f"cascade (K={c.num_seeds}, T={c.num_times} first): {c.rescored} of "
                 f"{c.images} images rescored at full cost; agreement with full scoring "
                 f"{format_percent(c.agreement)}%; {c.speedup:.2f}x the full images/s")
  return lines

