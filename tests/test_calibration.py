"""Thresholds from held-out normal images: the split, the order statistic, the report, score mode."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from fmjax.score.scoring import CALIBRATION_KEYS
from fmjax.score.session import ScoringSession
from fmjax.decide import calibration, decisions
from fmjax import main as fm_main
from fmjax.data import hold_out_normals, load_dataset, pipeline
from fmjax.data.dataset import held_out_count
from fmjax.data.synthetic import make_synthetic_dataset
from fmjax.core.errors import CheckpointMismatchError, ConfigError, CorruptFileError

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
  assert out.threshold == _oracle_threshold(list(scores), rate)
  assert out.allowed == int(np.floor(rate * n + 1e-9))
  assert np.sum(calibration.flagged(scores, out.threshold)) == out.allowed
  assert out.resolved == (n * rate >= 1)
  if not out.resolved:  # too few images for the rate: the most conservative choice
    assert out.threshold == scores.max() and out.allowed == 0


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
    row = result.calibrated.per_category[name].rates["0.5"]
    test = dataset.test_classes == ci
    test_scores = np.array([i.score for i in result.images])[test]
    labels = dataset.test_labels[test]
    t = entry["image"]["0.5"]["threshold"]
    assert row.false_alarm_rate == np.mean(test_scores[labels == 0] > t)
    assert row.recall == np.mean(test_scores[labels == 1] > t)
  with open(tmp_path / "eval" / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  for r, img in zip(rows, result.images):
    entry = saved["categories"][r["category"]]
    t = entry["image"]["0.5"]["threshold"]
    expected = "anomalous" if img.score > t else "normal"
    assert r["calibrated_decision"] == img.calibrated_decision == expected
    # The normalised score: 0 at the lowest held-out score, 0.5 at the threshold, clipped.
    low = entry["image_low"]
    assert low == pytest.approx(min(scores[dataset.val_classes == dataset.class_names.index(
        r["category"])]), rel=1e-6)
    normalised = min(max(0.5 * (img.score - low) / (t - low), 0.0), 1.0)
    assert float(r["normalised_score"]) == pytest.approx(normalised, abs=1e-5)
    assert (float(r["normalised_score"]) > 0.5) == (expected == "anomalous")
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
  low = saved["categories"]["weave"]["image_low"]
  for row in scored["images"]:
    assert row["normalised_score"] == pytest.approx(
        min(max(0.5 * (row["score"] - low) / (t - low), 0.0), 1.0), abs=1e-9)
  # Masks and regions: the pixels of each map above the calibrated pixel threshold.
  (out_dir,) = (tmp_path / "scores").iterdir()
  with open(out_dir / "scores.csv") as f:
    table = list(csv.DictReader(f))
  pixel_t = saved["categories"]["weave"]["pixel"]["0.5"]["threshold"]
  described = json.loads((out_dir / "regions.json").read_text())
  assert described["pixel_threshold"] == pixel_t
  heat_new, _, _ = session.score(dataset.test_images[:4], np.zeros(4, int))
  for i, (row, entry) in enumerate(zip(table, described["images"])):
    assert (int(row["width"]), int(row["height"])) == (16, 16) and row["mask"] == entry["mask"]
    mask = np.asarray(Image.open(out_dir / row["mask"]))
    np.testing.assert_array_equal(mask, np.where(heat_new[i] > pixel_t, 255, 0))
    assert int(row["num_regions"]) == len(entry["regions"])
    assert sum(r["area"] for r in entry["regions"]) == int((heat_new[i] > pixel_t).sum())
  keen = fm_main.run(tiny_config(**{"data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5",
                                    "data.score_dir": str(folder), "data.score_category": "weave",
                                    "evaluate.sensitivity": 0.9}), str(tmp_path), "score")
  assert keen["threshold"] == pytest.approx(low + 0.2 * (t - low))
  assert [r["score"] for r in keen["images"]] == [r["score"] for r in scored["images"]]
  # An evaluation at that sensitivity decides at the moved threshold, and says so.
  moved_eval = fm_main.run(tiny_config(**{"data.val_fraction": 0.25,
                                          "calibrate.false_alarm_rates": "0.5,0.01",
                                          "evaluate.sensitivity": 0.9}), str(tmp_path), "evaluate")
  assert moved_eval.settings.sensitivity == 0.9
  with open(tmp_path / "eval" / "scores.csv") as f:
    for r in csv.DictReader(f):
      entry = saved["categories"][r["category"]]
      lo, t = entry["image_low"], entry["image"]["0.5"]["threshold"]
      assert float(r["calibrated_threshold"]) == pytest.approx(lo + 0.2 * (t - lo), rel=1e-6)
      flagged = float(r["score"]) > lo + 0.2 * (t - lo)
      assert r["calibrated_decision"] == ("anomalous" if flagged else "normal")
      assert (float(r["normalised_score"]) > 0.5) == flagged
  assert "evaluate.sensitivity = 0.9" in (tmp_path / "eval" / "metrics.md").read_text()

  # A calibration for another held-out split is refused, and so is one with nothing held out.
  with pytest.raises(CheckpointMismatchError, match="val_fraction=0.25"):
    fm_main.run(tiny_config(**{"data.val_fraction": 0.5}), str(tmp_path), "calibrate")
  with pytest.raises(ConfigError, match="nothing to calibrate on"):
    fm_main.run(tiny_config(**{"data.val_fraction": 0.0}), str(tmp_path), "calibrate")

  # A corrupt or hand-edited calibration.json stops score mode with one line naming the file
  # and what is wrong (fmjax.main prints a UserError as that line, without a traceback).
  path = tmp_path / "calibration.json"
  text = path.read_text()
  score_config = tiny_config(**{"data.val_fraction": 0.25, "data.score_dir": str(folder),
                                "data.score_category": "weave"})
  for corrupt, expected in [
      (text[:len(text) // 2], "is not valid JSON"),
      (text.replace(f'"threshold": {saved["categories"]["weave"]["image"]["0.5"]["threshold"]!r}',
                    '"threshold": "abc"'),
       'categories["weave"]["image"]["0.5"]["threshold"] = "abc", not a number'),
      (json.dumps({**saved, "rates": "0.01"}), 'rates = "0.01", not a list of numbers')]:
    assert corrupt != text
    path.write_text(corrupt)
    with pytest.raises(CorruptFileError) as e:
      fm_main.run(score_config, str(tmp_path), "score")
    assert str(e.value).startswith(f"{path} ") and expected in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and str(e.value).endswith("run --mode=calibrate to write it again")


# calibration.json as the code before the Calibration record wrote it (one category, a cascade).
OLD_CALIBRATION_JSON = (
    '{"settings": {"checkpoint_step": 4, "method": "flow_mismatch", "method_options": {"num_seeds": '
    '2, "num_times": 2, "aggregator": "min", "quantile": null}, "use_ema": true, "seed": 0, '
    '"val_fraction": 0.25}, "rates": [0.5, 0.01], "categories": {"weave": {"num_held_out": 3, '
    '"image": {"0.5": {"threshold": 6.765064239501953, "allowed": 1, "count": 3, "resolved": true}, '
    '"0.01": {"threshold": 9.114055633544922, "allowed": 0, "count": 3, "resolved": false}}, '
    '"pixel": {"0.5": {"threshold": 0.5817374587059021, "allowed": 384, "count": 768, "resolved": '
    'true}, "0.01": {"threshold": 2.571568727493286, "allowed": 7, "count": 768, "resolved": '
    'true}}}}, "cascade": {"num_seeds": 1, "num_times": 1, "margin": 0.1, "categories": {"weave": '
    '{"low": 9.065896638064748, "high": 12.476534842356592, "log_ratio_min": -0.5120779100860217, '
    '"log_ratio_max": -0.39274799396290144, "margin": 0.1, "threshold": 6.765064239501953}}}}')


def test_calibration_json_of_earlier_runs_reads_and_writes_back_identically(tmp_path):
  old = json.loads(OLD_CALIBRATION_JSON)
  cal = calibration.Calibration.from_json(old)
  assert json.dumps(cal.to_json(), indent=1) == json.dumps(old, indent=1)  # same keys, same order
  calibration.save(str(tmp_path), cal)
  assert (tmp_path / "calibration.json").read_text() == json.dumps(old, indent=1)
  # Read back from the workdir for the scorer it was made with; refused for another one.
  settings = old["settings"]
  loaded, why = calibration.load(str(tmp_path), settings, CALIBRATION_KEYS)
  assert loaded == cal and why == ""
  loaded, why = calibration.load(str(tmp_path), {**settings, "seed": 1}, CALIBRATION_KEYS)
  assert loaded is None and "seed=0; now seed=1" in why
  # The record's attributes are the file's entries.
  assert cal.rates == (0.5, 0.01) and cal.categories["weave"].num_held_out == 3
  assert cal.threshold("weave") == 6.765064239501953
  assert cal.threshold("weave", 0.01, level="pixel") == 2.571568727493286
  assert np.isnan(cal.threshold("tiles")) and not cal.categories["weave"].image["0.01"].resolved
  assert cal.cascade.bands["weave"]["low"] == 9.065896638064748 and cal.cascade.margin == 0.1
  rule = decisions.decision_rule(str(tmp_path), "weave", settings)
  assert (rule.threshold, rule.strict, rule.pixel_threshold) == (6.765064239501953, True,
                                                                  0.5817374587059021)


def _replace(obj, path, value):
  """A copy of the JSON `obj` with the entry at `path` (a list of keys) replaced by `value`, or
  removed when `value` is _REMOVE."""
  obj = json.loads(json.dumps(obj))
  node = obj
  for key in path[:-1]:
    node = node[key]
  if value is _REMOVE:
    del node[path[-1]]
  else:
    node[path[-1]] = value
  return obj


_REMOVE = object()


@pytest.mark.parametrize("path,value,expected", [
    (["categories", "weave", "image", "0.5", "threshold"], "abc",
     'has categories["weave"]["image"]["0.5"]["threshold"] = "abc", not a number'),
    (["rates"], "0.01", 'has rates = "0.01", not a list of numbers'),
    (["rates"], [0.01, 5], "has rates = [0.01, 5], not a list of rates in (0, 1)"),
    (["categories", "weave", "num_held_out"], _REMOVE, 'has no categories["weave"]["num_held_out"]'),
    (["categories", "weave", "pixel", "0.01"], _REMOVE, 'has no categories["weave"]["pixel"]["0.01"]'),
    (["categories", "weave", "image", "0.5", "resolved"], "yes",
     'has categories["weave"]["image"]["0.5"]["resolved"] = "yes", not true or false'),
    (["settings"], [], "has settings = [], not a JSON object"),
    (["cascade", "categories", "weave", "high"], None,
     'has cascade["categories"]["weave"]["high"] = null, not a number'),
])
def test_a_corrupt_calibration_json_is_one_line_naming_the_entry(tmp_path, path, value, expected):
  file = tmp_path / "calibration.json"
  old = json.loads(OLD_CALIBRATION_JSON)
  file.write_text(json.dumps(_replace(old, path, value), indent=1))
  with pytest.raises(CorruptFileError) as e:
    calibration.load(str(tmp_path), old["settings"], CALIBRATION_KEYS)
  assert str(e.value) == f"{file} {expected}; run --mode=calibrate to write it again"
  file.write_text(OLD_CALIBRATION_JSON[:-40])  # cut short
  with pytest.raises(CorruptFileError, match=r"calibration.json is not valid JSON \(.* at line 1 "):
    calibration.load(str(tmp_path), old["settings"], CALIBRATION_KEYS)
