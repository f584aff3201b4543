"""Normalised scores (fmjax/decide/normalize.py) against their closed forms, and where they come
from: the calibration's held-out minima and first threshold, moved by evaluate.sensitivity."""

import json

import numpy as np
import pytest

from fmjax import configlib
from fmjax.core.errors import ConfigError
from fmjax.decide import calibration, decisions
from fmjax.decide.normalize import ScoreScale
from fmjax.score.scoring import CALIBRATION_KEYS

from conftest import tiny_config


@pytest.mark.parametrize("low,threshold", [(2.0, 5.0), (-1.5, 0.25), (1e3, 1e3 + 1e-2)])
def test_zero_at_the_held_out_minimum_half_at_the_threshold_one_beyond(low, threshold):
  scale = ScoreScale(low, threshold)
  span = threshold - low
  points = np.array([low - span, low, low + span / 4, threshold, threshold + span / 2,
                     threshold + span, threshold + 3 * span])
  expected = np.array([0.0, 0.0, 0.125, 0.5, 0.75, 1.0, 1.0])  # (s - low) / (2 span), clipped
  np.testing.assert_allclose(scale(points), expected, atol=1e-6)
  grid = np.linspace(low - span, threshold + 2 * span, 1001)
  assert np.all(np.diff(scale(grid)) >= 0)  # monotone
  np.testing.assert_array_equal(scale.flags(grid), scale(grid) > 0.5)  # flagged <=> above 0.5
  assert not scale.flags(threshold) and scale(threshold) == 0.5  # the threshold itself: not flagged


@pytest.mark.parametrize("sensitivity", [0.1, 0.3, 0.5, 0.7, 0.95])
def test_sensitivity_moves_the_threshold_and_keeps_half_there(sensitivity):
  low, threshold = 1.0, 3.0
  scale = ScoreScale(low, threshold, sensitivity)
  moved = low + 2 * (1 - sensitivity) * (threshold - low)  # closed form
  assert scale.decision_threshold == pytest.approx(moved, abs=1e-12)
  assert scale(moved) == pytest.approx(0.5)
  assert scale(low) == 0.0
  plain = ScoreScale(low, threshold)
  scores = np.linspace(0, 8, 97)
  if sensitivity == 0.5:  # unchanged
    np.testing.assert_array_equal(scale(scores), plain(scores))
    assert scale.decision_threshold == threshold
  elif sensitivity > 0.5:  # more flagged, never fewer
    assert np.all(scale(scores) >= plain(scores)) and scale.flags(scores).sum() > plain.flags(scores).sum()
  else:
    assert np.all(scale(scores) <= plain(scores)) and scale.flags(scores).sum() < plain.flags(scores).sum()


def test_equal_held_out_scores_give_a_step():
  scale = ScoreScale(2.0, 2.0)
  np.testing.assert_array_equal(scale([1.0, 2.0, 2.5]), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("value", [0, 1, -0.2, 1.5, float("nan")])
def test_a_sensitivity_outside_0_1_is_refused(value):
  with pytest.raises(ValueError, match=r"evaluate.sensitivity must be in \(0, 1\)"):
    ScoreScale(0.0, 1.0, value)
  with pytest.raises(ConfigError, match=r"evaluate.sensitivity must be in \(0, 1\)"):
    configlib.validate(tiny_config(**{"evaluate.sensitivity": value}))


def _calibration(tmp_path):
  """A calibration of one category from known held-out scores and maps, saved in tmp_path."""
  rng = np.random.default_rng(0)
  scores = rng.uniform(3.0, 9.0, 40)
  heatmaps = rng.uniform(0.5, 2.0, (40, 6, 5))
  entry = calibration.calibrate_category(scores, heatmaps, [0.05])
  settings = {k: 0 for k in CALIBRATION_KEYS}
  cal = calibration.Calibration(settings=settings, rates=(0.05,), categories={"weave": entry})
  calibration.save(str(tmp_path), cal)
  return scores, heatmaps, settings


def test_the_calibration_records_the_minima_and_the_rule_carries_the_scales(tmp_path):
  scores, heatmaps, settings = _calibration(tmp_path)
  saved = json.loads((tmp_path / "calibration.json").read_text())["categories"]["weave"]
  assert saved["image_low"] == scores.min() and saved["pixel_low"] == heatmaps.min()
  image_threshold = np.sort(scores)[-3]  # floor(0.05 * 40) = 2 above it
  rule = decisions.decision_rule(str(tmp_path), "weave", settings)
  assert rule.threshold == image_threshold
  assert rule.image_scale == ScoreScale(scores.min(), image_threshold)
  assert rule.pixel_scale.low == heatmaps.min() and rule.pixel_threshold == rule.pixel_scale.threshold
  np.testing.assert_allclose(rule.normalised(scores),
                             np.clip(0.5 * (scores - scores.min()) / (image_threshold - scores.min()),
                                     0, 1))
  assert int(rule.flags(scores).sum()) == 2 and int((rule.normalised(scores) > 0.5).sum()) == 2
  keen = decisions.decision_rule(str(tmp_path), "weave", settings, sensitivity=0.8)
  assert keen.threshold == pytest.approx(scores.min() + 0.4 * (image_threshold - scores.min()))
  assert keen.pixel_threshold < rule.pixel_threshold and "sensitivity 0.8" in keen.kind
  assert int(keen.flags(scores).sum()) > 2


def test_a_calibration_without_minima_decides_but_cannot_normalise_or_shift(tmp_path):
  _, _, settings = _calibration(tmp_path)
  obj = json.loads((tmp_path / "calibration.json").read_text())
  for key in ("image_low", "pixel_low"):
    del obj["categories"]["weave"][key]
  (tmp_path / "calibration.json").write_text(json.dumps(obj))
  rule = decisions.decision_rule(str(tmp_path), "weave", settings)
  assert rule.known and rule.image_scale is None and rule.normalised([1.0]) is None
  with pytest.raises(ConfigError, match="run --mode=calibrate again"):
    decisions.decision_rule(str(tmp_path), "weave", settings, sensitivity=0.7)
