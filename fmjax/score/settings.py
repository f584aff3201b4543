"""The scoring batches, tiles and smoothing of the config (evaluate.batch_size,
evaluate.max_forward_batch, evaluate.tile_*, evaluate.smoothing_*, evaluate.max_image_pixels,
evaluate.pixel_metrics_at;
the method and K, T are the methods' check, evaluate.cascade.* the decisions'). No JAX here."""

from __future__ import annotations

import math

from fmjax.core.settings import rule_errors
from fmjax.model.settings import model_stride, nearest_multiples  # noqa: F401  (re-exported)


def tile_overlap(eval_config) -> int:
  """evaluate.tile_overlap in pixels (-1, also when absent: a quarter of evaluate.tile_size)."""
  overlap = int(eval_config.get("tile_overlap", -1))
  return int(eval_config.get("tile_size", 0)) // 4 if overlap == -1 else overlap


def tile_errors(tile: int, overlap: int, stride: int, what: str = "evaluate.tile_size") -> list[str]:
  """What is wrong with a tile side and overlap for a model of stride `stride` (tile 0: none)."""
  if tile == 0:
    return []
  if tile < 0 or tile % stride:
    return [f"{what} {tile} must be a multiple of the model's stride {stride} "
            f"(nearest valid: {nearest_multiples(max(tile, 1), stride)})"]
  if not 0 <= overlap < tile:
    return [f"evaluate.tile_overlap {overlap} must be in [0, {what} = {tile}) (-1: a quarter "
            f"of the tile)"]
  return []


def smoothing_errors(eval_config) -> list[str]:
  """What is wrong with evaluate.smoothing_sigma and evaluate.smoothing_sigma_fraction."""
  sigma, fraction = float(eval_config.smoothing_sigma), float(eval_config.smoothing_sigma_fraction)
  errors = []
  if not (sigma >= 0 and math.isfinite(sigma)):
    errors.append(f"evaluate.smoothing_sigma must be >= 0 (pixels; 0: off), got {sigma}")
  if not 0 <= fraction < 1:
    errors.append(f"evaluate.smoothing_sigma_fraction must be in [0, 1) (of the map's shorter "
                  f"side; 0: off), got {fraction}")
  if sigma and fraction:
    errors.append("set evaluate.smoothing_sigma (pixels) or evaluate.smoothing_sigma_fraction "
                  "(of the shorter side), not both")
  return errors


def aupimo_fpr(eval_config) -> tuple[float, float]:
  """evaluate.aupimo_fpr as (lower, upper); ValueError saying the valid form."""
  text = str(eval_config.get("aupimo_fpr", "1e-5,1e-4"))
  try:
    lower, upper = (float(v) for v in text.split(","))
  except ValueError:
    lower = upper = float("nan")
  if not 0 < lower < upper <= 1:
    raise ValueError(f"evaluate.aupimo_fpr must be 'lower,upper' with 0 < lower < upper <= 1 "
                     f"(the default: 1e-5,1e-4), got {text!r}")
  return lower, upper


def config_errors(config) -> list[str]:
  """What is wrong with how test images are batched, tiled and smoothed for scoring."""
  ec = config.evaluate
  errors = rule_errors([
      ("evaluate.batch_size", ec.batch_size, ec.batch_size >= 1, ">= 1"),
      ("evaluate.max_forward_batch", ec.max_forward_batch, ec.max_forward_batch >= 1, ">= 1"),
      ("evaluate.max_image_pixels", ec.max_image_pixels, ec.max_image_pixels >= 0,
       ">= 0 (0: no limit)"),
      ("evaluate.pixel_metrics_at", ec.pixel_metrics_at, ec.pixel_metrics_at in ("scored", "native"),
       "scored or native"),
      ("evaluate.num_heatmaps", ec.num_heatmaps, ec.num_heatmaps >= 0, ">= 0 (0: none)"),
      ("evaluate.grid_columns", ec.grid_columns, ec.grid_columns >= 1, ">= 1")])
  errors += tile_errors(ec.tile_size, tile_overlap(ec), model_stride(config.model))
  try:
    aupimo_fpr(ec)
  except ValueError as e:
    errors.append(str(e))
  return errors + smoothing_errors(ec)
