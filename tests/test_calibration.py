"""Thresholds from held-out normal images: the split, the order statistic, the report, score mode."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from fmjax.score.session import ScoringSession
from fmjax.decide import calibration
from fmjax import main as fm_main
from fmjax.data import hold_out_normals, load_dataset, pipeline
from fmjax.data.dataset import held_out_count
from fmjax.data.synthetic import make_synthetic_dataset
from fmjax.core.errors import CheckpointMismatchError, ConfigError

from conftest import tiny_config


def _oracle_threshold(scores, rate):
  """The smallest held-out score t with at most floor(rate * n) scores above it."""
  allowed = int(np.floor(rate * len(scores) + 1e-9))
  return min(t for t in scores if np.sum(np.asarray(scores) > t) <= allowed)


@pytest.mark.parametrize("n,rate", [(250, 0.01), (100, 0.01), (99, 0.01), (50, 0.01), (3, 0.5),
                                    (1000, 0.05), (7, 0.3)])
def test_threshold_is_the_exact_order_statistic(n, rate):
  scores = np.random.default_rng(n).normal(size=n) ** 2
  out = calibration.threshold_at(scores, rate)
  assert out["threshold"] == _oracle_threshold(list(scores), rate)
  assert out["allowed"] == int(np.floor(rate * n + 1e-9))
  assert np.sum(calibration.flagged(scores, out["threshold"])) == out["allowed"]
  assert out["resolved"] == (n * rate >= 1)
  if not out["resolved"]:  # too few images for the rate: the most conservative choice
    assert out["threshold"] == scores.max() and out["allowed"] == 0


def test_rates_measured_on_a_labelled_split():
  scores = np.array([0.1, 0.5, 0.9, 2.0, 3.0, 0.4, 5.0])
  labels = np.array([0, 0, 0, 0, 1, 1, 1])
  r = calibration.test_rates(scores, labels, 0.9)  # flagged: above 0.9
  assert r == {"false_alarm_rate": 0.25, "recall": 2 / 3, "num_normal": 4, "num_anomalous": 3}
  assert calibration.test_rates(scores, labels, 0.9, inclusive=True)["false_alarm_rate"] == 0.5
  assert np.isnan(calibration.test_rates(scores[:4], labels[:4], 0.9)["recall"])
  with pytest.raises(ConfigError, match="false_alarm_rates"):
    calibration.parse_rates("0.01,1.5")
  assert calibration.parse_rates("0.01, 0.05") == [0.01, 0.05]


def test_hold_out_is_per_category_disjoint_and_depends_on_pixels_only():
  data = make_synthetic_dataset(image_size=8, num_train=23, num_test_normal=1, num_test_anomalous=1)
  split = hold_out_normals(data, 0.1)
  for c in range(3):
    assert (split.val_classes == c).sum() == held_out_count(23, 0.1) == 2
  assert len(split.train_images) + len(split.val_images) == len(data.train_images)
  key = lambda im: im.tobytes()
  held = {key(im) for im in split.val_images}
  assert not held & {key(im) for im in split.train_images}
  # The same images in another order hold out the same ones.
  perm = np.random.default_rng(0).permutation(len(data.train_images))
  shuffled = hold_out_normals(dataclasses.replace(
      data, train_images=data.train_images[perm], train_classes=data.train_classes[perm]), 0.1)
  assert {key(im) for im in shuffled.val_images} == held
  assert held_out_count(1, 0.5) == 0 and held_out_count(2, 0.9) == 1 and held_out_count(40, 0) == 0


def test_training_batches_never_hold_a_held_out_image(tmp_path, monkeypatch):
  config = tiny_config(**{"data.val_fraction": 0.25, "train.num_steps": 6})
  seen = []
  original = pipeline.train_iterator

  def spy(*args, **kwargs):
    for batch in original(*args, **kwargs):
      seen.extend(im.tobytes() for im in np.asarray(batch["image"]))
      yield batch
  monkeypatch.setattr(pipeline, "train_iterator", lambda *a, **k: _Iterator(spy(*a, **k), original(*a, **k)))
  fm_main.run(config, str(tmp_path), "train")
  dataset = load_dataset(config.data)
  held = {im.tobytes() for im in dataset.val_images}
  assert len(held) == 9 and len(seen) >= 6 * 8
  assert not held & set(seen)
  assert {im.tobytes() for im in dataset.train_images} >= set(seen)


class _Iterator:
  """A recording iterator that keeps grain's get_state (from a twin iterator) for checkpoints."""

  def __init__(self, recording, twin):
    self._recording, self._twin = recording, twin

  def __next__(self):
    next(self._twin)
    return next(self._recording)

  def __iter__(self):
    return self

  def get_state(self):
    return self._twin.get_state()


