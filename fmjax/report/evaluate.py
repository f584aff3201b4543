"""Evaluating a labelled test split and scoring folders of new images.

  evaluate()      the test split: the seven metrics, calibrated decisions, the cascade, and
                  the report in <workdir>/eval/
  score_folder()  unlabeled images: scores.csv and heatmaps in <workdir>/scores/<folder>/

Scoring goes through one `fmjax.score.session.ScoringSession` per checkpoint; thresholds and the
cascade are `fmjax.decide.decisions`.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np
from PIL import Image

from fmjax.core import console, files, fingerprint, ragged
from fmjax.core.errors import ConfigError
from fmjax.core.runlog import MetricWriter, StepTrace
from fmjax.core.workdir import check_output_folder
from fmjax.data import AnomalyDataset, load_dataset
from fmjax.data.decode import read_mask
from fmjax.data.sources import folder_images, mask_files, read_images
from fmjax.decide import calibration, cascade, decisions
from fmjax.model.unet import count_params
from fmjax.report import writer as report
from fmjax.report.metrics import AUPIMO_FPR, compute_metrics, mean_over_categories
from fmjax.report.records import EvalSettings, Evaluation, GroupMetrics, ImageResult, Metrics
from fmjax.report.spro import SaturatedRegion, au_spro, saturation_area
from fmjax.score import maps
from fmjax.score.scoring import CALIBRATION_KEYS
from fmjax.score.settings import aupimo_fpr
from fmjax.score.session import ScoringSession


def metrics_per_category(dataset: AnomalyDataset, scores: np.ndarray, heatmaps: np.ndarray,
                         masks: np.ndarray | None = None, aupimo_fpr=AUPIMO_FPR,
                         regions=None, keep: np.ndarray | None = None) -> dict:
  """{category: compute_metrics(...)} over each category's test images in `keep` (all by
  default; `masks`: the dataset's test masks unless given, e.g. at the files' sizes), with
  AU-sPRO ("pixel_spro") when the images have saturated `regions` (`saturated_regions`)."""
  masks = dataset.test_masks if masks is None else masks
  keep = np.ones(len(scores), bool) if keep is None else keep
  out = {}
  for ci, name in enumerate(dataset.class_names):
    sel = keep & (dataset.test_classes == ci)
    out[name] = compute_metrics(scores[sel], dataset.test_labels[sel], heatmaps[sel],
                                None if masks is None else masks[sel], aupimo_fpr=aupimo_fpr)
    if regions is not None:
      idx = np.flatnonzero(sel)
      out[name]["pixel_spro"] = au_spro([heatmaps[i] for i in idx], [regions[i] for i in idx])
  return out


def at_file_size(dataset: AnomalyDataset, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(heatmaps, masks) at each test file's own size, for `evaluate.pixel_metrics_at=native`:
  every heatmap resized with `maps.resize_map` (the images' bilinear filter) and every mask
  read again from its file at that size (normal images: zeros). Object arrays of [H_i,W_i]."""
  if dataset.test_file_sizes is None or dataset.test_mask_paths is None:
    raise ConfigError(f"evaluate.pixel_metrics_at=native needs the test images' files, but "
                      f"dataset {dataset.name!r} was not read from files; use scored.")
  out_maps, out_masks = [], []
  for heatmap, (h, w), mask_path in zip(heatmaps, dataset.test_file_sizes, dataset.test_mask_paths):
    out_maps.append(maps.resize_map(heatmap, h, w))
    mask = np.zeros((h, w), np.uint8)
    for path in mask_files(mask_path):
      mask |= read_mask(path, 0, (w, h), resize="native")
    out_masks.append(mask)
  return ragged.stack(out_maps), ragged.stack(out_masks)


def saturated_regions(dataset: AnomalyDataset, heatmaps) -> list[list[SaturatedRegion]]:
  """Each test image's ground-truth regions (`dataset.test_regions`) at its heatmap's size:
  the mask read from its file and resized (nearest), an absolute saturation area scaled by the
  heatmap's pixels per file pixel."""
  out, lost = [], 0
  for heatmap, regions, (file_h, file_w) in zip(heatmaps, dataset.test_regions,
                                                dataset.test_file_sizes):
    h, w = np.shape(heatmap)
    scale = (h * w) / (file_h * file_w)
    image_regions = []
    for r in regions:
      mask = read_mask(r.path, 0, (file_w, file_h), resize="native")
      if mask.shape != (h, w):
        mask = np.asarray(Image.fromarray(mask * 255).resize((w, h), Image.NEAREST)) > 127
      mask = mask.astype(bool)
      if mask.any():
        image_regions.append(SaturatedRegion(mask, saturation_area(
            int(mask.sum()), r.saturation, r.relative, scale)))
      else:
        lost += 1
    out.append(image_regions)
  if lost:
    console.warn(f"{lost} ground-truth regions vanish at the scored size and are left out of "
                 "sPRO (evaluate.pixel_metrics_at=native measures at the files' sizes).")
  return out


