"""Report pieces: grid selection, contours, charts, and the markdown table."""

import numpy as np

from fmjax import plots, report


def test_grid_selection_takes_best_and_worst_of_each_kind():
  scores = np.array([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4])
  labels = np.array([0, 1, 1, 0, 1, 0, 1, 0])
  picks = dict(report.grid_selection(scores, labels, columns=6))
  # anomalous by score: 1 (0.9), 4 (0.8), 6 (0.7), 2 (0.5); normal: 7 (0.4), 3 (0.3), 5 (0.2), 0 (0.1)
  assert picks == {1: "best detected", 4: "best detected", 2: "hardest defect",
                   7: "highest normal", 0: "lowest normal", 6: "hardest defect"}
  only_normal = report.grid_selection(scores[labels == 0], labels[labels == 0], columns=3)
  assert len(only_normal) == 3 and {w for _, w in only_normal} <= {"highest normal", "lowest normal"}


def test_outline_is_the_ring_just_outside_the_mask():
  mask = np.zeros((7, 7), np.uint8)
  mask[3, 3] = 1
  ring = report._outline(mask)
  assert ring.sum() == 8 and not ring[3, 3] and ring[2:5, 2:5].sum() == 8
  edge = np.zeros((4, 4), np.uint8)
  edge[0, 0] = 1  # no wrap-around to the far side
  assert report._outline(edge).sum() == 3 and not report._outline(edge)[3, 3]


def test_charts_draw_each_series_in_its_colour():
  im = plots.line_chart([("a", [0, 1], [0, 1]), ("b", [0, 1], [1, 0])], "t", "x", "y",
                        xlim=(0, 1), ylim=(0, 1), size=(300, 240))
  assert im.size == (300, 240)
  colours = {tuple(c) for c in np.asarray(im).reshape(-1, 3)}
  assert plots.PALETTE[0] in colours and plots.PALETTE[1] in colours
  hist = plots.histogram_chart([("n", [1, 2, 2, 3]), ("a", [5, 6])], "h", "score", threshold=4.0)
  assert hist.size == (440, 320)
  log = plots.line_chart([("s", [1, 10, 100], [0.5, 0.7, 0.9])], "t", "x", "y", xlog=True, markers=True)
  assert log.size == (440, 360)


def test_metrics_table_rows_and_dashes_for_undefined():
  result = {"per_category": {"a": {"image_auroc": 0.9876, "image_ap": 1.0, "image_f1_max": 0.5}},
            "mean": {"image_auroc": 0.9876, "image_ap": 1.0, "image_f1_max": float("nan")}}
  lines = report.metrics_table(result).splitlines()
  assert lines[0] == "| Category | I-AUROC | I-AP | I-F1max |"
  assert lines[2] == "| a | 98.8 | 100.0 | 50.0 |"
  assert lines[3] == "| **Mean** | 98.8 | 100.0 | - |"
