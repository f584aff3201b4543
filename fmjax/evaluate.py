"""Scores a test split with the configured method and writes metrics, scores and heatmaps.

The method (`evaluate.method`, Flow Mismatching by default) comes from the
`fmjax.methods` registry. Test images are scored in fixed-size batches (the last
one padded, so nothing recompiles) by one jitted function sharded over the "data"
mesh axis. Seeds depend only on (config.evaluate.seed, a hash of the image's pixels),
so scores do not depend on the batch size, the number of devices or the order of the
images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import jax
import numpy as np

from fmjax import methods, mismatch, report, sharding
from fmjax.data import AnomalyDataset, NormStats, load_dataset
from fmjax.data.sources import folder_images, read_images
from fmjax.errors import ConfigError, DataLayoutError
from fmjax.metrics import METRIC_KEYS, compute_metrics, mean_over_categories
from fmjax.models.unet import build_unet
from fmjax.progress import Progress
from fmjax.runlog import MetricWriter, StepTrace
from fmjax.workdir import class_labels, load_params_for_eval, prepare_workdir, warn

# What a stored threshold depends on: it is used only when these match the current scorer.
THRESHOLD_KEYS = ("checkpoint_step", "method", "method_options", "use_ema", "seed")


def make_score_fn(model, norm: NormStats, eval_config, mesh):
  """jitted (params, images uint8 [B,H,W,3], labels [B], ids [B]) -> (heatmaps [B,H,W], scores [B]).

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

  spec = jax.sharding.PartitionSpec(sharding.DATA_AXIS)
  score = jax.shard_map(score_local, mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), spec, spec, spec),
                        out_specs=(spec, spec))
  data = sharding.data_sharding(mesh)
  rep = sharding.replicated(mesh)
  return jax.jit(score, in_shardings=(rep, data, data, data), out_shardings=(data, data))


def image_ids(images: np.ndarray) -> np.ndarray:
  """int32 [M]: a 31-bit hash of each uint8 image [M,H,W,3]'s pixels, the id its seeds come from,
  so an image's score depends on its content, not on its place in a folder or a batch."""
  return np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(im).tobytes(),
                                                  digest_size=4).digest(), "little") & 0x7FFFFFFF
                   for im in images], np.int32)


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
  if fitted is not None:
    scores = np.zeros(len(heatmaps), np.float64)
    for name, score_fn in fitted.items():
      sel = dataset.test_classes == dataset.class_names.index(name)
      scores[sel] = score_fn(heatmaps[sel])
  return heatmaps, scores, rate


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
  writer = MetricWriter(workdir, "eval")
  writer.write(int(step), images_per_s=images_per_s,
               **{k: v for k, v in result.items() if k in METRIC_KEYS and v is not None})
  writer.close()
  report.write_report(eval_dir, result, dataset, heatmaps, scores, curves,
                      num_heatmaps=ec.num_heatmaps, grid_columns=ec.grid_columns)
  print("\n".join(report.summary_lines(result)), flush=True)
  print(f"Report written to {eval_dir}/ (metrics.md, metrics.json, scores.csv, pictures).", flush=True)
  return result


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
  heatmaps, scores, images_per_s = score_arrays(config, params, images.array, labels,
                                                len(class_names), norm, mesh, trace=trace)
  fitted = fit_image_scores(config, params, None, norm, mesh)  # on the training images
  if fitted is not None:  # the category's fit; the first one for a pooled model without category
    scores = fitted.get(category, next(iter(fitted.values())))(heatmaps)
  threshold = stored_threshold(workdir, category, {
      "checkpoint_step": int(step), "method": config.evaluate.method,
      "method_options": methods.scorer_options(config.evaluate),
      "use_ema": bool(config.evaluate.use_ema), "seed": config.evaluate.seed})
  rows = [{"path": p, "category": category, "score": float(s)} for p, s in zip(paths, scores)]
  if jax.process_index() == 0:
    report.write_unlabeled_report(out_dir, rows, images.array, heatmaps, threshold)
    flagged = int((scores >= threshold).sum()) if np.isfinite(threshold) else None
    print(f"Scored {len(paths)} images from {folder} at {images_per_s:.2f} images/s (step {step}); "
          + (f"{flagged} above the F1-optimal threshold {threshold:.4g}. " if flagged is not None
             else "no decisions: no threshold for this checkpoint and scorer (run --mode=evaluate "
             "on a labelled test split with the same settings first). ")
          + f"Results in {out_dir}/", flush=True)
  return {"images": rows, "threshold": threshold, "images_per_s": images_per_s,
          "checkpoint_step": int(step)}


def score_dir_name(folder: str) -> str:
  """<folder name>-<8 hex digits of its absolute path>: distinct folders never share outputs."""
  path = os.path.abspath(folder)
  digest = hashlib.blake2b(path.encode(), digest_size=4).hexdigest()
  return f"{report.safe_name(os.path.basename(os.path.normpath(path)))}-{digest}"


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
