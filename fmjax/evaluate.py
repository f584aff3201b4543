"""Scores a test split with the configured method and writes metrics, scores and heatmaps.

The method (`evaluate.method`, Flow Mismatching by default) comes from the
`fmjax.methods` registry. Test images are scored in fixed-size batches (the last
one padded, so nothing recompiles) by one jitted function sharded over the "data"
mesh axis. Seeds depend only on (config.evaluate.seed, a hash of the image's pixels),
so scores do not depend on the batch size, the number of devices or the order of the
images.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time

import jax
import numpy as np

from fmjax import calibration, cascade, methods, mismatch, report, sharding
from fmjax.data import AnomalyDataset, NormStats, load_dataset
from fmjax.data.sources import folder_images, read_images
from fmjax.errors import CheckpointMismatchError, ConfigError, DataLayoutError
from fmjax.ids import image_ids
from fmjax.metrics import METRIC_KEYS, compute_metrics, mean_over_categories
from fmjax.models.unet import build_unet
from fmjax.progress import Progress
from fmjax.runlog import MetricWriter, StepTrace
from fmjax.workdir import class_labels, load_params_for_eval, prepare_workdir, saved_meta, warn

# What a stored threshold depends on: it is used only when these match the current scorer.
THRESHOLD_KEYS = ("checkpoint_step", "method", "method_options", "use_ema", "seed")
# A calibration also depends on which normal images were held out of training.
CALIBRATION_KEYS = THRESHOLD_KEYS + ("val_fraction",)


def scorer_settings(config, step: int) -> dict:
  """The THRESHOLD_KEYS and CALIBRATION_KEYS values of the configured scorer at `step`."""
  ec = config.evaluate
  return {"checkpoint_step": int(step), "method": ec.method,
          "method_options": methods.scorer_options(ec), "use_ema": bool(ec.use_ema),
          "seed": ec.seed, "val_fraction": float(config.data.val_fraction)}


def local_score_fn(model, norm: NormStats, eval_config):
  """(params, images uint8 [B,H,W,3], labels [B], ids [B]) -> (heatmaps [B,H,W], scores [B]) on
  one device (not jitted): normalisation, the configured scorer, the image score.

  `eval_config.method` names the scorer in `fmjax.methods`; its options are
  `eval_config.<method>.*`. Scores are max + mean of the top 1% of each heatmap.
  """
  scorer = methods.scorer(eval_config.method)
  problems = scorer.check(methods.scorer_options(eval_config))
  if problems:
    raise ConfigError("; ".join(problems))
  ctx = methods.ScoreContext(
      key=jax.random.key(eval_config.seed), num_seeds=eval_config.num_seeds,
      num_times=eval_config.num_times, max_forward_batch=max(1, eval_config.max_forward_batch),
      options=eval_config[scorer.name].to_dict() if scorer.options else {})

  def score_local(params, images, labels, ids):
    """This device's images: one scorer call, chunked to max_forward_batch forwards."""
    y = norm.normalize(images)
    velocity = lambda x, t, lab: model.apply({"params": params}, x, t, lab)
    heat = scorer.heatmaps(velocity, y, labels, ids, ctx)
    return heat, mismatch.image_score(heat)

  return score_local


def make_score_fn(model, norm: NormStats, eval_config, mesh):
  """`local_score_fn` jitted and sharded over the mesh's data axis (batch B a multiple of it)."""
  score_local = local_score_fn(model, norm, eval_config)
  spec = jax.sharding.PartitionSpec(sharding.DATA_AXIS)
  score = jax.shard_map(score_local, mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), spec, spec, spec),
                        out_specs=(spec, spec))
  data = sharding.data_sharding(mesh)
  rep = sharding.replicated(mesh)
  return jax.jit(score, in_shardings=(rep, data, data, data), out_shardings=(data, data))


