"""The score function of a method, and the loop that feeds it batches.

The method (`evaluate.method`, Flow Mismatching by default) comes from the
`fmjax.methods` registry. Images are scored in fixed-size batches (the last one padded,
so nothing recompiles) by one jitted function sharded over the "data" mesh axis. Seeds
depend only on (config.evaluate.seed, a hash of the image's pixels), so scores do not
depend on the batch size, the number of devices or the order of the images.

`fmjax.score.session.ScoringSession` holds what these need (model, params, normalisation,
mesh) and caches the jitted functions.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from fmjax import methods
from fmjax.core import sharding
from fmjax.core.errors import ConfigError, DataLayoutError
from fmjax.core.ids import image_ids
from fmjax.core.progress import Progress
from fmjax.core.runlog import StepTrace
from fmjax.data import NormStats
from fmjax.methods import mismatch
from fmjax.score import smoothing, tiling

# What a stored threshold depends on: it is used only when these match the current scorer.
THRESHOLD_KEYS = ("checkpoint_step", "method", "method_options", "use_ema", "seed")
# A calibration also depends on which normal images were held out of training.
CALIBRATION_KEYS = THRESHOLD_KEYS + ("val_fraction",)


def scorer_settings(config, step: int, eval_config=None) -> dict:
  """The THRESHOLD_KEYS and CALIBRATION_KEYS values of the scorer of `eval_config` (default:
  config.evaluate) at `step`."""
  ec = eval_config if eval_config is not None else config.evaluate
  return {"checkpoint_step": int(step), "method": ec.method,
          "method_options": methods.scorer_options(ec), "use_ema": bool(ec.use_ema),
          "seed": ec.seed, "val_fraction": float(config.data.val_fraction)}


def local_score_fn(model, norm: NormStats, eval_config):
  """(params, images uint8 [B,H,W,3], labels [B], ids [B]) -> (heatmaps [B,H,W], scores [B]) on
  one device (not jitted): normalisation, the configured scorer, the image score.

  `eval_config.method` names the scorer in `fmjax.methods`; its options are
  `eval_config.<method>.*`. Images of any H, W are padded to the model's stride, scored
  whole (evaluate.tile_size 0) or in blended tiles (`fmjax.score.tiling`), cropped back and
  smoothed (`fmjax.score.smoothing`). Scores are max + mean of the top 1% of each heatmap.
  """
  scorer = methods.scorer(eval_config.method)
  problems = scorer.check(methods.scorer_options(eval_config))
  if problems:
    raise ConfigError("; ".join(problems))
  ctx = methods.ScoreContext(
      key=jax.random.key(eval_config.seed), num_seeds=eval_config.num_seeds,
      num_times=eval_config.num_times, max_forward_batch=max(1, eval_config.max_forward_batch),
      options=eval_config[scorer.name].to_dict() if scorer.options else {})

  stride = tiling.model_stride(model)  # the U-Net module carries its channel_mult
  tile, overlap = int(eval_config.get("tile_size", 0)), tiling.tile_overlap(eval_config)

  def score_local(params, images, labels, ids):
    """This device's images: padded to the stride, scored whole or tile by tile (forwards
    chunked to max_forward_batch), cropped back, smoothed, and their image scores."""
    h, w = images.shape[1:3]
    y = tiling.pad_to_stride(norm.normalize(images), stride)
    velocity = lambda x, t, lab: model.apply({"params": params}, x, t, lab)
    if tile == 0:  # whole images, seeds per image
      heat = scorer.heatmaps(velocity, y, labels, ids, ctx)
    else:  # tiles, seeds per pixel position (the same for any tiling)
      grid = tiling.tile_grid(y.shape[1], y.shape[2], tile, overlap)
      heat = tiling.blend_tiles(
          lambda y_tile, origin: scorer.heatmaps(velocity, y_tile, labels, ids,
                                                 dataclasses.replace(ctx, origin=origin)),
          y, grid)
    heat = smoothing.smooth(heat[:, :h, :w], smoothing.sigma_pixels(eval_config, h, w))
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


def score_in_batches(score, params, images: np.ndarray, labels: np.ndarray, batch: int, mesh,
                     description: str, trace: StepTrace | None = None):
  """Heatmaps [M,H,W], scores [M] and images/s of `score` (a `make_score_fn`) over uint8 images
  [M,H,W,3] with model labels [M], in batches of `batch` (the last one padded).

  Each image is scored with the seeds of its `image_ids` (its content). `trace` profiles the
  batches it names (1-based). The rate leaves out the first batch (compilation) when there
  are more.
  """
  sharding.check_batch_size(batch, mesh, "evaluate.batch_size")
  m = len(images)
  if m == 0:
    raise DataLayoutError("There are no images to score.")
  data = sharding.data_sharding(mesh)
  ids = image_ids(images)
  heatmaps, scores = [], []
  progress = Progress(m, description, "img")

  def dispatch(start):
    """Sends one batch to the devices and starts scoring it (asynchronously)."""
    if trace is not None:
      trace.before(start // batch + 1)
    arrays, valid = sharding.padded_batch((images, labels, ids), start, batch, data)
    return score(params, *arrays), valid

  # One batch in flight while the previous one is fetched: the next batch's transfer and
  # launch overlap the current one's compute.
  t0, t_start = None, time.time()
  starts = list(range(0, m, batch))
  in_flight = dispatch(starts[0])
  for i in range(len(starts)):
    (h, s), valid = in_flight
    if i + 1 < len(starts):
      in_flight = dispatch(starts[i + 1])
    h, s = sharding.to_host((h, s))  # every row on every host
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


def apply_fitted(fitted, class_names, classes: np.ndarray, heatmaps: np.ndarray,
                 scores: np.ndarray) -> np.ndarray:
  """The image scores of `heatmaps` [M,H,W] (class indices [M]) under a per-category fit
  ({category: heatmaps -> scores}), or `scores` when there is none."""
  if fitted is None:
    return scores
  out = np.zeros(len(heatmaps), np.float64)
  for name, score_fn in fitted.items():
    sel = classes == list(class_names).index(name)
    if sel.any():
      out[sel] = score_fn(heatmaps[sel])
  return out
