"""Report pieces: grid selection, heatmap overlays, the matplotlib figures, the markdown table."""

import json

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import LogNorm, Normalize
from PIL import Image

from fmjax.core.errors import CorruptFileError
from fmjax.report import metrics, writer as report
from fmjax.report.records import Evaluation, Metrics
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
  pooled = Metrics(image_auroc=0.9, image_ap=0.8, pixel_auroc=0.95, pixel_ap=0.5)
  f1_thresholds = {n: 2.0 for n in dataset.class_names}
  widths = {}
  for columns in (3, 6):
    fig = report.category_grid(dataset, heatmaps, scores, 0, 2.0, columns)
    png = _png(fig, tmp_path / f"grid{columns}.png")
    assert png.shape[:2] == plots.pixel_size(fig)[::-1]
    widths[columns] = png.shape[1]
  assert widths[6] > widths[3] > 300  # a column per image
  for name, fig in (("hist", report.histogram_figure(dataset, scores, f1_thresholds)),
                    ("roc", report.roc_pr_figure(curves, pooled))):
    png = _png(fig, tmp_path / f"{name}.png")
    assert png.shape[:2] == plots.pixel_size(fig)[::-1] and png.shape[1] >= 800
    assert png.std() > 10  # something is drawn
  assert report.roc_pr_figure({}, pooled) is None  # nothing to draw without curves


def test_metrics_table_rows_and_dashes_for_undefined():
  per_category = {"a": Metrics(image_auroc=0.9876, image_ap=1.0, image_f1_max=0.5)}
  mean = Metrics(image_auroc=0.9876, image_ap=1.0, image_f1_max=float("nan"))
  lines = report.metrics_table(per_category, mean).splitlines()
  assert lines[0] == "| Category | I-AUROC | I-AP | I-F1max |"
  assert lines[2] == "| a | 98.8 | 100.0 | 50.0 |"
  assert lines[3] == "| **Mean** | 98.8 | 100.0 | - |"


# eval/metrics.json as the code before the Evaluation record wrote it: two categories, tiles
# without a calibration (its images have no calibrated decision) and with an undefined PRO (null).
OLD_METRICS_JSON = (
    '{"image_auroc": 0.75, "image_ap": 0.8333333333333333, "image_f1_max": 0.8, '
    '"image_f1_threshold": 8.255825996398926, "pixel_auroc": 0.7763783784108952, "pixel_ap": '
    '0.4145560709110774, "pixel_f1_max": 0.510989010989011, "pixel_f1_threshold": '
    '3.4301226139068604, "pixel_aupro": 0.6322222451940765, "mean": {"image_auroc": 0.875, '
    '"image_ap": 0.9166666666666666, "image_f1_max": 0.9, "pixel_auroc": 0.7763783784108952, '
    '"pixel_ap": 0.4145560709110774, "pixel_f1_max": 0.510989010989011, "pixel_aupro": '
    '0.5671067106710672}, "per_category": {"weave": {"image_auroc": 0.75, "image_ap": '
    '0.8333333333333333, "image_f1_max": 0.8, "image_f1_threshold": 8.255825996398926, '
    '"pixel_auroc": 0.7751060820367752, "pixel_ap": 0.377812992822879, "pixel_f1_max": '
    '0.4615384615384615, "pixel_f1_threshold": 3.4301226139068604, "pixel_aupro": '
    '0.5671067106710672}, "tiles": {"image_auroc": 1.0, "image_ap": 1.0, "image_f1_max": 1.0, '
    '"image_f1_threshold": 11.5, "pixel_auroc": 0.7776506747850152, "pixel_ap": '
    '0.45129914899927587, "pixel_f1_max": 0.5604395604395604, "pixel_f1_threshold": 2.25, '
    '"pixel_aupro": null}}, "settings": {"dataset": "synthetic", "categories": ["weave", '
    '"tiles"], "checkpoint_step": 4, "method": "flow_mismatch", "method_options": {"num_seeds": '
    '2, "num_times": 2, "aggregator": "min", "quantile": null}, "use_ema": true, "seed": 0, '
    '"val_fraction": 0.25, "images_per_s": 85.62031957295011, "num_test_images": 4, '
    '"batch_size": 8, "num_devices": 1}, "images": [{"path": "synthetic://weave/test/good/000", '
    '"category": "weave", "defect": "good", "label": 0, "score": 10.364845275878906, '
    '"calibrated_decision": "anomalous"}, {"path": "synthetic://weave/test/scratch/001", '
    '"category": "weave", "defect": "scratch", "label": 1, "score": 6.5, "calibrated_decision": '
    '"normal"}, {"path": "synthetic://tiles/test/good/000", "category": "tiles", "defect": '
    '"good", "label": 0, "score": 9.75}, {"path": "synthetic://tiles/test/crack/001", '
    '"category": "tiles", "defect": "crack", "label": 1, "score": 12.0}], "cascade": '
    '{"num_seeds": 1, "num_times": 1, "images": 2, "rescored": 1, "agreement": 1.0, '
    '"cheap_images_per_s": 304.1554749818709, "full_images_per_s": 85.62031957295011, '
    '"images_per_s": 76.8008789163084, "speedup": 0.896993602679474, "per_category": {"weave": '
    '{"images": 2, "rescored": 1, "agreement": 1.0, "band": [9.065896638064748, '
    '12.476534842356592]}}}, "calibrated": {"rates": [0.5], "per_category": {"weave": '
    '{"num_held_out": 3, "rates": {"0.5": {"threshold": 6.765064239501953, "resolved": true, '
    '"pixel_threshold": 0.5817374587059021, "false_alarm_rate": 1.0, "recall": 0.0, '
    '"num_normal": 1, "num_anomalous": 1}}, "f1_optimal": {"threshold": 8.255825996398926, '
    '"false_alarm_rate": 1.0, "recall": 0.0, "num_normal": 1, "num_anomalous": 1}}}}}')

