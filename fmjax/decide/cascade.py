"""Cascade scoring: a cheap setting (small K, T) for every image, the full one only near the
threshold.

The cheap and the full image scores of the same image differ by a factor that varies little
from image to image. On the held-out normals (the calibration images) the log-ratio
log(full / cheap) spans [lo, hi]; widened by `margin` on each side, that gives a band of
cheap scores around the decision threshold t:

  cheap <= t * exp(-(hi + margin))   -> normal, decided by the cheap score
  cheap >  t * exp(-(lo - margin))   -> anomalous, decided by the cheap score
  otherwise                          -> scored again with the full setting, decided by that

Outside the band a full score on the other side of t would need a log-ratio outside every
one the held-out images showed (plus the margin). The evaluation measures the agreement
with full scoring on the test split (`CascadeResults`, eval/metrics.json's "cascade"); the
README reports it.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from fmjax.core.records import Fields


def cheap_options(cascade_config) -> dict:
  """The evaluate.* values of the cheap setting."""
  return {"num_seeds": int(cascade_config.num_seeds), "num_times": int(cascade_config.num_times)}


def cheap_eval_config(eval_config):
  """A copy of `config.evaluate` with the cheap setting's K and T (evaluate.cascade.*)."""
  cheap = copy.deepcopy(eval_config)
  with cheap.unlocked():
    cheap.update(cheap_options(eval_config.cascade))
  return cheap


def band(cheap: np.ndarray, full: np.ndarray, threshold: float, margin: float) -> dict:
  """The band of cheap scores that are scored again, from held-out (cheap, full) score pairs [V]
  and the full setting's decision threshold."""
  cheap, full = np.asarray(cheap, np.float64), np.asarray(full, np.float64)
  if cheap.size == 0 or cheap.shape != full.shape:
    raise ValueError(f"cheap {cheap.shape} and full {full.shape} held-out scores must match, [V>0]")
  if (cheap <= 0).any() or (full <= 0).any() or threshold <= 0:
    raise ValueError("cascade scoring needs positive image scores and threshold")
  log_ratio = np.log(full / cheap)
  lo, hi = float(log_ratio.min()), float(log_ratio.max())
  return {"low": float(threshold * np.exp(-(hi + margin))),
          "high": float(threshold * np.exp(-(lo - margin))),
          "log_ratio_min": lo, "log_ratio_max": hi, "margin": float(margin),
          "threshold": float(threshold)}


def route(cheap_scores: np.ndarray, the_band: dict) -> tuple[np.ndarray, np.ndarray]:
  """(rescore [M] bool: inside the band, cheap_anomalous [M] bool: the cheap decision, valid
  where not rescored)."""
  cheap_scores = np.asarray(cheap_scores, np.float64)
  rescore = (cheap_scores > the_band["low"]) & (cheap_scores <= the_band["high"])
  return rescore, cheap_scores > the_band["high"]


def decide(cheap_scores: np.ndarray, full_scores_of_rescored: np.ndarray, the_band: dict,
           threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """(anomalous [M] bool, rescore [M] bool): the cascade's decisions, given the full scores
  [R] of the images `route` sent back (in their order); flagged when the full score > threshold."""
  rescore, anomalous = route(cheap_scores, the_band)
  anomalous = anomalous.copy()
  anomalous[rescore] = np.asarray(full_scores_of_rescored) > threshold
  return anomalous, rescore


@dataclasses.dataclass(frozen=True)
class CascadeCategoryResult:
  """The cascade on one category's test images."""
  images: int
  rescored: int  # images whose cheap score fell in the band (scored again at full cost)
  agreement: float  # fraction of images decided as full scoring decides them
  band: tuple[float, float]  # (low, high) cheap scores of the band

  def to_json(self) -> dict:
    return {"images": self.images, "rescored": self.rescored, "agreement": self.agreement,
            "band": list(self.band)}

  @classmethod
  def from_fields(cls, f: Fields) -> "CascadeCategoryResult":
    band = f.numbers("band")
    if len(band) != 2:
      f.fail("band", f"= {band}, not [low, high]")
    return cls(f.integer("images"), f.integer("rescored"), f.number("agreement", nullable=True),
               (band[0], band[1]))


@dataclasses.dataclass(frozen=True)
class CascadeResults:
  """What the cascade does on a labelled test split, overall and per category; throughput
  in images/s from the measured cheap and full scoring rates (compilation included)."""
  num_seeds: int  # K of the cheap setting
  num_times: int  # T of the cheap setting
  images: int
  rescored: int
  agreement: float  # fraction of all images decided as full scoring decides them
  cheap_images_per_s: float
  full_images_per_s: float
  images_per_s: float  # the cascade's: all images cheap, the rescored ones at full cost too
  speedup: float  # images_per_s / full_images_per_s
  per_category: dict[str, CascadeCategoryResult]

  def to_json(self) -> dict:
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out["per_category"] = {n: c.to_json() for n, c in self.per_category.items()}
    return out

  @classmethod
  def from_fields(cls, f: Fields) -> "CascadeResults":
    rate = lambda key: f.number(key, nullable=True)
    return cls(f.integer("num_seeds"), f.integer("num_times"), f.integer("images"),
               f.integer("rescored"), rate("agreement"), rate("cheap_images_per_s"),
               rate("full_images_per_s"), rate("images_per_s"), rate("speedup"),
               {n: CascadeCategoryResult.from_fields(c) for n, c in f.each("per_category").items()})
