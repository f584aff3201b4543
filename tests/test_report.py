"""Report pieces: grid selection, heatmap overlays, the matplotlib figures, the markdown table."""

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import LogNorm, Normalize
from PIL import Image

from fmjax.report import metrics, writer as report
from fmjax.core import plots
from fmjax.data.synthetic import make_synthetic_dataset


def test_grid_selection_takes_best_and_worst_of_each_kind():
  scores = np.array([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4])
  labels = np.array([0, 1, 1, 0, 1, 0, 1, 0])
  picks = dict(report.grid_selection(scores, labels, columns=6))
  # anomalous by score: 1 (0.9), 4 (0.8), 6 (0.7), 2 (0.5); normal: 7 (0.4), 3 (0.3), 5 (0.2), 0 (0.1)
  assert picks == {1: "best detected", 4: "best detected", 2: "hardest defect",
                   7: "highest normal", 0: "lowest normal", 6: "hardest defect"}
  only_normal = report.grid_selection(scores[labels == 0], labels[labels == 0], columns=3)
  assert len(only_normal) == 3 and {w for _, w in only_normal} <= {"highest normal", "lowest normal"}


def _png(fig, path):
  plots.save(fig, str(path))
  with Image.open(path) as im:
    im.verify()  # a complete, valid PNG
  with Image.open(path) as im:
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB"))


def _top_colour():
  return np.array(matplotlib.colormaps[plots.CMAP](1.0)[:3])


def test_heat_scale_is_median_to_high_quantile_log_when_heavy_tailed():
  linear = plots.heat_scale(np.arange(1001, dtype=np.float64))
  assert (linear.vmin, linear.vmax) == (500.0, 999.0) and not isinstance(linear, LogNorm)
  assert linear(749.5) == pytest.approx(0.5)
  heavy = plots.heat_scale(10.0 ** np.linspace(-3, 3, 1001))  # median 1, 99.9th pct ~ 986
  assert isinstance(heavy, LogNorm) and heavy.vmin == pytest.approx(1.0)
  assert heavy(np.sqrt(heavy.vmax)) == pytest.approx(0.5)  # halfway in log10
  assert "log colour scale" in plots.describe_scale(heavy)
  flat = plots.heat_scale(np.full(10, 3.0))  # flat maps still give a usable scale
  assert flat.vmin == 3.0 and flat.vmax > flat.vmin


def test_overlay_keeps_the_image_below_the_scale_and_is_hottest_at_the_peak():
  rng = np.random.default_rng(0)
  image = rng.integers(60, 200, (24, 24, 3), dtype=np.uint8)
  yy, xx = np.mgrid[:24, :24]
  heat = np.exp(-((yy - 7) ** 2 + (xx - 17) ** 2) / 8.0) + 0.01 * rng.random((24, 24))
  vmin, vmax = 0.3, float(heat.max())
  out = plots.overlay(image, heat, Normalize(vmin, vmax))
  cold = heat <= vmin
  np.testing.assert_array_equal(out[cold], image[cold])  # no colour at or below vmin
  a = plots.OVERLAY_ALPHA
  expected = np.round(255 * ((1 - a) * image[7, 17] / 255 + a * _top_colour()))
  np.testing.assert_array_equal(out[7, 17], expected)
  distance = np.linalg.norm(out / 255.0 - _top_colour(), axis=-1)  # nearness to the top colour
  assert np.unravel_index(np.argmin(distance), distance.shape) == (7, 17)


def test_heatmap_figure_png_is_hottest_where_the_heatmap_peaks(tmp_path):
  """In the written PNG, the overlay panel's pixel nearest the top colour lies over the peak."""
  image = np.full((16, 16, 3), 128, np.uint8)
  heat = np.zeros((16, 16))
  heat[4, 11], heat[12, 2] = 1.0, 0.5
  fig = report.heatmap_figure(image, heat, Normalize(0.0, 1.0), "known heatmap")
  png = _png(fig, tmp_path / "panel.png")
  assert png.shape[:2] == plots.pixel_size(fig)[::-1]
  x0, y0, x1, y1 = fig.axes[1].get_window_extent().extents  # the overlay panel, origin bottom-left
  h = png.shape[0]
  top, left = int(round(h - y1)), int(round(x0))
  panel = png[top:int(round(h - y0)), left:int(round(x1))]
  a = plots.OVERLAY_ALPHA
  hottest = (1 - a) * 128 / 255 + a * _top_colour()
  distance = np.linalg.norm(panel / 255.0 - hottest, axis=-1)
  r, c = np.unravel_index(np.argmin(distance), distance.shape)
  assert distance[r, c] < 0.02
  # The pixel's place in image coordinates (the panel spans the 16x16 image exactly).
  assert (int(16 * (r + 0.5) / (h - y0 - top)), int(16 * (c + 0.5) / (x1 - left))) == (4, 11)


def test_report_figures_are_valid_pngs_of_their_stated_size(tmp_path):
  dataset = make_synthetic_dataset(image_size=16, categories=("weave", "tiles"), num_train=4,
                                   num_test_normal=3, num_test_anomalous=3, seed=0)
  rng = np.random.default_rng(1)
  heatmaps = rng.random(dataset.test_masks.shape) + 2.0 * dataset.test_masks
  scores = heatmaps.reshape(len(heatmaps), -1).max(axis=1)
  curves = {"image_curves": metrics.binary_curves(scores, dataset.test_labels, True)["curves"],
            "pixel_curves": metrics.binary_curves(heatmaps.ravel(), dataset.test_masks.ravel(),
                                                  True)["curves"]}
  result = {"image_auroc": 0.9, "image_ap": 0.8, "pixel_auroc": 0.95, "pixel_ap": 0.5,
            "per_category": {n: {"image_f1_threshold": 2.0} for n in dataset.class_names}}
  widths = {}
  for columns in (3, 6):
    fig = report.category_grid(dataset, heatmaps, scores, 0, 2.0, columns)
    png = _png(fig, tmp_path / f"grid{columns}.png")
    assert png.shape[:2] == plots.pixel_size(fig)[::-1]
    widths[columns] = png.shape[1]
  assert widths[6] > widths[3] > 300  # a column per image
  for name, fig in (("hist", report.histogram_figure(dataset, scores, result)),
                    ("roc", report.roc_pr_figure(curves, result))):
    png = _png(fig, tmp_path / f"{name}.png")
    assert png.shape[:2] == plots.pixel_size(fig)[::-1] and png.shape[1] >= 800
    assert png.std() > 10  # something is drawn
  assert report.roc_pr_figure({}, result) is None  # nothing to draw without curves


def test_metrics_table_rows_and_dashes_for_undefined():
  result = {"per_category": {"a": {"image_auroc": 0.9876, "image_ap": 1.0, "image_f1_max": 0.5}},
            "mean": {"image_auroc": 0.9876, "image_ap": 1.0, "image_f1_max": float("nan")}}
  lines = report.metrics_table(result).splitlines()
  assert lines[0] == "| Category | I-AUROC | I-AP | I-F1max |"
  assert lines[2] == "| a | 98.8 | 100.0 | 50.0 |"
  assert lines[3] == "| **Mean** | 98.8 | 100.0 | - |"
