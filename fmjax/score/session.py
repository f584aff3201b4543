"""`ScoringSession`: one checkpoint of one workdir, loaded once and ready to score.

It holds what every scoring call needs (the model, its parameters, the normalisation, the
mesh and the class names) and caches the jitted score function of each scorer setting
(method, its options, K, T, seed, forward chunk, whether seeds are positional), so an evaluation, its calibration, the
cascade, a study or an export compiles each setting once per input shape. Evaluation
settings are passed as a `config.evaluate` subtree (default: the session's own).
"""

from __future__ import annotations

import json

import numpy as np

from fmjax import methods
from fmjax.core import sharding
from fmjax.core.runlog import StepTrace
from fmjax.data import AnomalyDataset, NormStats, load_dataset
from fmjax.model.unet import build_unet
from fmjax.score import scoring, tiling
from fmjax.train.checkpoint import params_fingerprint
from fmjax.train.restore import class_labels, load_params_for_eval


class ScoringSession:
  """Model, params, normalisation, mesh and class names of one checkpoint (step `step`,
  identified by `fingerprint`)."""

  def __init__(self, config, params, norm: NormStats, class_names, step: int, mesh,
               fingerprint: str | None = None):
    self.config, self.params, self.norm, self.step, self.mesh = config, params, norm, int(step), mesh
    # The checkpoint's identity (`checkpoint.params_fingerprint`; computed when not given).
    self.fingerprint = fingerprint or params_fingerprint(params, None, norm.to_dict())
    self.class_names = list(class_names)
    self.model = build_unet(config.model, len(self.class_names))
    self._score_fns: dict = {}
    self._fits: dict = {}

  @classmethod
  def load(cls, config, workdir: str, class_names=None, step: int | None = None) -> "ScoringSession":
    """The checkpoint at `step` (default: the newest that restores) of `workdir`; its EMA
    parameters when config.evaluate.use_ema and it has them. With `class_names`, the
    checkpoint must have been trained on them; without, its own are used."""
    mesh = sharding.make_mesh(config.mesh.num_devices)
    loaded = load_params_for_eval(config, workdir, class_names, config.evaluate.use_ema, step,
                                  mesh=mesh)
    return cls(config, loaded.params, loaded.norm, loaded.class_names, loaded.step, mesh,
               loaded.fingerprint)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def settings(self, eval_config=None) -> dict:
    """`scoring.scorer_settings` of `eval_config` with this session's checkpoint."""
    return scoring.scorer_settings(self.config, self.step, self.fingerprint, eval_config)

  def labels(self, classes: np.ndarray) -> np.ndarray:
    """Model labels [N] for class indices [N] (the null label for a pooled model)."""
    return class_labels(self.config, classes, self.num_classes)

  def score_fn(self, eval_config=None):
    """The jitted, sharded score function of `eval_config` (`scoring.make_score_fn`), made once
    per setting; jax compiles it once per input shape."""
    ec = eval_config if eval_config is not None else self.config.evaluate
    device_options = {k: v for k, v in methods.scorer_options(ec).items()
                      if k not in methods.GEOMETRY_KEYS}  # tiles and smoothing are the host's
    key = (ec.method, json.dumps(device_options, sort_keys=True, default=str),
           int(ec.seed), int(ec.max_forward_batch), int(ec.get("tile_size", 0)) > 0)
    if key not in self._score_fns:
      self._score_fns[key] = scoring.make_score_fn(self.model, self.norm, ec, self.mesh)
    return self._score_fns[key]

  def score(self, images, classes: np.ndarray, eval_config=None, what: str = "score",
            trace: StepTrace | None = None):
    """Heatmaps, image scores [M] and images/s for M uint8 images (an array [M,H,W,3], or a
    list of [H_i,W_i,3] of any sizes) of class indices [M], `eval_config.batch_size` tiles at a
    time. Heatmaps are [M,H,W] for images of one size, else an object array of [H_i,W_i]."""
    ec = eval_config if eval_config is not None else self.config.evaluate
    limit = int(ec.get("max_image_pixels", 0))
    for shape in {tuple(im.shape[:2]) for im in images}:
      tiling.check_image_size(*shape, limit)
    options = methods.scorer_options(ec)
    description = f"{what} {ec.method} " + " ".join(
        f"{methods.base.SHARED_KEYS[k]}={options[k]}" for k in methods.scorer(ec.method).uses)
    return scoring.score_in_batches(self.score_fn(ec), self.params, images, self.labels(classes),
                                    ec.batch_size, self.mesh, description, ec,
                                    tiling.model_stride(self.config.model), trace)

  def image_score_fit(self, dataset: AnomalyDataset | None = None, eval_config=None):
    """{category: heatmaps -> scores} fitted on each category's normal training images when the
    scorer's options ask for it (e.g. RADAR's Isolation Forest), made once per setting; None
    otherwise. Without `dataset`, the configured one is loaded (only when a fit is needed)."""
    ec = eval_config if eval_config is not None else self.config.evaluate
    fitter = methods.scorer(ec.method).image_score_fitter(methods.scorer_options(ec))
    if fitter is None:
      return None
    key = json.dumps(self.settings(ec), sort_keys=True, default=str)
    if key not in self._fits:
      dataset = dataset if dataset is not None else load_dataset(self.config.data)
      normal, _, _ = self.score(dataset.train_images, dataset.train_classes, ec,
                                what="fit on normals:")
      self._fits[key] = {
          name: fitter(normal[dataset.train_classes == ci], ec.seed)
          for ci, name in enumerate(dataset.class_names) if np.any(dataset.train_classes == ci)}
    return self._fits[key]

  def image_scores(self, dataset: AnomalyDataset | None, classes: np.ndarray, heatmaps: np.ndarray,
                   scores: np.ndarray, eval_config=None) -> np.ndarray:
    """The image scores [M] of `heatmaps` [M,H,W] (class indices [M]): the fitted ones when
    the scorer fits one, else the on-device `scores`."""
    fit = self.image_score_fit(dataset, eval_config)
    return scoring.apply_fitted(fit, self.class_names, classes, heatmaps, scores)

  def score_split(self, dataset: AnomalyDataset, split: str = "test", eval_config=None,
                  what: str = "score", trace: StepTrace | None = None):
    """Heatmaps [M,H,W], image scores [M] (fitted where the scorer fits) and images/s of a split
    of `dataset` ("test", "val" or "train")."""
    images, classes = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_classes")
    heatmaps, scores, rate = self.score(images, classes, eval_config, what, trace)
    return heatmaps, self.image_scores(dataset, classes, heatmaps, scores, eval_config), rate