def test_calibrate_report_and_score_decide_with_held_out_thresholds(tmp_path):
  config = tiny_config(**{"data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5,0.01"})
  result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  saved = json.loads((tmp_path / "calibration.json").read_text())
  assert saved["rates"] == [0.5, 0.01] and saved["settings"]["val_fraction"] == 0.25

  # Independently: score the held-out images and take the order statistics.
  dataset = load_dataset(config.data)
  session = ScoringSession.load(config, str(tmp_path), dataset.class_names)
  step = session.step
  heat, scores, _ = session.score(dataset.val_images, dataset.val_classes)
  for ci, name in enumerate(dataset.class_names):
    sel = dataset.val_classes == ci
    entry = saved["categories"][name]
    assert entry["num_held_out"] == 3
    assert entry["image"]["0.5"]["threshold"] == pytest.approx(_oracle_threshold(list(scores[sel]), 0.5), rel=1e-6)
    assert entry["image"]["0.01"]["threshold"] == pytest.approx(scores[sel].max(), rel=1e-6)
    assert not entry["image"]["0.01"]["resolved"]
    assert entry["pixel"]["0.01"]["threshold"] == pytest.approx(
        _oracle_threshold(list(heat[sel].ravel()), 0.01), rel=1e-6)
    # The report: what each calibrated threshold does on the test split.
    row = result["calibrated"]["per_category"][name]["rates"]["0.5"]
    test = dataset.test_classes == ci
    test_scores = np.array([i["score"] for i in result["images"]])[test]
    labels = dataset.test_labels[test]
    t = entry["image"]["0.5"]["threshold"]
    assert row["false_alarm_rate"] == np.mean(test_scores[labels == 0] > t)
    assert row["recall"] == np.mean(test_scores[labels == 1] > t)
  with open(tmp_path / "eval" / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  for r, img in zip(rows, result["images"]):
    t = saved["categories"][r["category"]]["image"]["0.5"]["threshold"]
    expected = "anomalous" if img["score"] > t else "normal"
    assert r["calibrated_decision"] == img["calibrated_decision"] == expected
  assert "Decisions without test labels" in (tmp_path / "eval" / "metrics.md").read_text()

  # Score mode decides with the calibrated threshold of the first rate (strictly above it).
  folder = tmp_path / "new"
  folder.mkdir()
  for i in range(4):
    Image.fromarray(dataset.test_images[i]).save(folder / f"{i}.png")
  scored = fm_main.run(tiny_config(**{"data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5",
                                      "data.score_dir": str(folder), "data.score_category": "weave"}),
                       str(tmp_path), "score")
  t = saved["categories"]["weave"]["image"]["0.5"]["threshold"]
  assert scored["threshold"] == t and scored["threshold_kind"].startswith("calibrated")

  # A calibration for another held-out split is refused, and so is one with nothing held out.
  with pytest.raises(CheckpointMismatchError, match="val_fraction=0.25"):
    fm_main.run(tiny_config(**{"data.val_fraction": 0.5}), str(tmp_path), "calibrate")
  with pytest.raises(ConfigError, match="nothing to calibrate on"):
    fm_main.run(tiny_config(**{"data.val_fraction": 0.0}), str(tmp_path), "calibrate")
