"""The score function of a method, and the loop that feeds it batches.

The method (`evaluate.method`, Flow Mismatching by default) comes from the
`fmjax.methods` registry. Images of any sizes are cut into tiles (`fmjax.score.tiling`;
whole images by default), which one jitted function, sharded over the "data" mesh axis,
scores in fixed-size batches (the last one padded, so nothing recompiles; once per tile
shape). The host blends the tiles back and smooths and scores each map (`fmjax.score.maps`).
Seeds depend only on (config.evaluate.seed, a hash of the image's pixels, and with tiles the
pixel's position), so scores do not depend on the batch size, the number of devices, the
order of the images or the tiling.

`fmjax.score.session.ScoringSession` holds what these need (model, params, normalisation,
mesh) and caches the jitted functions.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from fmjax import methods
from fmjax.core import console, ragged, sharding
from fmjax.core.errors import ConfigError, DataLayoutError
from fmjax.core.ids import image_ids
from fmjax.core.runlog import StepTrace
from fmjax.data import NormStats
from fmjax.score import maps, tiling

# What a stored threshold or score depends on: it is used only when these match the current
# scorer. "checkpoint" is the checkpoint's content fingerprint (a model retrained to the same
# step is another model); the step is kept for messages.
THRESHOLD_KEYS = ("checkpoint", "checkpoint_step", "method", "method_options", "use_ema", "seed")
# A calibration also depends on which normal images were held out of training.
CALIBRATION_KEYS = THRESHOLD_KEYS + ("val_fraction",)


def scorer_settings(config, step: int, checkpoint: str, eval_config=None) -> dict:
  """The THRESHOLD_KEYS and CALIBRATION_KEYS values of the scorer of `eval_config` (default:
  config.evaluate) with the checkpoint of fingerprint `checkpoint` at `step`."""
  ec = eval_config if eval_config is not None else config.evaluate
  return {"checkpoint": checkpoint, "checkpoint_step": int(step), "method": ec.method,
          "method_options": methods.scorer_options(ec), "use_ema": bool(ec.use_ema),
          "seed": ec.seed, "val_fraction": float(config.data.val_fraction)}


def tile_score_fn(model, norm: NormStats, eval_config):
  """(params, tiles uint8 [B,h,w,3], labels [B], ids [B], origins int32 [B,2]) -> heatmaps
  float32 [B,h,w] on one device (not jitted): normalisation and the configured scorer.

  `eval_config.method` names the scorer in `fmjax.methods`; its options are
  `eval_config.<method>.*`. h and w are multiples of the model's stride (`fmjax.score.tiling`
  pads). Seeds are per image (the image's id) when images are scored whole
  (evaluate.tile_size 0), else per pixel position (`mismatch.positional_seeds` at each tile's
  origin in its image), so that how an image is tiled does not change its noise.
  """
  scorer = methods.scorer(eval_config.method)
  problems = scorer.check(methods.scorer_options(eval_config))
  if problems:
    raise ConfigError("; ".join(problems))
  ctx = methods.ScoreContext(
      key=jax.random.key(eval_config.seed), num_seeds=eval_config.num_seeds,
      num_times=eval_config.num_times, max_forward_batch=max(1, eval_config.max_forward_batch),
      options=eval_config[scorer.name].to_dict() if scorer.options else {})
  positional = int(eval_config.get("tile_size", 0)) > 0

  def score_tiles(params, tiles, labels, ids, origins):
    velocity = lambda x, t, lab: model.apply({"params": params}, x, t, lab)
    tile_ctx = dataclasses.replace(ctx, origins=origins) if positional else ctx
    return scorer.heatmaps(velocity, norm.normalize(tiles), labels, ids, tile_ctx).astype(jnp.float32)

  return score_tiles


def make_score_fn(model, norm: NormStats, eval_config, mesh):
  """`tile_score_fn` jitted and sharded over the mesh's data axis (batch B a multiple of it)."""
  score_tiles = tile_score_fn(model, norm, eval_config)
  spec = jax.sharding.PartitionSpec(sharding.DATA_AXIS)
  score = jax.shard_map(score_tiles, mesh=mesh,
                        in_specs=(jax.sharding.PartitionSpec(), spec, spec, spec, spec),
                        out_specs=spec)
  data = sharding.data_sharding(mesh)
  rep = sharding.replicated(mesh)
  return jax.jit(score, in_shardings=(rep, data, data, data, data), out_shardings=data)


def score_in_batches(score, params, images, labels: np.ndarray, batch: int, mesh,
                     description: str, eval_config, stride: int, trace: StepTrace | None = None):
  """Heatmaps, scores [M] and images/s of `score` (a `make_score_fn`) over M uint8 images
  ([M,H,W,3], or a list of [H_i,W_i,3] of any sizes) with model labels [M].

  Images are cut into tiles (`tiling.Tiler`: whole images when evaluate.tile_size is 0),
  which are scored `batch` at a time (the last batch of a shape padded), blended back,
  cropped, smoothed and scored on the host (`maps.finish`). Heatmaps are [M,H,W] when the
  images share a size, else an object array of [H_i,W_i] (`fmjax.core.ragged`). Each image is scored with the seeds of its
  `image_ids` (its content). `trace` profiles the batches it names (1-based). The rate
  leaves out the first batch (compilation) when there are more.
  """
  sharding.check_batch_size(batch, mesh, "evaluate.batch_size")
  m = len(images)
  if m == 0:
    raise DataLayoutError("There are no images to score.")
  data = sharding.data_sharding(mesh)
  ids = image_ids(images)
  tiler = tiling.Tiler([im.shape for im in images], stride, int(eval_config.get("tile_size", 0)),
                       tiling.tile_overlap(eval_config))
  heatmaps, scores = [None] * m, np.zeros(m, np.float32)
  progress = console.Progress(m, description, "img")

  def dispatch(number, tiles):
    """Sends one batch of tiles to the devices and starts scoring it (asynchronously)."""
    if trace is not None:
      trace.before(number)
    index, origins = tiling.positions(tiles)
    arrays, valid = sharding.padded_batch(
        (tiler.cut(images, tiles), labels[index], ids[index], origins), 0, batch, data)
    return score(params, *arrays), valid, tiles

  # One batch in flight while the previous one is fetched: the next batch's transfer and
  # launch overlap the current one's compute.
  t0, t_start, first = None, time.time(), 0
  groups = tiler.groups(batch)
  in_flight = dispatch(1, next(groups))
  number = 1
  while in_flight is not None:
    heat, valid, tiles = in_flight
    upcoming = next(groups, None)
    in_flight = None if upcoming is None else dispatch(number + 1, upcoming)
    heat = np.asarray(sharding.to_host(heat))[valid]  # every row on every host
    if trace is not None:
      trace.after(number)
    finished = tiler.add(tiles, heat)
    for i, raw in finished:
      heatmaps[i], scores[i] = maps.finish(raw, eval_config)
    if t0 is None:
      t0, first = time.time(), len(finished)  # exclude compilation from the rate
    progress.update(len(finished))
    number += 1
  progress.close()
  if trace is not None:
    trace.close()  # a window past the last batch ends with the scoring
  elapsed = time.time() - t0
  timed = m - first
  if timed > 0 and elapsed > 0:
    images_per_s = timed / elapsed
  else:  # one batch only: the rate includes compilation
    images_per_s = m / max(time.time() - t_start, 1e-9)
  return ragged.stack(heatmaps), scores, images_per_s


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