def _metrics_by_category(*args, **kwargs) -> dict[str, Metrics]:
  """`metrics_per_category` as {category: Metrics}."""
  return {n: Metrics.from_dict(m) for n, m in metrics_per_category(*args, **kwargs).items()}


def _mean(per_category: dict[str, Metrics]) -> Metrics:
  return Metrics.from_dict(mean_over_categories({n: m.as_dict() for n, m in per_category.items()}))


def evaluate(config, workdir: str, dataset: AnomalyDataset | None = None,
             session: ScoringSession | None = None) -> Evaluation | None:
  """Scores the test split with the latest checkpoint (or `session`'s); writes the report into
  <workdir>/eval/ and returns the evaluation (None on processes other than 0, which write
  nothing)."""
  eval_dir = os.path.join(workdir, "eval")
  check_output_folder(eval_dir)  # before any scoring
  dataset = dataset if dataset is not None else load_dataset(config.data)
  session = session or ScoringSession.load(config, workdir, dataset.class_names)
  step = session.step
  settings = session.settings()
  # Read (and check) the calibration before scoring: a corrupt file fails in a second, not
  # after every test image has been scored.
  calibrated, why = calibration.load(workdir, settings, CALIBRATION_KEYS)
  trace = StepTrace(workdir, "score", config.evaluate.profile_batches, "evaluate.profile_batches")
  heatmaps, scores, images_per_s = session.score_split(dataset, "test", trace=trace)
  cascaded = _cascade(config, session, dataset, calibrated, scores, images_per_s)
  if not console.is_main_process():
    return None

  ec = config.evaluate
  pixel_maps, pixel_masks, pixels_at = heatmaps, dataset.test_masks, "scored"
  if ec.pixel_metrics_at == "native" and dataset.test_masks is not None:
    pixel_maps, pixel_masks = at_file_size(dataset, heatmaps)
    pixels_at = "native"
  fpr_range = aupimo_fpr(ec)
  overall = compute_metrics(scores, dataset.test_labels, pixel_maps, pixel_masks,
                            with_curves=True, aupimo_fpr=fpr_range)
  curves = {k: overall.pop(k) for k in ("image_curves", "pixel_curves") if k in overall}
  regions = None
  if dataset.test_regions is not None and pixel_masks is not None:
    regions = saturated_regions(dataset, pixel_maps)
    overall["pixel_spro"] = au_spro(pixel_maps, regions)
  measure = functools.partial(_metrics_by_category, dataset, scores, pixel_maps, pixel_masks,
                              fpr_range, regions)
  per_category = measure()
  by_group = None
  if dataset.defect_groups:
    defects = np.asarray(dataset.test_defects)
    by_group = {}
    for group in dataset.defect_groups:
      metrics = measure(keep=(dataset.test_labels == 0) | (defects == group))
      by_group[group] = GroupMetrics(metrics, _mean(metrics))
  scales = {} if calibrated is None else {  # the normalised-score maps at evaluate.sensitivity
      n: scale for n in dataset.class_names
      if (scale := calibrated.scale(n, "image", ec.sensitivity)) is not None}
  outcomes = None
  if calibrated is not None:
    outcomes = decisions.calibrated_results(
        calibrated, dataset, scores, {n: m.image_f1_threshold for n, m in per_category.items()})
  else:
    console.say(f"No calibrated thresholds in the report: {why}.")
  result = Evaluation(
      pooled=Metrics.from_dict(overall),
      mean=_mean(per_category),
      per_category=per_category,
      settings=EvalSettings(dataset=dataset.name, categories=tuple(dataset.class_names), **settings,
                            images_per_s=images_per_s, num_test_images=int(len(scores)),
                            batch_size=ec.batch_size, num_devices=int(session.mesh.devices.size),
                            pixel_metrics_at=pixels_at, sensitivity=float(ec.sensitivity),
                            aupimo_fpr=fpr_range if pixel_masks is not None else None),
      images=_image_results(dataset, scores, outcomes, scales),
      cascade=cascaded, calibrated=outcomes, by_defect_group=by_group)
  writer = MetricWriter(workdir, "eval")
  writer.write(int(step), images_per_s=images_per_s, **result.pooled.metrics())
  writer.close()
  with files.folder_group(eval_dir) as group:  # the whole old report or the whole new one
    report.write_report(group, result, dataset, heatmaps, scores, curves,
                        num_heatmaps=ec.num_heatmaps, grid_columns=ec.grid_columns,
                        decision_thresholds={n: c.decision_threshold for n, c in scales.items()},
                        context=_context(config, session))
  console.say(*report.summary_lines(result),
              f"Report written to {eval_dir}/ (report.html to explore it in a browser; "
              "metrics.md, metrics.json, scores.csv, pictures).")
  return result


