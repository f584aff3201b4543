"""`--mode=export`: the workdir's scorer as StableHLO, shippable without the training code.

  <workdir>/export/
    scorer.jax      jax.export serialization of (params, tiles uint8 [b,h,w,3], labels [b],
                    ids [b], origins int32 [b,2]) -> heatmaps float32 [b,h,w] for one tile
                    shape (evaluate.tile_size, or the padded data.image_size when images are
                    scored whole) and a symbolic batch b; normalisation and the method with
                    its K, T and seed are inside. Tiling, blending, smoothing and the image
                    score run on the host (`fmjax.score.tiling`, `fmjax.score.maps`), as in
                    evaluation
    params.npz      the parameters the function takes, as its flat list (leaf_00000, ...)
    manifest.json   image size, tile, stride and smoothing, class names and labels, method
                    and options, checkpoint step,
                    platforms, and per category the decision threshold (calibrated on held-out
                    normals when available, moved by evaluate.sensitivity, else the F1-optimal
                    one of the last evaluation) and, when calibrated, the normalised-score
                    maps of images and pixels (`fmjax.decide.normalize.ScoreScale.to_json`)

`fmjax.deploy.load` reads it with jax and numpy only (no Flax, no model code, no checkpoint).
"""

from __future__ import annotations

import datetime
import io
import os

import jax
import numpy as np

from fmjax import methods
from fmjax.core import console, files
from fmjax.core.errors import ConfigError
from fmjax.core.workdir import prepare_workdir
from fmjax.decide import calibration, decisions
from fmjax.decide.settings import export_platforms
from fmjax.model.unet import build_unet
from fmjax.score import scoring, tiling
from fmjax.score.session import ScoringSession


FORMAT_VERSION = 2  # 2: the function scores tiles; the host blends, smooths and scores


def export_scorer(config, workdir: str) -> str:
  """Writes <workdir>/export/ (module docstring) for the latest checkpoint; returns its path."""
  ec = config.evaluate
  scorer = methods.scorer(ec.method)
  if scorer.image_score_fitter(methods.scorer_options(ec)) is not None:
    raise ConfigError(f"evaluate.method={ec.method} with these options fits its image score with "
                      "scikit-learn on the training images, which cannot be exported as StableHLO; "
                      f"use the default on-device image score (e.g. evaluate.{ec.method}.image_score"
                      "=top1).")
  platforms = export_platforms(config.export.platforms)
  session = ScoringSession.load(config, workdir)
  leaves, exported, tile_shape = _export_tile_function(config, session, platforms)
  out_dir = os.path.join(workdir, "export")
  prepare_workdir(out_dir)
  if not console.is_main_process():
    return out_dir
  files.write_bytes(os.path.join(out_dir, "scorer.jax"), bytes(exported.serialize()))
  buffer = io.BytesIO()
  np.savez(buffer, **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
  files.write_bytes(os.path.join(out_dir, "params.npz"), buffer.getvalue())
  manifest = _manifest(config, workdir, session, platforms, leaves, tile_shape)
  files.write_json(os.path.join(out_dir, "manifest.json"), manifest)
  thresholds, size, tile = manifest["thresholds"], manifest["image_size"], manifest["tile_size"]
  known = [n for n, t in thresholds.items() if t["image"] is not None]
  shape = f"{size}x{size}" if tile == 0 else f"any size in {tile}x{tile} tiles"
  console.say(f"Exported {ec.method} (step {session.step}, {shape}, platforms "
              f"{','.join(platforms)}, {manifest['num_params']:,} parameters) to {out_dir}/; "
              f"thresholds for {len(known)}/{len(thresholds)} categories "
              f"({', '.join(sorted({thresholds[n]['kind'] for n in known})) or 'none'}).")
  return out_dir


def _export_tile_function(config, session: ScoringSession, platforms: list[str]):
  """(the parameters' flat leaves, the jax.export.Exported tile function, its tile (h, w))."""
  ec, model_config = config.evaluate, config.model
  if platforms != ["cuda"] and model_config.attention_impl != "xla":
    model_config = model_config.copy_and_resolve_references()
    model_config.attention_impl = "xla"  # cuDNN attention lowers for CUDA only
  model = build_unet(model_config, len(session.class_names))
  leaves, treedef = jax.tree.flatten(jax.device_get(session.params))
  score_tiles = scoring.tile_score_fn(model, session.norm, ec)

  def exported_fn(flat_params, tiles, labels, ids, origins):
    return score_tiles(jax.tree.unflatten(treedef, flat_params), tiles, labels, ids, origins)

  size, stride, tile = config.data.image_size, tiling.model_stride(config.model), int(ec.tile_size)
  tile_h, tile_w = tiling.scored_shape(size, size, stride, 0) if tile == 0 else (tile, tile)
  (b,) = jax.export.symbolic_shape("b")
  args = ([jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves],
          jax.ShapeDtypeStruct((b, tile_h, tile_w, 3), np.uint8),
          jax.ShapeDtypeStruct((b,), np.int32), jax.ShapeDtypeStruct((b,), np.int32),
          jax.ShapeDtypeStruct((b, 2), np.int32))
  exported = jax.export.export(jax.jit(exported_fn), platforms=platforms)(*args)
  return leaves, exported, (tile_h, tile_w)


def _manifest(config, workdir: str, session: ScoringSession, platforms: list[str], leaves,
              tile_shape: tuple[int, int]) -> dict:
  """manifest.json: geometry, smoothing, classes, method, checkpoint and decision thresholds."""
  ec, class_names = config.evaluate, session.class_names
  settings = session.settings()
  thresholds = {}
  for name in class_names:
    rule = decisions.decision_rule(workdir, name, settings, ec.sensitivity)
    thresholds[name] = {"image": rule.threshold if rule.known else None, "kind": rule.kind,
                        "strict": rule.strict,
                        "pixel": float(rule.pixel_threshold) if np.isfinite(rule.pixel_threshold)
                        else None,
                        "image_scale": rule.image_scale and rule.image_scale.to_json(),
                        "pixel_scale": rule.pixel_scale and rule.pixel_scale.to_json()}
  return {
      "format_version": FORMAT_VERSION,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "image_size": config.data.image_size, "channels": 3, "platforms": platforms,
      "stride": tiling.model_stride(config.model), "tile_size": int(ec.tile_size),
      "tile_overlap": tiling.tile_overlap(ec), "tile_shape": list(tile_shape),
      "resize": config.data.resize, "smoothing_sigma": float(ec.smoothing_sigma),
      "smoothing_sigma_fraction": float(ec.smoothing_sigma_fraction),
      "class_names": list(class_names), "class_conditional": bool(config.data.class_conditional),
      "null_label": len(class_names), "num_params": int(sum(np.size(x) for x in leaves)),
      "num_param_arrays": len(leaves), "method": ec.method,
      "method_options": methods.scorer_options(ec), "seed": ec.seed,
      "checkpoint_step": int(session.step), "use_ema": bool(ec.use_ema), "thresholds": thresholds,
      "calibration_rate": calibration.parse_rates(config.calibrate.false_alarm_rates)[0],
      "decision": "anomalous when score > threshold (strict: calibrated) or score >= threshold "
                  "(F1-optimal, tuned on test labels)"}
