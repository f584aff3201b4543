"""Decision thresholds from normal images only, and what they do on a labelled test split.

A production line has no labelled defects to tune a threshold on, so thresholds come from
normal images the model never trained on (`data.val_fraction`, held out per category): at a
target false-alarm rate r over n held-out scores, k = floor(r * n) of them may be flagged,
and the threshold is the (k+1)-th largest held-out score. An image is flagged when its score
is strictly above the threshold, so exactly k held-out images are (without ties). When
r * n < 1 (too few held-out images for the asked rate) k = 0: the threshold is the largest
held-out score, the most conservative choice, and the result says the rate is not resolved.

  <workdir>/calibration.json   settings (checkpoint, scorer, seed, val_fraction), the rates,
                               and per category: n held out, image and pixel thresholds per rate
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from fmjax.core import files
from fmjax.core.settings import parse_list

FILE = "calibration.json"


def parse_rates(spec) -> list[float]:
  """"0.01,0.05" (or a sequence) -> [0.01, 0.05]; each in (0, 1), at least one."""
  return parse_list(spec, "calibrate.false_alarm_rates", _rate,
                    rule="comma-separated rates in (0, 1) (e.g. '0.01,0.05')")


def _rate(text) -> float:
  rate = float(text)
  if not 0 < rate < 1:
    raise ValueError(f"{rate} is not in (0, 1)")
  return rate


def rate_key(rate: float) -> str:
  """The JSON key of a rate: 0.01 -> "0.01"."""
  return f"{rate:g}"


def threshold_at(scores: np.ndarray, rate: float) -> dict:
  """The threshold that flags floor(rate * n) of the n normal `scores` (flagged: score > it).

  Returns threshold, allowed (k), count (n) and resolved (n >= 1/rate: the rate can be met at
  all; when not, k = 0 and the threshold is the maximum).
  """
  s = np.sort(np.asarray(scores, np.float64).ravel())
  n = s.size
  if n == 0:
    raise ValueError("no held-out scores to calibrate on")
  k = int(math.floor(rate * n + 1e-9))
  k = min(k, n - 1)
  return {"threshold": float(s[n - 1 - k]), "allowed": k, "count": int(n),
          "resolved": bool(rate * n >= 1 - 1e-9)}


def flagged(scores, threshold: float, strict: bool = True) -> np.ndarray:
  """bool [...]: the decision rule. `strict` (calibrated thresholds): above the threshold;
  otherwise (the F1-optimal threshold): at or above it."""
  scores = np.asarray(scores)
  return scores > threshold if strict else scores >= threshold


@dataclasses.dataclass(frozen=True)
class Decision:
  """How scores become decisions: a threshold, what kind it is (for people), and its rule:
  `strict` (calibrated: flagged above it) or not (F1-optimal: flagged at or above it).
  `pixel_threshold` marks the pixels of a predicted defect (NaN: none)."""
  threshold: float
  kind: str
  strict: bool
  pixel_threshold: float = float("nan")

  @property
  def known(self) -> bool:
    return bool(np.isfinite(self.threshold))

  def flags(self, scores) -> np.ndarray:
    return flagged(scores, self.threshold, self.strict)


def calibrate_category(image_scores: np.ndarray, heatmaps: np.ndarray, rates) -> dict:
  """One category's thresholds from its held-out image scores [V] and heatmaps [V,H,W]."""
  return {"num_held_out": int(len(image_scores)),
          "image": {rate_key(r): threshold_at(image_scores, r) for r in rates},
          "pixel": {rate_key(r): threshold_at(heatmaps, r) for r in rates}}


def test_rates(scores: np.ndarray, labels: np.ndarray, threshold: float,
               inclusive: bool = False) -> dict:
  """What a threshold does on a labelled split: the false-alarm rate on its normal images and
  the recall on its anomalous ones (NaN when the split has none of them). Flagged: score above
  the threshold, or at or above it when `inclusive` (the F1-optimal threshold's rule)."""
  labels = np.asarray(labels)
  decided = flagged(scores, threshold, strict=not inclusive)
  normal, anomalous = labels == 0, labels == 1
  return {"false_alarm_rate": float(decided[normal].mean()) if normal.any() else float("nan"),
          "recall": float(decided[anomalous].mean()) if anomalous.any() else float("nan"),
          "num_normal": int(normal.sum()), "num_anomalous": int(anomalous.sum())}


def save(workdir: str, calibration: dict) -> str:
  path = os.path.join(workdir, FILE)
  files.write_json(path, calibration)  # never a half-written file
  return path


def read_matching(path: str, current: dict, keys) -> tuple[dict | None, str]:
  """(the JSON record in the existing file `path`, "") when its "settings" have the same `keys`
  as `current` (checkpoint step, scorer, seed, ...); otherwise (None, the reason). For
  calibration.json and an evaluation's metrics.json alike."""
  saved = files.read_json(path)
  settings = saved.get("settings", {})
  differ = [k for k in keys if settings.get(k) != current.get(k)]
  if differ:
    return None, (f"{path} was made with " +
                  ", ".join(f"{k}={settings.get(k)!r}" for k in differ) + "; now " +
                  ", ".join(f"{k}={current.get(k)!r}" for k in differ))
  return saved, ""


def load(workdir: str, current: dict, keys) -> tuple[dict | None, str]:
  """(the calibration in `workdir`, "") when it was made with the same `keys` of `current`;
  otherwise (None, the reason)."""
  path = os.path.join(workdir, FILE)
  if not files.exists(path):
    return None, f"no {path} (run --mode=calibrate)"
  return read_matching(path, current, keys)


def decision_threshold(calibration: dict, category: str, rate: float | None = None,
                       level: str = "image") -> float:
  """The category's threshold at `rate` (default: the first calibrated rate); NaN if absent."""
  rate = calibration["rates"][0] if rate is None else rate
  entry = calibration.get("categories", {}).get(category, {}).get(level, {}).get(rate_key(rate))
  return float("nan") if entry is None else float(entry["threshold"])
