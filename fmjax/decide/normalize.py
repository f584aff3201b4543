"""Normalised scores a person can read: 0 at the held-out minimum, 0.5 at the threshold, 1 at most.

A raw Flow Mismatching score (an image score, or a heatmap pixel) has no fixed scale. Each
category's calibration (`fmjax.decide.calibration`) knows two points of it from normal
images the model never trained on: their lowest score `low` and the calibrated threshold `t`
(at the first false-alarm rate). The normalised score is the straight line through them,

  n(s) = clip(0.5 * (s - low) / (t' - low), 0, 1),   t' = low + 2 * (1 - sensitivity) * (t - low)

so n = 0 at the held-out minimum, n = 0.5 at the decision threshold t', and n = 1 at
t' + (t' - low) and above. `sensitivity` (`evaluate.sensitivity`, in (0, 1)) moves the
threshold: 0.5 keeps the calibrated t, higher values lower it toward `low` (more images
flagged), lower values raise it (fewer). An image is flagged when s > t', that is n(s) > 0.5,
whatever the sensitivity. When t' <= low (all held-out scores equal) the line is a step:
n = 1 above t', else 0. numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_SENSITIVITY = 0.5


def sensitivity_errors(value) -> list[str]:
  """What is wrong with an `evaluate.sensitivity` value (in (0, 1); 0.5: the calibrated one)."""
  try:
    ok = 0 < float(value) < 1
  except (TypeError, ValueError):
    ok = False
  return [] if ok else [f"evaluate.sensitivity must be in (0, 1) (0.5: the calibrated threshold; "
                        f"higher flags more), got {value!r}"]


@dataclasses.dataclass(frozen=True)
class ScoreScale:
  """The map from raw scores of one category and level (image or pixel) to [0, 1]."""
  low: float  # the lowest held-out normal score (raw units)
  threshold: float  # the calibrated threshold t (raw units; flagged: score > it)
  sensitivity: float = DEFAULT_SENSITIVITY

  def __post_init__(self):
    errors = sensitivity_errors(self.sensitivity)
    if errors:
      raise ValueError(errors[0])

  @property
  def decision_threshold(self) -> float:
    """t' = low + 2 (1 - sensitivity) (t - low): the threshold after the sensitivity shift."""
    if self.sensitivity == DEFAULT_SENSITIVITY:
      return float(self.threshold)
    return float(self.low + 2.0 * (1.0 - self.sensitivity) * (self.threshold - self.low))

  def __call__(self, scores) -> np.ndarray:
    """Normalised scores in [0, 1], float64 of `scores`' shape."""
    s = np.asarray(scores, np.float64)
    t = self.decision_threshold
    if not t > self.low:
      return (s > t).astype(np.float64)
    return np.clip(0.5 * (s - self.low) / (t - self.low), 0.0, 1.0)

  def flags(self, scores) -> np.ndarray:
    """bool: flagged (score above the decision threshold, i.e. normalised above 0.5)."""
    return np.asarray(scores, np.float64) > self.decision_threshold

  def to_json(self) -> dict:
    return {"low": float(self.low), "threshold": float(self.threshold),
            "sensitivity": float(self.sensitivity)}

  @classmethod
  def from_json(cls, obj: dict) -> "ScoreScale":
    return cls(float(obj["low"]), float(obj["threshold"]),
               float(obj.get("sensitivity", DEFAULT_SENSITIVITY)))
