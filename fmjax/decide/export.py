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

With export.format=onnx, model.onnx replaces scorer.jax and params.npz: the same tile function
with the parameters inside and the seeds as an input (`fmjax.decide.onnx_export`); the
manifest then says "format": "onnx".

`fmjax.deploy.load` reads either: the StableHLO export with jax and numpy (no Flax, no model
code, no checkpoint), the ONNX one with onnxruntime and numpy (no jax).
"""

from __future__ import annotations

import datetime
import io
import os

import jax
import numpy as np

from fmjax import methods
from fmjax.core import console, files, fingerprint
from fmjax.core.errors import ConfigError
from fmjax.core.workdir import check_output_folder
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
  fmt = config.export.format
  check_output_folder(os.path.join(workdir, "export"))
  session = ScoringSession.load(config, workdir)
  tile_shape = _tile_shape(config)
  leaves = jax.tree.leaves(jax.device_get(session.params))
  if fmt == "onnx":
    platforms = ["onnx"]  # any ONNX runtime
  manifest = _manifest(config, workdir, session, platforms, leaves, tile_shape)
  if fmt == "onnx":  # the graph holds the manifest's thresholds
    from fmjax.decide import onnx_export
    written = {"model.onnx": onnx_export.onnx_model(config, session, tile_shape,
                                                    manifest["thresholds"])}
    onnx_export.check_graph(written["model.onnx"])
  else:
    exported = _export_tile_function(config, session, platforms, tile_shape)
    buffer = io.BytesIO()
    np.savez(buffer, **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    written = {"scorer.jax": bytes(exported.serialize()), "params.npz": buffer.getvalue()}
  out_dir = os.path.join(workdir, "export")
  if not console.is_main_process():
    return out_dir
  with files.folder_group(out_dir) as group:  # the whole old export or the whole new one
    for name, data in written.items():
      files.write_bytes(os.path.join(group, name), data)
    files.write_json(os.path.join(group, "manifest.json"), manifest)
  thresholds, size, tile = manifest["thresholds"], manifest["image_size"], manifest["tile_size"]
  known = [n for n, t in thresholds.items() if t["image"] is not None]
  shape = f"{size}x{size}" if tile == 0 else f"any size in {tile}x{tile} tiles"
  where = "ONNX" if fmt == "onnx" else f"StableHLO for {','.join(platforms)}"
  console.say(f"Exported {ec.method} as {where} (checkpoint {fingerprint.short(session.fingerprint)}"
              f" at step {session.step}, {shape}, "
              f"{manifest['num_params']:,} parameters) to {out_dir}/; "
              f"thresholds for {len(known)}/{len(thresholds)} categories "
              f"({', '.join(sorted({thresholds[n]['kind'] for n in known})) or 'none'}).")
  return out_dir


def _tile_shape(config) -> tuple[int, int]:
  """The (h, w) the exported function scores: evaluate.tile_size, or the padded image size."""
  size, stride, tile = config.data.image_size, tiling.model_stride(config.model), int(config.evaluate.tile_size)
  return tiling.scored_shape(size, size, stride, 0) if tile == 0 else (tile, tile)


def _export_tile_function(config, session: ScoringSession, platforms: list[str],
                          tile_shape: tuple[int, int]):
  """The jax.export.Exported tile function for tiles of `tile_shape` (h, w)."""
  ec, model_config = config.evaluate, config.model
  if platforms != ["cuda"] and model_config.attention_impl != "xla":
    model_config = model_config.copy_and_resolve_references()
    model_config.attention_impl = "xla"  # cuDNN attention lowers for CUDA only
  model = build_unet(model_config, len(session.class_names))
  leaves, treedef = jax.tree.flatten(jax.device_get(session.params))
  score_tiles = scoring.tile_score_fn(model, session.norm, ec)

  def exported_fn(flat_params, tiles, labels, ids, origins):
    return score_tiles(jax.tree.unflatten(treedef, flat_params), tiles, labels, ids, origins)

  tile_h, tile_w = tile_shape
  (b,) = jax.export.symbolic_shape("b")
  args = ([jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves],
          jax.ShapeDtypeStruct((b, tile_h, tile_w, 3), np.uint8),
          jax.ShapeDtypeStruct((b,), np.int32), jax.ShapeDtypeStruct((b,), np.int32),
          jax.ShapeDtypeStruct((b, 2), np.int32))
  return jax.export.export(jax.jit(exported_fn), platforms=platforms)(*args)


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
      "format_version": FORMAT_VERSION, "format": config.export.format,
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
      "checkpoint": session.fingerprint, "checkpoint_step": int(session.step),
      "use_ema": bool(ec.use_ema), "thresholds": thresholds,
      "calibration_rate": calibration.parse_rates(config.calibrate.false_alarm_rates)[0],
      "decision": "anomalous when score > threshold (strict: calibrated) or score >= threshold "
                  "(F1-optimal, tuned on test labels)",
      **({"onnx": _onnx_contract(config, tile_shape)} if config.export.format == "onnx" else {})}


def _onnx_contract(config, tile_shape) -> dict:
  """What model.onnx takes and gives, and how its seeds are made (for runtimes other than
  fmjax.deploy)."""
  from fmjax.decide import onnx_export
  k, (h, w) = int(config.evaluate.num_seeds), tile_shape
  positional = int(config.evaluate.tile_size) > 0
  outputs = {onnx_export.TILE_OUTPUT: f"float32 [B,{h},{w}] before smoothing"}
  if onnx_export.whole_images(config, tile_shape):
    outputs.update(heatmaps=f"float32 [B,{h},{w}] smoothed", scores="float32 [B]",
                   normalised="float32 [B] (0.5 at the threshold; NaN without a scale)",
                   decisions="bool [B] (anomalous)")
  return {
      "opset": onnx_export.OPSET,
      "images_per_call": onnx_export.images_per_call(config.evaluate, tile_shape),
      "inputs": {"tiles": f"uint8 [B,{h},{w},3]", "category": "int32 [B] (index in class_names)",
                 "seeds": f"float32 [B,{k},{h},{w},3]"},
      "outputs": outputs,
      "seeds": ("fmjax.core.threefry.positional_seeds(seed, image_ids, K, tile_shape + [3], "
                "origins): per pixel position in the whole image" if positional else
                "fmjax.core.threefry.image_seeds(seed, image_ids, K, tile_shape + [3])") +
               "; image_ids = fmjax.core.ids.image_ids(images) (blake2b of the pixels, 31 bits)"}
