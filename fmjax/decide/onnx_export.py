"""The tile scorer as one ONNX graph (`--mode=export --config.export.format=onnx`), by jax2onnx.

  model.onnx   (tiles uint8 [B,h,w,3], labels int32 [B], seeds float32 [B,K,h,w,3])
               -> heatmaps float32 [B,h,w]
               The velocity U-Net with its parameters inside, the normalisation of the
               training images, and Flow Mismatching: the T interior times t_j = j / (T + 1),
               the paths x_t = (1 - t) x0 + t y, the mismatch ||v - (y - x0)||^2 over channels,
               the aggregation over the K seeds and the t^2-weighted mean over times. B is
               symbolic; h, w are the export's tile shape (manifest "tile_shape").

The seeds are an input, not drawn in the graph: jax2onnx does not convert JAX's random
generator (its threefry primitives), and a graph fed its seeds gives the same heatmaps on every
runtime. They are the seeds `--mode=evaluate` draws: `fmjax.core.threefry` computes them in
numpy from (evaluate.seed, the image's content hash `fmjax.core.ids.image_ids`, and in a tiled
export the pixel's position), equal to JAX's to one unit in the last place.

Blending tiles, the Gaussian smoothing, the image score, thresholds and normalised scores run
on the host as for the StableHLO export (`fmjax.deploy`), from the same manifest.json.

jax2onnx is imported here only; it is installed without its dependencies (README "Deploying":
its release pins an older orbax-checkpoint that fmjax's checkpoints do not need).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from fmjax.core.errors import ConfigError
from fmjax.methods import mismatch
from fmjax.score.session import ScoringSession

INPUT_NAMES = ("tiles", "labels", "seeds")
OUTPUT_NAMES = ("heatmaps",)
OPSET = 23


def _to_onnx():
  """jax2onnx's `to_onnx`, or a ConfigError saying how to install it."""
  # Its plugin discovery logs a warning for each optional library (equinox, dm_pix) it skips.
  logging.getLogger("jax2onnx").setLevel(logging.ERROR)
  try:
    from jax2onnx import to_onnx
  except ImportError as e:
    raise ConfigError(f"export.format=onnx needs jax2onnx ({e}): pip install -e '.[onnx]' && "
                      "pip install --no-deps jax2onnx==0.17.1") from None
  return to_onnx


def onnx_model(config, session: ScoringSession, tile_shape: tuple[int, int]) -> bytes:
  """The serialized ONNX model of the tile scorer (module docstring) for `session`'s params."""
  ec = config.evaluate
  if ec.method != "flow_mismatch":
    raise ConfigError(f"export.format=onnx exports evaluate.method=flow_mismatch; got "
                      f"{ec.method} (export it with export.format=stablehlo).")
  options = ec.flow_mismatch
  mismatch.validate_aggregator(options.aggregator, options.quantile)
  model_config = config.model.copy_and_resolve_references()
  model_config.attention_impl = "xla"
  from fmjax.model.unet import build_unet
  model = build_unet(model_config, len(session.class_names))
  params = jax.device_get(session.params)
  norm, k, t = session.norm, int(ec.num_seeds), int(ec.num_times)
  times = mismatch.interior_times(t)
  # One image per velocity call (its K x T samples, in chunks of max_forward_batch), as in the
  # StableHLO export (`mismatch.flow_mismatch` with a symbolic batch).
  forward_batch = max(1, min(int(ec.max_forward_batch), k * t))

  def score_tiles(tiles, labels, seeds):
    velocity = lambda x, tt, lab: model.apply({"params": params}, x, tt, lab)
    heat, _ = mismatch.flow_mismatch(velocity, norm.normalize(tiles), seeds, times, labels,
                                     options.aggregator, options.quantile,
                                     max_forward_batch=forward_batch)
    return heat.astype(jnp.float32)

  h, w = tile_shape
  (b,) = jax.export.symbolic_shape("B")
  specs = [jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8), jax.ShapeDtypeStruct((b,), jnp.int32),
           jax.ShapeDtypeStruct((b, k, h, w, 3), jnp.float32)]
  proto = _to_onnx()(score_tiles, specs, model_name="fmjax_flow_mismatch", opset=OPSET,
                     input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES))
  proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "B"  # as the inputs name it
  proto.doc_string = ("fmjax Flow Mismatching tile scorer: (tiles uint8 [B,h,w,3], labels int32 "
                      "[B], seeds float32 [B,K,h,w,3]) -> heatmaps float32 [B,h,w]; see "
                      "manifest.json")
  return proto.SerializeToString()


def check_graph(data: bytes) -> None:
  """onnx's checker on the serialized model (ValueError naming what is wrong)."""
  import onnx
  try:
    onnx.checker.check_model(onnx.load_from_string(data))
  except onnx.checker.ValidationError as e:
    raise ValueError(f"The exported ONNX graph is invalid: {str(e).splitlines()[0]}") from None