def _context(config, session: ScoringSession) -> dict:
  """The model and the data in words, for the report page's header."""
  m, d = config.model, config.data
  model = (f"U-Net, {count_params(session.params):,} parameters, channels {m.channels}, "
           f"channel_mult {tuple(m.channel_mult)}")
  geometry = d.get("resize", "square")
  data = f"{d.get('name', '')}, " + (f"{d.image_size}x{d.image_size}" if geometry == "square"
                                     else f"resize {geometry}")
  return {"model": model, "data": data.strip(", ")}


def _cascade(config, session: ScoringSession, dataset: AnomalyDataset, calibrated,
             scores: np.ndarray, images_per_s: float):
  """The cascade's results on the test split (the cheap setting scores every image), or None
  when the cascade is off or was not calibrated for this checkpoint and scorer."""
  if not config.evaluate.cascade.enabled:
    return None
  decisions.check_cascade_scores(config)
  bands = decisions.cascade_in(calibrated, config)
  if bands is None:
    console.warn("evaluate.cascade.enabled, but no cascade band was calibrated for this "
                 "checkpoint, scorer and cheap setting: run --mode=calibrate with the same "
                 "evaluate.cascade.* first.")
    return None
  _, cheap, cheap_rate = session.score(dataset.test_images, dataset.test_classes,
                                       cascade.cheap_eval_config(config.evaluate),
                                       "cascade (cheap)")
  return decisions.cascade_results(bands, dataset, cheap, scores, cheap_rate, images_per_s)


def _image_results(dataset: AnomalyDataset, scores: np.ndarray, outcomes, scales: dict) -> tuple:
  """One ImageResult per test image: path, category, label, score, size, and its decision at
  the category's first calibrated threshold, moved as its normalised-score map in `scales`
  ({category: ScoreScale}) says, with its normalised score (None without calibration)."""
  images = []
  for path, c, defect, label, score, image in zip(dataset.test_paths, dataset.test_classes,
                                                  dataset.test_defects, dataset.test_labels, scores,
                                                  dataset.test_images):
    category = dataset.class_names[c]
    scale = scales.get(category)
    threshold = None if outcomes is None else outcomes.first_threshold(category)
    if scale is not None:
      threshold = scale.decision_threshold
    decision = None if threshold is None else (
        "anomalous" if calibration.flagged(float(score), threshold) else "normal")
    images.append(ImageResult(path=path, category=category, defect=defect, label=int(label),
                              score=float(score), calibrated_decision=decision,
                              width=int(image.shape[1]), height=int(image.shape[0]),
                              normalised_score=None if scale is None else float(scale(score))))
  return tuple(images)


