"""Cascade scoring: the band from held-out score pairs, the routing at its edges, end to end."""

import json

import numpy as np
import pytest
from PIL import Image

from fmjax.score.session import ScoringSession
from fmjax.decide import cascade
from fmjax import main as fm_main
from fmjax.data import load_dataset

from conftest import tiny_config


def test_band_is_the_threshold_over_the_extreme_ratios_with_margin():
  cheap = np.array([2.0, 4.0, 1.0, 3.0])
  full = np.array([1.0, 1.0, 0.8, 2.4])  # ratios 0.5, 0.25, 0.8, 0.8
  b = cascade.band(cheap, full, threshold=10.0, margin=0.1)
  assert b["low"] == pytest.approx(10.0 / 0.8 * np.exp(-0.1))  # largest ratio
  assert b["high"] == pytest.approx(10.0 / 0.25 * np.exp(0.1))  # smallest ratio
  with pytest.raises(ValueError, match="positive"):
    cascade.band(np.array([1.0, -1.0]), np.array([1.0, 1.0]), 1.0, 0.0)


def test_inside_the_calibrated_ratios_the_cascade_decides_like_full_scoring():
  rng = np.random.default_rng(0)
  held_cheap = rng.uniform(1, 100, 200)
  held_full = held_cheap * rng.uniform(0.2, 0.6, 200)  # full = cheap x a ratio in [0.2, 0.6]
  threshold = 20.0
  b = cascade.band(held_cheap, held_full, threshold, margin=0.0)
  cheap = rng.uniform(1, 300, 5000)
  seen = held_full / held_cheap
  full = cheap * rng.uniform(seen.min(), seen.max(), 5000)  # ratios the held-out images showed
  rescore, _ = cascade.route(cheap, b)
  anomalous, again = cascade.decide(cheap, full[rescore], b, threshold)
  np.testing.assert_array_equal(again, rescore)
  np.testing.assert_array_equal(anomalous, full > threshold)
  assert 0 < rescore.sum() < len(cheap)  # some, not all, took the expensive path


def test_band_edges_all_outside_and_all_inside():
  b = {"low": 1.0, "high": 2.0}
  far = np.array([0.1, 0.5, 1.0, 2.5, 9.0])  # 1.0 is the band's closed lower edge: cheap says normal
  rescore, cheap_anomalous = cascade.route(far, b)
  assert not rescore.any() and cheap_anomalous.tolist() == [False, False, False, True, True]
  anomalous, _ = cascade.decide(far, np.zeros(0), b, threshold=5.0)
  assert anomalous.tolist() == [False, False, False, True, True]
  inside = np.array([1.01, 1.5, 2.0])
  full = np.array([4.0, 6.0, 5.0])
  anomalous, rescore = cascade.decide(inside, full, b, threshold=5.0)
  assert rescore.all() and anomalous.tolist() == [False, True, False]  # full: strictly above 5


def test_cascade_end_to_end_matches_independent_scoring(tmp_path):
  overrides = {"data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5",
               "evaluate.cascade.enabled": True, "evaluate.cascade.num_seeds": 1,
               "evaluate.cascade.num_times": 1, "evaluate.cascade.margin": 0.05}
  config = tiny_config(**overrides)
  result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  saved = json.loads((tmp_path / "calibration.json").read_text())["cascade"]
  dataset = load_dataset(config.data)
  session = ScoringSession.load(config, str(tmp_path), dataset.class_names)
  score = lambda ec, images, classes: session.score(images, classes, ec)[:2]
  cheap_ec = cascade.cheap_eval_config(config.evaluate)
  assert (cheap_ec.num_seeds, cheap_ec.num_times) == (1, 1)
  _, val_full = score(config.evaluate, dataset.val_images, dataset.val_classes)
  _, val_cheap = score(cheap_ec, dataset.val_images, dataset.val_classes)
  _, test_cheap = score(cheap_ec, dataset.test_images, dataset.test_classes)
  test_full = np.array([i.score for i in result.images])
  rescored = agreed = 0
  for ci, name in enumerate(dataset.class_names):
    v, t = dataset.val_classes == ci, dataset.test_classes == ci
    threshold = saved["categories"][name]["threshold"]
    ratios = np.log(val_full[v] / val_cheap[v])
    assert saved["categories"][name]["low"] == pytest.approx(threshold * np.exp(-(ratios.max() + 0.05)), rel=1e-5)
    assert saved["categories"][name]["high"] == pytest.approx(threshold * np.exp(-(ratios.min() - 0.05)), rel=1e-5)
    band = saved["categories"][name]
    inside = (test_cheap[t] > band["low"]) & (test_cheap[t] <= band["high"])
    decided = np.where(inside, test_full[t] > threshold, test_cheap[t] > band["high"])
    assert result.cascade.per_category[name].rescored == inside.sum()
    rescored += inside.sum()
    agreed += np.sum(decided == (test_full[t] > threshold))
  assert result.cascade.rescored == rescored
  assert result.cascade.agreement == pytest.approx(agreed / len(test_full))
  assert "took the expensive path" in (tmp_path / "eval" / "metrics.md").read_text()

  # Score mode: cheap first, the full setting for the band; full rows carry full scores.
  folder = tmp_path / "line"
  folder.mkdir()
  weave = np.flatnonzero(dataset.test_classes == 0)
  for i in weave:
    Image.fromarray(dataset.test_images[i]).save(folder / f"{i:02d}.png")
  scored = fm_main.run(tiny_config(**overrides, **{"data.score_dir": str(folder),
                                                   "data.score_category": "weave"}),
                       str(tmp_path), "score")
  band = saved["categories"]["weave"]
  for row, i, flag in zip(scored["images"], weave, scored["decisions"]):
    inside = band["low"] < test_cheap[i] <= band["high"]
    assert row["scored_with"] == ("full" if inside else "cheap")
    expected = test_full[i] if inside else test_cheap[i]
    assert row["score"] == pytest.approx(expected, rel=1e-5)
    assert flag == (test_full[i] > band["threshold"] if inside else test_cheap[i] > band["high"])
