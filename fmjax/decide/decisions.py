"""Decisions without test labels: the calibration run, the rule that decides new images,
and cascade scoring (fmjax/decide/calibration.py and fmjax/decide/cascade.py hold the arithmetic).

  calibrate()       scores the held-out normals; writes <workdir>/calibration.json
  decision_rule()   the threshold new images of a category are decided with
  cascade_scores()  cheap setting first, the full one for the band around the threshold
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from fmjax import methods
from fmjax.core import console, files
from fmjax.core.errors import CheckpointMismatchError, ConfigError
from fmjax.core.records import Fields, read_json_file
from fmjax.data import AnomalyDataset, load_dataset
from fmjax.decide import calibration, cascade, normalize
from fmjax.score.scoring import CALIBRATION_KEYS, THRESHOLD_KEYS
from fmjax.score.session import ScoringSession
from fmjax.train.restore import saved_meta


def calibrate(config, workdir: str, dataset: AnomalyDataset | None = None,
              session: ScoringSession | None = None) -> calibration.Calibration:
  """Scores the held-out normal images with the latest checkpoint (or `session`'s) and writes
  per-category image and pixel thresholds at `calibrate.false_alarm_rates` to
  <workdir>/calibration.json; returns that calibration."""
  rates = calibration.parse_rates(config.calibrate.false_alarm_rates)
  dataset = dataset if dataset is not None else load_dataset(config.data)
  if dataset.val_images is None or len(dataset.val_images) == 0:
    raise ConfigError("data.val_fraction is 0: no normal images are held out of training, so "
                      "there is nothing to calibrate on. Train a model with "
                      "--config.data.val_fraction=0.1 (the default) in a new --workdir.")
  session = session or ScoringSession.load(config, workdir, dataset.class_names)
  step = session.step
  trained = saved_meta(workdir, step).get("state", {}).get("val_fraction")
  if trained != float(config.data.val_fraction):
    raise CheckpointMismatchError(
        f"The checkpoint at step {step} was trained with data.val_fraction={trained!r}, the "
        f"config has {config.data.val_fraction!r}: the held-out images would not be the ones "
        "the model never saw. Calibrate with the val_fraction it was trained with.")
  heatmaps, scores, _ = session.score_split(dataset, "val", what="calibrate")
  result = calibration.Calibration(settings=session.settings(), rates=tuple(rates), categories={
      name: calibration.calibrate_category(scores[dataset.val_classes == ci],
                                           heatmaps[dataset.val_classes == ci], rates)
      for ci, name in enumerate(dataset.class_names) if (dataset.val_classes == ci).any()})
  cc = config.evaluate.cascade
  if cc.enabled:  # the band of cheap scores that the full setting scores again
    check_cascade_scores(config)
    _, cheap, _ = session.score(dataset.val_images, dataset.val_classes,
                                cascade.cheap_eval_config(config.evaluate), "calibrate (cheap)")
    result = dataclasses.replace(result, cascade=calibration.CascadeBands(
        num_seeds=int(cc.num_seeds), num_times=int(cc.num_times), margin=float(cc.margin),
        bands={name: cascade.band(cheap[dataset.val_classes == ci],
                                  scores[dataset.val_classes == ci], result.threshold(name),
                                  cc.margin)
               for ci, name in enumerate(dataset.class_names) if name in result.categories}))
  if console.is_main_process():
    path = calibration.save(workdir, result)
    console.say(*calibration_lines(result), f"Calibration written to {path}")
  return result


def cascade_in(cal: calibration.Calibration | None, config) -> calibration.CascadeBands | None:
  """The calibration's cascade bands when they were made for the configured cheap setting."""
  bands = None if cal is None else cal.cascade
  return bands if bands is not None and bands.made_for(config.evaluate.cascade) else None


def calibration_lines(result: calibration.Calibration) -> list[str]:
  """The table printed after calibrating, with a warning per unresolved rate."""
  keys = [calibration.rate_key(r) for r in result.rates]
  lines = ["category        held out " + " ".join(f"{'thr@' + k:>12s}" for k in keys)]
  notes = []
  for name, c in result.categories.items():
    lines.append(f"{name[:15]:15s} {c.num_held_out:8d} " +
                 " ".join(f"{c.image[k].threshold:12.5g}" for k in keys))
    for k in keys:
      if not c.image[k].resolved:
        notes.append(f"warning: {name}: {c.num_held_out} held-out images cannot resolve a "
                     f"false-alarm rate of {k} (it needs {int(np.ceil(1 / float(k)))}); the "
                     f"threshold is their maximum, the most conservative choice.")
  return lines + notes


def calibrated_results(cal: calibration.Calibration, dataset: AnomalyDataset, scores: np.ndarray,
                       f1_thresholds: dict) -> calibration.CalibratedResults:
  """Per category and calibrated rate: the threshold and what it does on the test split (image
  scores [N] of the test images); beside them the F1-optimal threshold's (tuned on the test
  labels; {category: threshold})."""
  per_category = {}
  for ci, name in enumerate(dataset.class_names):
    entry = cal.categories.get(name)
    if entry is None:
      continue
    sel = dataset.test_classes == ci
    rows = {}
    for rate in cal.rates:
      k = calibration.rate_key(rate)
      t = entry.image[k].threshold
      rows[k] = calibration.CalibratedOutcome(
          threshold=t, resolved=entry.image[k].resolved, pixel_threshold=entry.pixel[k].threshold,
          **calibration.test_rates(scores[sel], dataset.test_labels[sel], t))
    f1 = f1_thresholds[name]
    per_category[name] = calibration.CategoryOutcomes(
        num_held_out=entry.num_held_out, rates=rows, f1_optimal=calibration.SplitOutcome(
            threshold=f1, **calibration.test_rates(scores[sel], dataset.test_labels[sel], f1,
                                                   inclusive=True)))
  return calibration.CalibratedResults(rates=cal.rates, per_category=per_category)


def cascade_results(bands: calibration.CascadeBands, dataset: AnomalyDataset, cheap: np.ndarray,
                    full: np.ndarray, cheap_rate: float, full_rate: float) -> cascade.CascadeResults:
  """What the cascade does on the test split (cheap and full image scores [N]): per category and
  overall, how many images its band sends to the full setting and how often its decisions agree
  with full scoring's (both at the calibrated threshold); its throughput from the measured cheap
  and full images/s."""
  per_category, rescored_all, agreed_all = {}, 0, 0
  for ci, name in enumerate(dataset.class_names):
    band = bands.bands.get(name)
    sel = dataset.test_classes == ci
    if band is None or not sel.any():
      continue
    rescore, _ = cascade.route(cheap[sel], band)
    anomalous, _ = cascade.decide(cheap[sel], full[sel][rescore], band, band["threshold"])
    agreed = int(np.sum(anomalous == (full[sel] > band["threshold"])))
    per_category[name] = cascade.CascadeCategoryResult(
        images=int(sel.sum()), rescored=int(rescore.sum()), agreement=agreed / int(sel.sum()),
        band=(band["low"], band["high"]))
    rescored_all += int(rescore.sum())
    agreed_all += agreed
  n = sum(c.images for c in per_category.values())
  seconds = n / cheap_rate + rescored_all / full_rate
  return cascade.CascadeResults(
      num_seeds=bands.num_seeds, num_times=bands.num_times, images=n, rescored=rescored_all,
      agreement=agreed_all / max(n, 1), cheap_images_per_s=cheap_rate,
      full_images_per_s=full_rate, images_per_s=n / seconds, speedup=(n / seconds) / full_rate,
      per_category=per_category)


def check_cascade_scores(config) -> None:
  """The cascade compares its cheap setting's on-device scores with the full setting's: a
  scorer whose image scores are fitted (RADAR's Isolation Forest) would pair unfitted with
  fitted scores, so it is refused here, where the scores meet, not only by the config check."""
  if methods.scorer(config.evaluate.method).image_score_fitter(
      methods.scorer_options(config.evaluate)) is not None:
    raise ConfigError("evaluate.cascade works with on-device image scores, not a fitted one.")


def cascade_scores(session: ScoringSession, workdir: str, images: np.ndarray,
                   classes: np.ndarray, category: str, trace=None):
  """Cascade scoring of new images [M,H,W,3] of class indices [M]: heatmaps, scores, decisions,
  the setting each image's score comes from ("cheap" or "full"), and the images/s of the whole
  cascade (compilation included)."""
  config = session.config
  cal, why = calibration.load(workdir, session.settings(), CALIBRATION_KEYS)
  bands = cascade_in(cal, config)
  if bands is None or category not in bands.bands:
    raise ConfigError("evaluate.cascade.enabled needs a cascade band calibrated for this "
                      "checkpoint, scorer and cheap setting" + (f" ({why})" if why else "") +
                      ": run --mode=calibrate with the same --config.evaluate.cascade.* first.")
  check_cascade_scores(config)
  band = bands.bands[category]
  t0 = time.time()
  heat, cheap, _ = session.score(images, classes, cascade.cheap_eval_config(config.evaluate),
                                 "cascade (cheap)", trace)
  rescore, _ = cascade.route(cheap, band)
  heatmaps, scores = heat.copy(), cheap.astype(np.float64)
  full = np.zeros(0)
  if rescore.any():
    heat_full, full, _ = session.score(images[rescore], classes[rescore], what="cascade (full)")
    heatmaps[rescore], scores[rescore] = heat_full, full
  flags, _ = cascade.decide(cheap, full, band, band["threshold"])
  setting = ["full" if r else "cheap" for r in rescore]
  return heatmaps, scores, flags, setting, len(images) / max(time.time() - t0, 1e-9)


def decision_rule(workdir: str, category: str, current: dict,
                  sensitivity: float = normalize.DEFAULT_SENSITIVITY) -> calibration.Decision:
  """How new images of `category` are decided: at the threshold calibrated on held-out normals
  (the first calibrated rate, moved by `sensitivity`; flagged when the score is above it, i.e.
  the normalised score above 0.5) when <workdir>/calibration.json matches the scorer; else at
  the F1-optimal threshold of an earlier evaluation (tuned on test labels, flagged at or above
  it), with a warning; else undecided."""
  cal, why = calibration.load(workdir, current, CALIBRATION_KEYS)
  if cal is not None and category in cal.categories:
    image, pixel = (cal.scale(category, level, sensitivity) for level in ("image", "pixel"))
    kind = f"calibrated ({calibration.rate_key(cal.rates[0])} false alarms)"
    if image is None:  # a calibration.json from before the minima were recorded
      if sensitivity != normalize.DEFAULT_SENSITIVITY:
        raise ConfigError(f"evaluate.sensitivity={sensitivity} needs the held-out minima that "
                          f"{workdir}/calibration.json predates: run --mode=calibrate again.")
      return calibration.Decision(cal.threshold(category), kind, strict=True,
                                  pixel_threshold=cal.threshold(category, level="pixel"))
    if sensitivity != normalize.DEFAULT_SENSITIVITY:
      kind += f", sensitivity {sensitivity:g}"
    return calibration.Decision(image.decision_threshold, kind, strict=True,
                                pixel_threshold=pixel.decision_threshold, image_scale=image,
                                pixel_scale=pixel)
  threshold = stored_threshold(workdir, category, current)
  if np.isfinite(threshold):
    console.warn(f"no calibrated threshold ({why}): deciding at the F1-optimal threshold of "
                 "the labelled test split, which was tuned on its defects.")
    return calibration.Decision(threshold, "F1-optimal (test-tuned)", strict=False)
  return calibration.Decision(float("nan"), "", strict=False)


def stored_threshold(workdir: str, category: str, current: dict) -> float:
  """The category's F1-optimal threshold from <workdir>/eval/metrics.json, or NaN (with the
  reason) when that evaluation used another checkpoint or scorer than `current`.

  The one reader of metrics.json below fmjax/report/ (whose `records.Evaluation` writes it):
  it reads the two entries it needs, settings and per_category[...]["image_f1_threshold"].
  """
  path = os.path.join(workdir, "eval", "metrics.json")
  if not files.exists(path):
    return float("nan")
  fix = "run --mode=evaluate to write it again"
  saved = Fields(read_json_file(path, fix), path, fix)
  why = calibration.settings_mismatch(path, saved.fields("settings").obj, current, THRESHOLD_KEYS)
  if why:
    console.warn(f"the F1-optimal thresholds are not used: {why}.")
    return float("nan")
  per_category = saved.fields("per_category")
  if not per_category.has(category):
    return float("nan")
  return float(per_category.fields(category).number("image_f1_threshold", nullable=True))