def score_folder(config, workdir: str) -> dict:
  """Scores every image under `data.score_dir` (no labels, no masks) with the workdir's model.

  Writes <workdir>/scores/<folder name>-<hash of its path>/scores.csv (path, score, the
  decision at the category's calibrated threshold, or else at the F1-optimal threshold from
  <workdir>/eval/metrics.json when that evaluation used this checkpoint and scorer, and the
  normalised score), one heatmap panel per image and, with a calibrated pixel threshold, each
  image's predicted-defect mask at its file's size and its regions (`report.write_unlabeled_report`).
  Folders never share an output folder; scoring the same folder again replaces its outputs.
  """
  folder = config.data.score_dir
  if not folder:
    raise ConfigError("--mode=score needs --config.data.score_dir=<folder of images>.")
  paths = score_folder_images(folder, workdir)
  out_dir = os.path.join(workdir, "scores", score_dir_name(folder))
  check_output_folder(out_dir)  # before any scoring
  session = ScoringSession.load(config, workdir)
  step, class_names = session.step, session.class_names
  _warn_if_export_is_older(workdir, session)
  category = config.data.score_category or (class_names[0] if len(class_names) == 1 else "")
  if config.data.class_conditional and category not in class_names:
    raise ConfigError(f"Set --config.data.score_category to the category of the images: one of "
                      f"{class_names} (the model is class-conditional); got {category!r}.")
  images = read_images(paths, config.data.image_size, config.data.skip_corrupt,
                       resize=config.data.get("resize", "square"))
  paths = [p for p, ok in zip(paths, images.ok) if ok]
  classes = np.full(len(paths), class_names.index(category) if category in class_names else 0)
  trace = StepTrace(workdir, "score", config.evaluate.profile_batches, "evaluate.profile_batches")
  decision = decisions.decision_rule(workdir, category, session.settings(),
                                     config.evaluate.sensitivity)
  if config.evaluate.cascade.enabled:
    heatmaps, scores, flags, setting, images_per_s = decisions.cascade_scores(
        session, workdir, images.array, classes, category, trace)
  else:
    heatmaps, scores, images_per_s = session.score(images.array, classes, trace=trace)
    fit = session.image_score_fit()  # on the training images
    if fit is not None:  # the category's fit (a pooled model fitted on one category: that one)
      if category not in fit and not (category == "" and len(fit) == 1):
        raise ConfigError(f"{config.evaluate.method}'s image scores were fitted on the normal "
                          f"images of {sorted(fit)}, none of category {category!r}: set "
                          "--config.data.score_category to one of them.")
      scores = fit.get(category, next(iter(fit.values())))(heatmaps)
    flags = decision.flags(scores) if decision.known else None
    setting = ["full"] * len(paths)
  normalised = decision.normalised(scores)
  rows = [{"path": p, "category": category, "score": float(s), "scored_with": w,
           "normalised_score": None if normalised is None else float(normalised[i])}
          for i, (p, s, w) in enumerate(zip(paths, scores, setting))]
  for row, (h, w) in zip(rows, images.file_sizes):
    row["width"], row["height"] = w, h
  if console.is_main_process():
    files.makedirs(os.path.dirname(out_dir))
    with files.folder_group(out_dir) as group:  # the whole old output or the whole new one
      report.write_unlabeled_report(group, rows, images.array, heatmaps, decision, flags)
      files.write_json(os.path.join(group, "provenance.json"), {
          "folder": os.path.abspath(folder), **session.settings(),
          "threshold": decision.threshold if decision.known else None,
          "threshold_kind": decision.kind})
    if flags is not None:
      said = f"{int(np.sum(flags))} flagged at the {decision.kind} threshold {decision.threshold:.4g}. "
    else:
      said = ("no decisions: no threshold for this checkpoint and scorer (run --mode=calibrate, "
              "or --mode=evaluate on a labelled test split, with the same settings first). ")
    if config.evaluate.cascade.enabled:
      said += f"{setting.count('full')} of {len(paths)} images took the full setting. "
    console.say(f"Scored {len(paths)} images from {folder} at {images_per_s:.2f} images/s "
                f"(step {step}); " + said + f"Results in {out_dir}/")
  return {"images": rows, "threshold": decision.threshold, "threshold_kind": decision.kind,
          "decisions": None if flags is None else [bool(f) for f in flags],
          "images_per_s": images_per_s, "checkpoint_step": int(step)}


def score_folder_images(folder: str, workdir: str) -> list[str]:
  """The images `--mode=score` scores in `folder`: never the workdir's own outputs."""
  return folder_images(folder, exclude=[os.path.join(workdir, d)
                                        for d in ("scores", "eval", "export", "studies")])


def _warn_if_export_is_older(workdir: str, session: ScoringSession) -> None:
  """A warning when <workdir>/export/ holds another checkpoint than the one scoring now."""
  path = os.path.join(workdir, "export", "manifest.json")
  if not files.exists(path):
    return
  try:
    exported = files.read_json(path).get("checkpoint")
  except (ValueError, AttributeError):
    return  # a damaged export is reported by whatever loads it
  if exported != session.fingerprint:
    now = fingerprint.short(session.fingerprint)
    console.warn(f"{os.path.dirname(path)} holds checkpoint {fingerprint.short(exported)}, "
                 f"older than this workdir's checkpoint {now} (step {session.step}) that scores "
                 "here: export again (--mode=export) before deploying it.")


def score_dir_name(folder: str) -> str:
  """<folder name>-<8 hex digits of its absolute path>: distinct folders never share outputs."""
  path = os.path.abspath(folder)
  digest = hashlib.blake2b(path.encode(), digest_size=4).hexdigest()
  return f"{report.safe_name(os.path.basename(os.path.normpath(path)))}-{digest}"