# What that code wrote beside it from the same results.
OLD_SCORES_CSV = """path,category,defect,label,score,threshold,decision,calibrated_threshold,calibrated_decision
synthetic://weave/test/good/000,weave,good,0,10.364845,8.255826,anomalous,6.7650642,anomalous
synthetic://weave/test/scratch/001,weave,scratch,1,6.5,8.255826,normal,6.7650642,normal
synthetic://tiles/test/good/000,tiles,good,0,9.75,11.5,normal,,
synthetic://tiles/test/crack/001,tiles,crack,1,12,11.5,anomalous,,
"""
OLD_METRICS_MD_LINES = [
    "Checkpoint step 4; K = 2 seeds, T = 2 times, aggregator min; 4 test images scored at 85.62 "
    "images/s.",
    "| weave | 75.0 | 83.3 | 80.0 | 77.5 | 37.8 | 46.2 | 56.7 |",
    "| tiles | 100.0 | 100.0 | 100.0 | 77.8 | 45.1 | 56.0 | - |",
    "| **Mean** | 87.5 | 91.7 | 90.0 | 77.6 | 41.5 | 51.1 | 56.7 |",
    "All test images pooled into one ranking: I-AUROC 75.0 I-AP 83.3 I-F1max 80.0 P-AUROC 77.6 "
    "P-AP 41.5 P-F1max 51.1 PRO 63.2.",
    "| weave | 3 | 50% false alarms | 6.765 | 100.0 | 0.0 |",
    "| weave | | F1-optimal (tuned on the test labels) | 8.256 | 100.0 | 0.0 |",
    "| weave | 2 | 1 | 100.0 | 9.066 to 12.48 |"]


def test_metrics_json_of_earlier_runs_reads_and_writes_back_identically(tmp_path):
  from fmjax.decide import decisions
  old = json.loads(OLD_METRICS_JSON)
  result = Evaluation.from_json(old)
  assert json.dumps(result.to_json(), indent=1) == json.dumps(old, indent=1)  # same keys and order
  # The record's attributes are the file's entries (null: an undefined metric, NaN).
  assert result.pooled.image_auroc == 0.75 and result.mean.image_f1_threshold is None
  assert np.isnan(result.per_category["tiles"].pixel_aupro)
  assert result.settings.categories == ("weave", "tiles") and result.settings.val_fraction == 0.25
  assert [i.calibrated_decision for i in result.images] == ["anomalous", "normal", None, None]
  assert result.calibrated.first_threshold("weave") == 6.765064239501953
  assert result.calibrated.first_threshold("tiles") is None
  assert result.cascade.per_category["weave"].band == (9.065896638064748, 12.476534842356592)
  # scores.csv and metrics.md from the record are what the earlier code wrote.
  report.write_scores_csv(str(tmp_path / "scores.csv"), result)
  assert (tmp_path / "scores.csv").read_text() == OLD_SCORES_CSV
  markdown = report.metrics_markdown(result).splitlines()
  assert all(line in markdown for line in OLD_METRICS_MD_LINES), markdown
  # An evaluation written before val_fraction was recorded reads and writes back the same.
  older = json.loads(OLD_METRICS_JSON)
  del older["settings"]["val_fraction"]
  assert json.dumps(Evaluation.from_json(older).to_json()) == json.dumps(older)
  # decide/'s reader of the F1-optimal thresholds reads them from the file the record writes.
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "metrics.json").write_text(json.dumps(result.to_json(), indent=1))
  settings = dict(old["settings"])
  assert decisions.stored_threshold(str(tmp_path), "tiles", settings) == 11.5
  assert np.isnan(decisions.stored_threshold(str(tmp_path), "nope", settings))
  (tmp_path / "eval" / "metrics.json").write_text(json.dumps(old)[:-300])  # cut short
  with pytest.raises(CorruptFileError, match=r"metrics.json is not valid JSON .*--mode=evaluate"):
    decisions.stored_threshold(str(tmp_path), "tiles", settings)