def score_arrays(config, params, images: np.ndarray, labels: np.ndarray, num_classes: int,
                 norm: NormStats, mesh, what: str = "score", trace: StepTrace | None = None):
  """Heatmaps [M,H,W], scores [M] and images/s for uint8 images [M,H,W,3] and model labels [M].

  Each image is scored with the seeds of its `image_ids` (its content). `trace` profiles the
  batches it names (1-based).
  """
  ec = config.evaluate
  batch = ec.batch_size
  sharding.check_batch_size(batch, mesh, "evaluate.batch_size")
  model = build_unet(config.model, num_classes)
  score = make_score_fn(model, norm, ec, mesh)
  data = sharding.data_sharding(mesh)
  rows = sharding.host_slice(batch)
  m = len(images)
  if m == 0:
    raise DataLayoutError("There are no images to score.")
  ids = image_ids(images)
  heatmaps, scores = [], []
  settings = methods.scorer_options(ec)
  progress = Progress(m, f"{what} {ec.method} " + " ".join(
      f"{methods.base.SHARED_KEYS[k]}={settings[k]}" for k in methods.scorer(ec.method).uses), "img")

  def dispatch(start):
    """Sends one batch to the devices and starts scoring it (asynchronously)."""
    if trace is not None:
      trace.before(start // batch + 1)
    idx = np.arange(start, start + batch)
    valid = idx < m
    idx = np.where(valid, idx, m - 1)  # pad the last batch by repeating the last image
    out = score(params, sharding.to_global(images[idx][rows], data),
                sharding.to_global(labels[idx][rows], data),
                sharding.to_global(ids[idx][rows], data))
    return out, valid

  # One batch in flight while the previous one is fetched: the next batch's transfer and
  # launch overlap the current one's compute.
  t0, t_start = None, time.time()
  starts = list(range(0, m, batch))
  in_flight = dispatch(starts[0])
  for i in range(len(starts)):
    (h, s), valid = in_flight
    if i + 1 < len(starts):
      in_flight = dispatch(starts[i + 1])
    h, s = jax.device_get((h, s))  # host 0 needs all rows: outputs are fully addressable on 1 host
    if trace is not None:
      trace.after(i + 1)
    heatmaps.append(np.asarray(h)[valid])
    scores.append(np.asarray(s)[valid])
    if t0 is None:
      t0, first = time.time(), int(valid.sum())  # exclude compilation from the rate
    progress.update(int(valid.sum()))
  progress.close()
  if trace is not None:
    trace.close()  # a window past the last batch ends with the scoring
  elapsed = time.time() - t0
  timed = m - first
  if timed > 0 and elapsed > 0:
    images_per_s = timed / elapsed
  else:  # one batch only: the rate includes compilation
    images_per_s = m / max(time.time() - t_start, 1e-9)
  return np.concatenate(heatmaps), np.concatenate(scores), images_per_s


def score_dataset(config, params, dataset: AnomalyDataset, norm: NormStats, mesh,
                  trace: StepTrace | None = None):
  """Heatmaps [M,H,W], scores [M] and images/s for the whole test split."""
  labels = class_labels(config, dataset.test_classes, dataset.num_classes)
  heatmaps, scores, rate = score_arrays(config, params, dataset.test_images, labels,
                                        dataset.num_classes, norm, mesh, trace=trace)
  fitted = fit_image_scores(config, params, dataset, norm, mesh)
  return heatmaps, apply_fitted(fitted, dataset, dataset.test_classes, heatmaps, scores), rate


def apply_fitted(fitted, dataset: AnomalyDataset, classes: np.ndarray, heatmaps: np.ndarray,
                 scores: np.ndarray) -> np.ndarray:
  """The image scores of `heatmaps` [M,H,W] (classes [M]) under a per-category fit, or `scores`."""
  if fitted is None:
    return scores
  out = np.zeros(len(heatmaps), np.float64)
  for name, score_fn in fitted.items():
    sel = classes == dataset.class_names.index(name)
    if sel.any():
      out[sel] = score_fn(heatmaps[sel])
  return out


def calibrate(config, workdir: str, dataset: AnomalyDataset | None = None) -> dict:
  """Scores the held-out normal images with the latest checkpoint and writes per-category image
  and pixel thresholds at `calibrate.false_alarm_rates` to <workdir>/calibration.json."""
  rates = calibration.parse_rates(config.calibrate.false_alarm_rates)
  dataset = dataset if dataset is not None else load_dataset(config.data)
  if dataset.val_images is None or len(dataset.val_images) == 0:
    raise ConfigError("data.val_fraction is 0: no normal images are held out of training, so "
                      "there is nothing to calibrate on. Train a model with "
                      "--config.data.val_fraction=0.1 (the default) in a new --workdir.")
  params, step, norm, _ = load_params_for_eval(config, workdir, dataset.class_names,
                                               config.evaluate.use_ema)
  trained = saved_meta(workdir, step).get("state", {}).get("val_fraction")
  if trained != float(config.data.val_fraction):
    raise CheckpointMismatchError(
        f"The checkpoint at step {step} was trained with data.val_fraction={trained!r}, the "
        f"config has {config.data.val_fraction!r}: the held-out images would not be the ones "
        "the model never saw. Calibrate with the val_fraction it was trained with.")
  mesh = sharding.make_mesh(config.mesh.num_devices)
  labels = class_labels(config, dataset.val_classes, dataset.num_classes)
  heatmaps, scores, _ = score_arrays(config, params, dataset.val_images, labels,
                                     dataset.num_classes, norm, mesh, what="calibrate")
  scores = apply_fitted(fit_image_scores(config, params, dataset, norm, mesh), dataset,
                        dataset.val_classes, heatmaps, scores)
  result = {"settings": scorer_settings(config, step), "rates": rates, "categories": {}}
  for ci, name in enumerate(dataset.class_names):
    sel = dataset.val_classes == ci
    if sel.any():
      result["categories"][name] = calibration.calibrate_category(scores[sel], heatmaps[sel], rates)
  cc = config.evaluate.cascade
  if cc.enabled:  # the band of cheap scores that the full setting scores again
    _, cheap, _ = score_arrays(cheap_config(config), params, dataset.val_images, labels,
                               dataset.num_classes, norm, mesh, what="calibrate (cheap)")
    result["cascade"] = {**cascade.cheap_options(cc), "margin": float(cc.margin), "categories": {
        name: cascade.band(cheap[dataset.val_classes == ci], scores[dataset.val_classes == ci],
                           calibration.decision_threshold(result, name), cc.margin)
        for ci, name in enumerate(dataset.class_names) if name in result["categories"]}}
  if jax.process_index() == 0:
    path = calibration.save(workdir, result)
    print("\n".join(calibration_lines(result)), flush=True)
    print(f"Calibration written to {path}", flush=True)
  return result


def cheap_config(config):
  """The config of the cascade's cheap setting (evaluate.cascade.num_seeds/num_times as K, T)."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.evaluate.update(cascade.cheap_options(config.evaluate.cascade))
  return cfg


def cascade_in(cal: dict | None, config) -> dict | None:
  """The calibration's cascade bands when they were made for the configured cheap setting."""
  cc = config.evaluate.cascade
  saved = (cal or {}).get("cascade")
  if saved is None or any(saved[k] != v for k, v in cascade.cheap_options(cc).items()) or \
      saved["margin"] != float(cc.margin):
    return None
  return saved


def calibration_lines(result: dict) -> list[str]:
  """The table printed after calibrating, with a warning per unresolved rate."""
  keys = [calibration.rate_key(r) for r in result["rates"]]
  lines = ["category        held out " + " ".join(f"{'thr@' + k:>12s}" for k in keys)]
  notes = []
  for name, c in result["categories"].items():
    lines.append(f"{name[:15]:15s} {c['num_held_out']:8d} " +
                 " ".join(f"{c['image'][k]['threshold']:12.5g}" for k in keys))
    for k in keys:
      if not c["image"][k]["resolved"]:
        notes.append(f"warning: {name}: {c['num_held_out']} held-out images cannot resolve a "
                     f"false-alarm rate of {k} (it needs {int(np.ceil(1 / float(k)))}); the "
                     f"threshold is their maximum, the most conservative choice.")
  return lines + notes


def fit_image_scores(config, params, dataset: AnomalyDataset | None, norm: NormStats, mesh):
  """{category: heatmaps -> scores} fitted on each category's normal training images when
  the scorer's options ask for it (e.g. RADAR's Isolation Forest); None otherwise. Without
  `dataset`, the configured one is loaded (only when a fit is needed)."""
  ec = config.evaluate
  fitter = methods.scorer(ec.method).image_score_fitter(methods.scorer_options(ec))
  if fitter is None:
    return None
  dataset = dataset if dataset is not None else load_dataset(config.data)
  labels = class_labels(config, dataset.train_classes, dataset.num_classes)
  normal, _, _ = score_arrays(config, params, dataset.train_images, labels, dataset.num_classes,
                              norm, mesh, what="fit on normals:")
  return {name: fitter(normal[dataset.train_classes == ci], ec.seed)
          for ci, name in enumerate(dataset.class_names) if np.any(dataset.train_classes == ci)}


def metrics_per_category(dataset: AnomalyDataset, scores: np.ndarray, heatmaps: np.ndarray) -> dict:
  """{category: compute_metrics(...)} over each category's test images."""
  out = {}
  for ci, name in enumerate(dataset.class_names):
    sel = dataset.test_classes == ci
    out[name] = compute_metrics(scores[sel], dataset.test_labels[sel], heatmaps[sel],
                                None if dataset.test_masks is None else dataset.test_masks[sel])
  return out


def evaluate(config, workdir: str, dataset: AnomalyDataset | None = None) -> dict:
  """Scores the test split with the latest checkpoint; writes the report into <workdir>/eval/."""
  eval_dir = os.path.join(workdir, "eval")
  prepare_workdir(eval_dir)  # writable before any scoring
  dataset = dataset if dataset is not None else load_dataset(config.data)
  params, step, norm, _ = load_params_for_eval(config, workdir, dataset.class_names,
                                               config.evaluate.use_ema)
  mesh = sharding.make_mesh(config.mesh.num_devices)
  trace = StepTrace(workdir, "score", config.evaluate.profile_batches, "evaluate.profile_batches")
  heatmaps, scores, images_per_s = score_dataset(config, params, dataset, norm, mesh, trace)
  calibrated, why = calibration.load(workdir, scorer_settings(config, step), CALIBRATION_KEYS)
  cascaded = None
  if config.evaluate.cascade.enabled:
    bands = cascade_in(calibrated, config)
    if bands is None:
      warn("evaluate.cascade.enabled, but no cascade band was calibrated for this checkpoint, "
           "scorer and cheap setting: run --mode=calibrate with the same evaluate.cascade.* first.")
    else:
      labels = class_labels(config, dataset.test_classes, dataset.num_classes)
      _, cheap, cheap_rate = score_arrays(cheap_config(config), params, dataset.test_images, labels,
                                          dataset.num_classes, norm, mesh, what="cascade (cheap)")
      cascaded = cascade_results(bands, dataset, cheap, scores, cheap_rate, images_per_s)
  if jax.process_index() != 0:
    return {}

  overall = compute_metrics(scores, dataset.test_labels, heatmaps, dataset.test_masks,
                            with_curves=True)
  curves = {k: overall.pop(k) for k in ("image_curves", "pixel_curves") if k in overall}
  per_category = metrics_per_category(dataset, scores, heatmaps)
  ec = config.evaluate
  result = {
      **overall,
      "mean": mean_over_categories(per_category),
      "per_category": per_category,
      "settings": {"dataset": dataset.name, "categories": list(dataset.class_names),
                   "method": ec.method, "method_options": methods.scorer_options(ec),
                   "checkpoint_step": int(step), "use_ema": bool(ec.use_ema),
                   "images_per_s": images_per_s, "num_test_images": int(len(scores)),
                   "seed": ec.seed, "batch_size": ec.batch_size,
                   "num_devices": int(mesh.devices.size)},
      "images": [{"path": p, "category": dataset.class_names[c], "defect": d, "label": int(l),
                  "score": float(s)}
                 for p, c, d, l, s in zip(dataset.test_paths, dataset.test_classes,
                                          dataset.test_defects, dataset.test_labels, scores)],
  }
  if cascaded is not None:
    result["cascade"] = cascaded
  if calibrated is not None:
    result["calibrated"] = calibrated_results(calibrated, dataset, scores)
    first = calibration.rate_key(calibrated["rates"][0])
    for r in result["images"]:
      cat = result["calibrated"]["per_category"].get(r["category"])
      if cat is not None:
        r["calibrated_decision"] = ("anomalous" if r["score"] > cat["rates"][first]["threshold"]
                                    else "normal")
  elif jax.process_index() == 0:
    print(f"No calibrated thresholds in the report: {why}.", flush=True)
  writer = MetricWriter(workdir, "eval")
  writer.write(int(step), images_per_s=images_per_s,
               **{k: v for k, v in result.items() if k in METRIC_KEYS and v is not None})
  writer.close()
  report.write_report(eval_dir, result, dataset, heatmaps, scores, curves,
                      num_heatmaps=ec.num_heatmaps, grid_columns=ec.grid_columns)
  print("\n".join(report.summary_lines(result)), flush=True)
  print(f"Report written to {eval_dir}/ (metrics.md, metrics.json, scores.csv, pictures).", flush=True)
  return result


def calibrated_results(cal: dict, dataset: AnomalyDataset, scores: np.ndarray) -> dict:
  """Per category and calibrated rate: the threshold and what it does on the test split; beside
  them the F1-optimal threshold's rates (tuned on the test labels)."""
  out = {"rates": cal["rates"], "per_category": {}}
  for ci, name in enumerate(dataset.class_names):
    entry = cal["categories"].get(name)
    if entry is None:
      continue
    sel = dataset.test_classes == ci
    rows = {}
    for rate in cal["rates"]:
      k = calibration.rate_key(rate)
      t = entry["image"][k]["threshold"]
      rows[k] = {"threshold": t, "resolved": entry["image"][k]["resolved"],
                 "pixel_threshold": entry["pixel"][k]["threshold"],
                 **calibration.test_rates(scores[sel], dataset.test_labels[sel], t)}
    f1 = compute_metrics(scores[sel], dataset.test_labels[sel])["image_f1_threshold"]
    out["per_category"][name] = {
        "num_held_out": entry["num_held_out"], "rates": rows,
        "f1_optimal": {"threshold": f1, **calibration.test_rates(
            scores[sel], dataset.test_labels[sel], f1, inclusive=True)}}
  return out


def cascade_results(bands: dict, dataset: AnomalyDataset, cheap: np.ndarray, full: np.ndarray,
                    cheap_rate: float, full_rate: float) -> dict:
  """What the cascade does on the test split: per category and overall, how many images its
  band sends to the full setting and how often its decisions agree with full scoring's (both
  at the calibrated threshold); its throughput from the measured cheap and full images/s."""
  per_category, rescored_all, agreed_all = {}, 0, 0
  for ci, name in enumerate(dataset.class_names):
    band = bands["categories"].get(name)
    sel = dataset.test_classes == ci
    if band is None or not sel.any():
      continue
    rescore, _ = cascade.route(cheap[sel], band)
    anomalous, _ = cascade.decide(cheap[sel], full[sel][rescore], band, band["threshold"])
    agreed = int(np.sum(anomalous == (full[sel] > band["threshold"])))
    per_category[name] = {"images": int(sel.sum()), "rescored": int(rescore.sum()),
                          "agreement": agreed / int(sel.sum()), "band": [band["low"], band["high"]]}
    rescored_all += int(rescore.sum())
    agreed_all += agreed
  n = sum(c["images"] for c in per_category.values())
  seconds = n / cheap_rate + rescored_all / full_rate
  return {"num_seeds": bands["num_seeds"], "num_times": bands["num_times"], "images": n,
          "rescored": rescored_all, "agreement": agreed_all / max(n, 1),
          "cheap_images_per_s": cheap_rate, "full_images_per_s": full_rate,
          "images_per_s": n / seconds, "speedup": (n / seconds) / full_rate,
          "per_category": per_category}


def score_folder(config, workdir: str) -> dict:
  """Scores every image under `data.score_dir` (no labels, no masks) with the workdir's model.

  Writes <workdir>/scores/<folder name>-<hash of its path>/scores.csv (path, score, and the
  decision at the category's F1-optimal threshold from <workdir>/eval/metrics.json when that
  evaluation used this checkpoint and scorer) and one heatmap panel per image. Folders
  never share an output folder; scoring the same folder again replaces its outputs.
  """
  folder = config.data.score_dir
  if not folder:
    raise ConfigError("--mode=score needs --config.data.score_dir=<folder of images>.")
  paths = folder_images(folder)
  out_dir = os.path.join(workdir, "scores", score_dir_name(folder))
  prepare_workdir(out_dir)  # writable before any scoring
  params, step, norm, class_names = load_params_for_eval(config, workdir, None, config.evaluate.use_ema)
  category = config.data.score_category or (class_names[0] if len(class_names) == 1 else "")
  if config.data.class_conditional and category not in class_names:
    raise ConfigError(f"Set --config.data.score_category to the category of the images: one of "
                      f"{class_names} (the model is class-conditional); got {category!r}.")
  images = read_images(paths, config.data.image_size, config.data.skip_corrupt)
  paths = [p for p, ok in zip(paths, images.ok) if ok]
  index = class_names.index(category) if category in class_names else 0
  labels = class_labels(config, np.full(len(paths), index), len(class_names))
  mesh = sharding.make_mesh(config.mesh.num_devices)
  trace = StepTrace(workdir, "score", config.evaluate.profile_batches, "evaluate.profile_batches")
  settings = scorer_settings(config, step)
  decision = decision_rule(workdir, category, settings)
  if config.evaluate.cascade.enabled:
    heatmaps, scores, flags, setting, images_per_s = _cascade_scores(
        config, workdir, params, images.array, labels, len(class_names), norm, mesh, category,
        settings, trace)
  else:
    heatmaps, scores, images_per_s = score_arrays(config, params, images.array, labels,
                                                  len(class_names), norm, mesh, trace=trace)
    fitted = fit_image_scores(config, params, None, norm, mesh)  # on the training images
    if fitted is not None:  # the category's fit; the first one for a pooled model without category
      scores = fitted.get(category, next(iter(fitted.values())))(heatmaps)
    flags = decision.flags(scores) if decision.known else None
    setting = ["full"] * len(paths)
  rows = [{"path": p, "category": category, "score": float(s), "scored_with": w}
          for p, s, w in zip(paths, scores, setting)]
  if jax.process_index() == 0:
    report.write_unlabeled_report(out_dir, rows, images.array, heatmaps, decision, flags)
    if flags is not None:
      said = f"{int(np.sum(flags))} flagged at the {decision.kind} threshold {decision.threshold:.4g}. "
    else:
      said = ("no decisions: no threshold for this checkpoint and scorer (run --mode=calibrate, "
              "or --mode=evaluate on a labelled test split, with the same settings first). ")
    if config.evaluate.cascade.enabled:
      said += f"{setting.count('full')} of {len(paths)} images took the full setting. "
    print(f"Scored {len(paths)} images from {folder} at {images_per_s:.2f} images/s (step {step}); "
          + said + f"Results in {out_dir}/", flush=True)
  return {"images": rows, "threshold": decision.threshold, "threshold_kind": decision.kind,
          "decisions": None if flags is None else [bool(f) for f in flags],
          "images_per_s": images_per_s, "checkpoint_step": int(step)}


def _cascade_scores(config, workdir, params, images, labels, num_classes, norm, mesh, category,
                    settings, trace):
  """Cascade scoring of new images: heatmaps, scores, decisions, the setting each image's score
  comes from ("cheap" or "full"), and the images/s of the whole cascade (compilation included)."""
  cal, why = calibration.load(workdir, settings, CALIBRATION_KEYS)
  bands = cascade_in(cal, config)
  if bands is None or category not in bands["categories"]:
    raise ConfigError("evaluate.cascade.enabled needs a cascade band calibrated for this "
                      "checkpoint, scorer and cheap setting" + (f" ({why})" if why else "") +
                      ": run --mode=calibrate with the same --config.evaluate.cascade.* first.")
  if methods.scorer(config.evaluate.method).image_score_fitter(
      methods.scorer_options(config.evaluate)) is not None:
    raise ConfigError("evaluate.cascade works with on-device image scores, not a fitted one.")
  band = bands["categories"][category]
  t0 = time.time()
  heat, cheap, _ = score_arrays(cheap_config(config), params, images, labels, num_classes, norm,
                                mesh, what="cascade (cheap)", trace=trace)
  rescore, _ = cascade.route(cheap, band)
  heatmaps, scores = heat.copy(), cheap.astype(np.float64)
  full = np.zeros(0)
  if rescore.any():
    heat_full, full, _ = score_arrays(config, params, images[rescore], labels[rescore],
                                      num_classes, norm, mesh, what="cascade (full)")
    heatmaps[rescore], scores[rescore] = heat_full, full
  flags, _ = cascade.decide(cheap, full, band, band["threshold"])
  setting = ["full" if r else "cheap" for r in rescore]
  return heatmaps, scores, flags, setting, len(images) / max(time.time() - t0, 1e-9)


def score_dir_name(folder: str) -> str:
  """<folder name>-<8 hex digits of its absolute path>: distinct folders never share outputs."""
  path = os.path.abspath(folder)
  digest = hashlib.blake2b(path.encode(), digest_size=4).hexdigest()
  return f"{report.safe_name(os.path.basename(os.path.normpath(path)))}-{digest}"


def decision_rule(workdir: str, category: str, current: dict) -> calibration.Decision:
  """How new images of `category` are decided: at the threshold calibrated on held-out normals
  (the first calibrated rate; flagged when the score is above it) when <workdir>/calibration.json
  matches the scorer; else at the F1-optimal threshold of an earlier evaluation (tuned on test
  labels, flagged at or above it), with a warning; else undecided."""
  cal, why = calibration.load(workdir, current, CALIBRATION_KEYS)
  if cal is not None and category in cal["categories"]:
    rate = cal["rates"][0]
    return calibration.Decision(calibration.decision_threshold(cal, category),
                           f"calibrated ({calibration.rate_key(rate)} false alarms)", strict=True,
                           pixel_threshold=calibration.decision_threshold(cal, category, level="pixel"))
  threshold = stored_threshold(workdir, category, current)
  if np.isfinite(threshold):
    warn(f"no calibrated threshold ({why}): deciding at the F1-optimal threshold of the "
         "labelled test split, which was tuned on its defects.")
    return calibration.Decision(threshold, "F1-optimal (test-tuned)", strict=False)
  return calibration.Decision(float("nan"), "", strict=False)


def stored_threshold(workdir: str, category: str, current: dict) -> float:
  """The category's F1-optimal threshold from <workdir>/eval/metrics.json, or NaN (with the
  reason) when that evaluation used another checkpoint or scorer than `current`."""
  path = os.path.join(workdir, "eval", "metrics.json")
  if not os.path.exists(path):
    return float("nan")
  with open(path) as f:
    saved = json.load(f)
  settings = saved.get("settings", {})
  differ = [k for k in THRESHOLD_KEYS if settings.get(k) != current[k]]
  if differ:
    warn(f"the F1-optimal thresholds in {path} are not used: that evaluation had " +
         ", ".join(f"{k}={settings.get(k)!r}" for k in differ) + "; now " +
         ", ".join(f"{k}={current[k]!r}" for k in differ) + ".")
    return float("nan")
  t = saved.get("per_category", {}).get(category, {}).get("image_f1_threshold")
  return float("nan") if t is None else float(t)
