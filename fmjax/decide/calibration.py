"""Decision thresholds from normal images only, and what they do on a labelled test split.

A production line has no labelled defects to tune a threshold on, so thresholds come from
normal images the model never trained on (`data.val_fraction`, held out per category): at a
target false-alarm rate r over n held-out scores, k = floor(r * n) of them may be flagged,
and the threshold is the (k+1)-th largest held-out score. An image is flagged when its score
is strictly above the threshold, so exactly k held-out images are (without ties). When
r * n < 1 (too few held-out images for the asked rate) k = 0: the threshold is the largest
held-out score, the most conservative choice, and the result says the rate is not resolved.

  <workdir>/calibration.json   settings (checkpoint, scorer, seed, val_fraction), the rates,
                               and per category: n held out, image and pixel thresholds per rate,
                               the lowest held-out image score and pixel (normalised scores' 0);
                               with evaluate.cascade.enabled, the cascade's bands

`Calibration` is that file as a record (`to_json`/`from_json`; `save` and `load` are the only
writer and reader of the file): a hand-edited or corrupt file is one CorruptFileError line.
`CalibratedResults` is what the thresholds do on a labelled test split (an evaluation's
"calibrated" section of eval/metrics.json).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from fmjax.core import files, fingerprint, ragged
from fmjax.core.records import Fields, read_json_file
from fmjax.core.settings import parse_list
from fmjax.decide import normalize

FILE = "calibration.json"
FIX = "run --mode=calibrate to write it again"


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


def _flat_json(record) -> dict:
  """A flat record as a JSON object: its fields in order (the file's key order)."""
  return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


@dataclasses.dataclass(frozen=True)
class RateThreshold:
  """The threshold at one false-alarm rate from n held-out normal scores (`threshold_at`)."""
  threshold: float  # in score units (image score, or pixel score); flagged: score > threshold
  allowed: int  # k = floor(rate * n): held-out scores above the threshold
  count: int  # n: held-out scores (images, or pixels at the pixel level)
  resolved: bool  # n >= 1 / rate; when not, k = 0 and the threshold is their maximum

  def to_json(self) -> dict:
    return _flat_json(self)

  @classmethod
  def from_fields(cls, f: Fields) -> "RateThreshold":
    return cls(f.number("threshold"), f.integer("allowed"), f.integer("count"),
               f.boolean("resolved"))


def threshold_at(scores: np.ndarray, rate: float) -> RateThreshold:
  """The threshold that flags floor(rate * n) of the n normal `scores` [...] (flagged: score >
  it): when n < 1 / rate the rate is not resolved, k = 0 and the threshold is the maximum."""
  s = np.sort(ragged.pixels(scores))
  n = s.size
  if n == 0:
    raise ValueError("no held-out scores to calibrate on")
  k = int(math.floor(rate * n + 1e-9))
  k = min(k, n - 1)
  return RateThreshold(threshold=float(s[n - 1 - k]), allowed=k, count=int(n),
                       resolved=bool(rate * n >= 1 - 1e-9))


def flagged(scores, threshold: float, strict: bool = True) -> np.ndarray:
  """bool [...]: the decision rule. `strict` (calibrated thresholds): above the threshold;
  otherwise (the F1-optimal threshold): at or above it."""
  scores = np.asarray(scores)
  return scores > threshold if strict else scores >= threshold


@dataclasses.dataclass(frozen=True)
class Decision:
  """How scores become decisions: a threshold, what kind it is (for people), and its rule:
  `strict` (calibrated: flagged above it) or not (F1-optimal: flagged at or above it).
  `pixel_threshold` marks the pixels of a predicted defect (NaN: none). A calibrated rule
  also has the normalised-score maps of both levels (`fmjax.decide.normalize`), whose
  decision thresholds are `threshold` and `pixel_threshold`."""
  threshold: float
  kind: str
  strict: bool
  pixel_threshold: float = float("nan")
  image_scale: normalize.ScoreScale | None = None
  pixel_scale: normalize.ScoreScale | None = None

  @property
  def known(self) -> bool:
    return bool(np.isfinite(self.threshold))

  def flags(self, scores) -> np.ndarray:
    return flagged(scores, self.threshold, self.strict)

  def normalised(self, scores) -> np.ndarray | None:
    """Image scores in [0, 1] (0.5: the threshold), or None without a calibrated scale."""
    return None if self.image_scale is None else self.image_scale(scores)


@dataclasses.dataclass(frozen=True)
class CategoryCalibration:
  """One category's thresholds, each level keyed by `rate_key(rate)` of every calibrated rate."""
  num_held_out: int  # V: held-out normal images
  image: dict[str, RateThreshold]  # over the V image scores
  pixel: dict[str, RateThreshold]  # over the V*H*W heatmap pixels
  # The lowest held-out image score and heatmap pixel: where normalised scores are 0
  # (`fmjax.decide.normalize`); None in files written before they were recorded.
  image_low: float | None = None
  pixel_low: float | None = None

  def to_json(self) -> dict:
    out = {"num_held_out": self.num_held_out,
           "image": {k: t.to_json() for k, t in self.image.items()},
           "pixel": {k: t.to_json() for k, t in self.pixel.items()}}
    if self.image_low is not None:
      out.update(image_low=self.image_low, pixel_low=self.pixel_low)
    return out

  @classmethod
  def from_fields(cls, f: Fields, rates) -> "CategoryCalibration":
    levels = {}
    for level in ("image", "pixel"):
      for rate in rates:  # every calibrated rate has a threshold at both levels
        f.fields(level).value(rate_key(rate))  # raises "has no ...[level][rate]" if absent
      levels[level] = {k: RateThreshold.from_fields(e) for k, e in f.each(level).items()}
    lows = [f.number(k) if f.has(k) else None for k in ("image_low", "pixel_low")]
    return cls(f.integer("num_held_out"), levels["image"], levels["pixel"], *lows)


def calibrate_category(image_scores: np.ndarray, heatmaps: np.ndarray, rates) -> CategoryCalibration:
  """One category's thresholds from its held-out image scores [V] and heatmaps [V,H,W], and
  their minima (the normalised scores' zero)."""
  return CategoryCalibration(num_held_out=int(len(image_scores)),
                             image={rate_key(r): threshold_at(image_scores, r) for r in rates},
                             pixel={rate_key(r): threshold_at(heatmaps, r) for r in rates},
                             image_low=float(np.min(image_scores)),
                             pixel_low=float(np.min(ragged.pixels(heatmaps))))


@dataclasses.dataclass(frozen=True)
class CascadeBands:
  """The cascade's bands of cheap scores (`fmjax.decide.cascade`), made for one cheap setting.

  The bands stay the plain dicts of `cascade.band` (low, high, log_ratio_min, log_ratio_max,
  margin, threshold; score units), which `cascade.route` and `cascade.decide` read.
  """
  num_seeds: int  # K of the cheap setting
  num_times: int  # T of the cheap setting
  margin: float  # widening of the held-out log-ratio range, each side
  bands: dict[str, dict]  # {category: cascade.band(...)}

  def made_for(self, cascade_config) -> bool:
    """Whether the bands were made with `evaluate.cascade`'s K, T and margin."""
    return (self.num_seeds, self.num_times, self.margin) == (
        int(cascade_config.num_seeds), int(cascade_config.num_times), float(cascade_config.margin))

  def to_json(self) -> dict:
    return {"num_seeds": self.num_seeds, "num_times": self.num_times, "margin": self.margin,
            "categories": dict(self.bands)}

  @classmethod
  def from_fields(cls, f: Fields) -> "CascadeBands":
    bands = f.each("categories")
    for band in bands.values():
      for key in ("low", "high", "threshold"):  # what routing and deciding read
        band.number(key)
    return cls(f.integer("num_seeds"), f.integer("num_times"), f.number("margin"),
               {name: band.obj for name, band in bands.items()})


@dataclasses.dataclass(frozen=True)
class Calibration:
  """<workdir>/calibration.json: thresholds from held-out normal images.

  `settings` are the scorer's (`fmjax.score.scoring.scorer_settings`: checkpoint fingerprint and step, method,
  method_options, use_ema, seed, val_fraction), compared key by key with the current scorer's.
  """
  settings: dict
  rates: tuple[float, ...]  # false-alarm rates in (0, 1); the first decides new images
  categories: dict[str, CategoryCalibration]  # the categories with held-out images
  cascade: CascadeBands | None = None  # with evaluate.cascade.enabled

  def threshold(self, category: str, rate: float | None = None, level: str = "image") -> float:
    """The category's threshold at `rate` (default: the first rate; "image" or "pixel" level,
    score units); NaN if it has none."""
    rate = self.rates[0] if rate is None else rate
    entry = self.categories.get(category)
    found = None if entry is None else getattr(entry, level).get(rate_key(rate))
    return float("nan") if found is None else float(found.threshold)

  def scale(self, category: str, level: str = "image",
            sensitivity: float = normalize.DEFAULT_SENSITIVITY) -> normalize.ScoreScale | None:
    """The category's normalised-score map at `level` ("image" or "pixel"): 0 at the lowest
    held-out score, 0.5 at the first rate's threshold shifted by `sensitivity`; None when the
    category is not calibrated or the file predates the recorded minima."""
    entry = self.categories.get(category)
    low = None if entry is None else getattr(entry, f"{level}_low")
    if low is None:
      return None
    return normalize.ScoreScale(low, self.threshold(category, level=level), sensitivity)

  def to_json(self) -> dict:
    """The JSON object of calibration.json."""
    out = {"settings": self.settings, "rates": list(self.rates),
           "categories": {name: c.to_json() for name, c in self.categories.items()}}
    if self.cascade is not None:
      out["cascade"] = self.cascade.to_json()
    return out

  @classmethod
  def from_json(cls, obj, source: str = FILE) -> "Calibration":
    """The record of calibration.json's parsed `obj`; CorruptFileError naming `source` and the
    entry when one is missing or of the wrong type."""
    f = Fields(obj, source, FIX)
    rates = f.numbers("rates")
    if not rates or not all(0 < r < 1 for r in rates):
      f.fail("rates", f"= {rates}, not a list of rates in (0, 1)")
    return cls(settings=f.fields("settings").obj, rates=tuple(rates),
               categories={name: CategoryCalibration.from_fields(c, rates)
                           for name, c in f.each("categories").items()},
               cascade=CascadeBands.from_fields(f.fields("cascade")) if f.has("cascade") else None)


def save(workdir: str, cal: Calibration) -> str:
  """Writes <workdir>/calibration.json (never a half-written file); returns its path."""
  path = os.path.join(workdir, FILE)
  files.write_json(path, cal.to_json())
  return path


def settings_mismatch(path: str, saved: dict, current: dict, keys) -> str:
  """"" when the `saved` settings of the record in `path` have the same `keys` as `current`
  (checkpoint step, scorer, seed, ...); otherwise the reason. For calibration.json and an
  evaluation's metrics.json alike."""
  differ = [k for k in keys if saved.get(k) != current.get(k)]
  if not differ:
    return ""
  show = lambda k, v: f"{k}={fingerprint.short(v) if k == 'checkpoint' and v else v!r}"
  return (f"{path} was made with " + ", ".join(show(k, saved.get(k)) for k in differ) +
          "; now " + ", ".join(show(k, current.get(k)) for k in differ))


def load(workdir: str, current: dict, keys) -> tuple[Calibration | None, str]:
  """(the calibration in `workdir`, "") when it was made with the same `keys` of `current`;
  otherwise (None, the reason). A corrupt file raises CorruptFileError."""
  path = os.path.join(workdir, FILE)
  if not files.exists(path):
    return None, f"no {path} (run --mode=calibrate)"
  cal = Calibration.from_json(read_json_file(path, FIX), path)
  why = settings_mismatch(path, cal.settings, current, keys)
  return (None, why) if why else (cal, "")


# What calibrated thresholds do on a labelled test split: an evaluation's "calibrated" section.

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


@dataclasses.dataclass(frozen=True)
class SplitOutcome:
  """What a threshold does on a labelled test split (`test_rates`); NaN where undefined."""
  threshold: float  # image-score units
  false_alarm_rate: float  # fraction of the split's normal images flagged
  recall: float  # fraction of its anomalous images flagged
  num_normal: int
  num_anomalous: int

  def to_json(self) -> dict:
    return _flat_json(self)

  @classmethod
  def from_fields(cls, f: Fields) -> "SplitOutcome":
    return cls(f.number("threshold", nullable=True), f.number("false_alarm_rate", nullable=True),
               f.number("recall", nullable=True), f.integer("num_normal"),
               f.integer("num_anomalous"))


@dataclasses.dataclass(frozen=True)
class CalibratedOutcome:
  """A calibrated threshold (flagged: score > it) and what it does on the test split."""
  threshold: float  # image-score units
  resolved: bool  # the held-out images could resolve the rate
  pixel_threshold: float  # heatmap units, the same rate over held-out pixels
  false_alarm_rate: float  # on the test split's normal images (NaN: none)
  recall: float  # on its anomalous images (NaN: none)
  num_normal: int
  num_anomalous: int

  def to_json(self) -> dict:
    return _flat_json(self)

  @classmethod
  def from_fields(cls, f: Fields) -> "CalibratedOutcome":
    return cls(f.number("threshold", nullable=True), f.boolean("resolved"),
               f.number("pixel_threshold", nullable=True),
               f.number("false_alarm_rate", nullable=True), f.number("recall", nullable=True),
               f.integer("num_normal"), f.integer("num_anomalous"))


@dataclasses.dataclass(frozen=True)
class CategoryOutcomes:
  """One category's calibrated thresholds on the test split, beside the F1-optimal one (tuned
  on the test labels; flagged at or above it)."""
  num_held_out: int
  rates: dict[str, CalibratedOutcome]  # by rate_key, in the calibration's order
  f1_optimal: SplitOutcome

  def to_json(self) -> dict:
    return {"num_held_out": self.num_held_out,
            "rates": {k: r.to_json() for k, r in self.rates.items()},
            "f1_optimal": self.f1_optimal.to_json()}

  @classmethod
  def from_fields(cls, f: Fields) -> "CategoryOutcomes":
    return cls(f.integer("num_held_out"),
               {k: CalibratedOutcome.from_fields(r) for k, r in f.each("rates").items()},
               SplitOutcome.from_fields(f.fields("f1_optimal")))


@dataclasses.dataclass(frozen=True)
class CalibratedResults:
  """Per calibrated category, what its thresholds do on a labelled test split."""
  rates: tuple[float, ...]  # the calibration's false-alarm rates; the first decides
  per_category: dict[str, CategoryOutcomes]

  def first_threshold(self, category: str) -> float | None:
    """The category's threshold at the first rate (None: not calibrated)."""
    outcomes = self.per_category.get(category)
    return None if outcomes is None else outcomes.rates[rate_key(self.rates[0])].threshold

  def to_json(self) -> dict:
    return {"rates": list(self.rates),
            "per_category": {n: c.to_json() for n, c in self.per_category.items()}}

  @classmethod
  def from_fields(cls, f: Fields) -> "CalibratedResults":
    return cls(tuple(f.numbers("rates")),
               {n: CategoryOutcomes.from_fields(c) for n, c in f.each("per_category").items()})
