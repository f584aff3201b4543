"""The scorer as one ONNX graph (`--mode=export --config.export.format=onnx`), by jax2onnx.

  model.onnx   inputs:  tiles uint8 [B,h,w,3]      images (or tiles of them) of tile_shape
                        category int32 [B]         index into the manifest's class_names
                        seeds float32 [B,K,h,w,3]  the Gaussian seeds (below)
               outputs: tile_heatmaps float32 [B,h,w]   before smoothing (what tiled scoring
                                                        blends)
               and, when images are scored whole at their size (evaluate.tile_size 0 and
               data.image_size a multiple of the model's stride):
                        heatmaps float32 [B,h,w]   smoothed (evaluate.smoothing_sigma)
                        scores float32 [B]         max + mean of the top 1% of the heatmap
                        normalised float32 [B]     0.5 at the decision threshold (NaN when the
                                                   category has no calibrated scale)
                        decisions bool [B]         anomalous (False without a threshold)

The graph holds the velocity U-Net (channels-first inside: `fmjax.model.unet`'s layout "NCHW")
with its parameters, the training images' normalisation,
and Flow Mismatching: the T interior times t_j = j / (T + 1), the paths x_t = (1 - t) x0 + t y,
the mismatch ||v - (y - x0)||^2 over channels, the aggregation over the K seeds and the
t^2-weighted mean over times; then the smoothing, the image score and each category's
threshold and score scale as constants. B is symbolic.

The seeds are an input, not drawn in the graph: jax2onnx does not convert JAX's random
generator (its threefry primitives), and a graph fed its seeds gives the same heatmaps on every
runtime. They are the seeds `--mode=evaluate` draws: `fmjax.core.threefry` computes them in
numpy from (evaluate.seed, the image's content hash `fmjax.core.ids.image_ids`, and in a tiled
export the pixel's position), equal to JAX's to one unit in the last place.

The graph has no loops (onnxruntime runs a loop's body without prepacked convolution
weights): all images of a run go into each U-Net call, so a run's memory grows with its batch,
and `fmjax.deploy` feeds the manifest's `onnx.images_per_call` images per run.

`fmjax.deploy` feeds the graph: for whole images it takes `heatmaps` and `scores`; for tiles it
blends, smooths and scores tile_heatmaps on the host (`fmjax.score.maps`), as for the StableHLO
export. tests/test_onnx.py checks the graph's outputs equal the host's finishing.

jax2onnx is imported here only; it is installed without its dependencies (README "Deploying":
its release pins an older orbax-checkpoint that fmjax's checkpoints do not need).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.core.errors import ConfigError
from fmjax.methods import mismatch
from fmjax.score.session import ScoringSession

INPUT_NAMES = ("tiles", "category", "seeds")
TILE_OUTPUT = "tile_heatmaps"
IMAGE_OUTPUTS = ("heatmaps", "scores", "normalised", "decisions")
OPSET = 23
# Samples x pixels in one run of several images (the quickstart's 512 samples of 32x32): small
# models batch images up to this; a run of one image may be larger (its K x T samples).
MAX_SAMPLE_PIXELS_PER_RUN = 512 * 32 * 32


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


def whole_images(config, tile_shape) -> bool:
  """Whether the graph scores whole images at their size (and so gives their final outputs)."""
  size = config.data.image_size
  return int(config.evaluate.tile_size) == 0 and tuple(tile_shape) == (size, size)


def _gaussian_taps(sigma: float) -> np.ndarray:
  """scipy.ndimage.gaussian_filter's 1-D kernel (truncate 4.0), float32."""
  radius = int(4.0 * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (x / sigma) ** 2)
  return (taps / taps.sum()).astype(np.float32)


def smooth(heatmaps: jax.Array, sigma: float) -> jax.Array:
  """heatmaps [B,H,W] filtered like `fmjax.score.maps.smooth` (scipy's gaussian_filter, mode
  "reflect": numpy's "symmetric"), separably, in float32; unchanged for sigma 0."""
  if not sigma:
    return heatmaps
  taps = _gaussian_taps(sigma)
  r = (len(taps) - 1) // 2
  for axis in (1, 2):
    widths = [(0, 0)] * 3
    widths[axis] = (r, r)
    padded = jnp.pad(heatmaps, widths, mode="symmetric")
    n = heatmaps.shape[axis]
    heatmaps = sum(float(w) * jax.lax.slice_in_dim(padded, i, i + n, axis=axis)
                   for i, w in enumerate(taps))
  return heatmaps


def _category_tables(class_names, thresholds: dict) -> dict:
  """Per-category constants [C] of the decision and the normalised score (manifest thresholds)."""
  from fmjax.decide.normalize import ScoreScale
  table = {"threshold": [], "strict": [], "low": [], "scale_threshold": []}
  for name in class_names:
    entry = thresholds.get(name, {})
    table["threshold"].append(np.nan if entry.get("image") is None else entry["image"])
    table["strict"].append(bool(entry.get("strict", True)))
    scale = entry.get("image_scale")
    scale = scale and ScoreScale.from_json(scale)
    table["low"].append(np.nan if not scale else scale.low)
    table["scale_threshold"].append(np.nan if not scale else scale.decision_threshold)
  return {k: np.asarray(v, bool if k == "strict" else np.float32) for k, v in table.items()}


def images_per_call(eval_config, tile_shape: tuple[int, int]) -> int:
  """Images (or tiles) fmjax.deploy feeds model.onnx per run. The graph has no loops, so a
  run's memory grows with its batch: as many images as fill evaluate.max_forward_batch samples
  (each image's K seeds times its chunk of times) while the samples' pixels stay within
  MAX_SAMPLE_PIXELS_PER_RUN; at least one (what exports before this rule always took)."""
  k, t = int(eval_config.num_seeds), int(eval_config.num_times)
  forward_batch = max(1, int(eval_config.max_forward_batch))
  per_image = k * mismatch.times_per_call(t, k, forward_batch)  # flow_mismatch's chunk of times
  samples = min(forward_batch, MAX_SAMPLE_PIXELS_PER_RUN // (tile_shape[0] * tile_shape[1]))
  return max(1, samples // per_image)


def onnx_model(config, session: ScoringSession, tile_shape: tuple[int, int],
               thresholds: dict) -> bytes:
  """The serialized ONNX model (module docstring) for `session`'s params and the manifest's
  per-category `thresholds`."""
  ec = config.evaluate
  if ec.method != "flow_mismatch":
    raise ConfigError(f"export.format=onnx exports evaluate.method=flow_mismatch; got "
                      f"{ec.method} (export it with export.format=stablehlo).")
  options = ec.flow_mismatch
  mismatch.validate_aggregator(options.aggregator, options.quantile)
  model_config = config.model.copy_and_resolve_references()
  model_config.attention_impl = "xla"
  from fmjax.model.unet import build_unet
  from fmjax.score.maps import sigma_pixels
  # Channels-first inside: the runtimes convolve NCHW, so an NHWC U-Net's graph wraps every
  # convolution in transposes (OpenVINO ran 331 of them per paper-model run, 25% of its time).
  model = build_unet(model_config, len(session.class_names), layout="NCHW")
  params = jax.device_get(session.params)
  norm, k, t = session.norm, int(ec.num_seeds), int(ec.num_times)
  times = mismatch.interior_times(t)
  # No Loop nodes: every image of a run in each velocity call, the time chunks unrolled
  # (`mismatch.flow_mismatch(unrolled=True)`); fmjax.deploy feeds `images_per_call` images.
  forward_batch = max(1, int(ec.max_forward_batch))
  conditional, null_label = bool(config.data.class_conditional), len(session.class_names)
  h, w = tile_shape
  whole = whole_images(config, tile_shape)
  sigma = sigma_pixels(ec, h, w)
  tables = _category_tables(session.class_names, thresholds)

  def score(tiles, category, seeds):
    labels = category if conditional else jnp.full_like(category, null_label)
    velocity = lambda x, tt, lab: model.apply({"params": params}, x, tt, lab)
    raw, _ = mismatch.flow_mismatch(velocity, norm.normalize(tiles), seeds, times, labels,
                                    options.aggregator, options.quantile,
                                    max_forward_batch=forward_batch, unrolled=True)
    raw = raw.astype(jnp.float32)
    if not whole:
      return raw
    heat = smooth(raw, sigma) if sigma else raw + 0.0  # its own value: an output of its own name
    scores = mismatch.image_score(heat)
    c = {name: jnp.asarray(v)[category] for name, v in tables.items()}
    # Boolean algebra, not a select: onnxruntime has no Where over booleans.
    decisions = ((c["strict"] & (scores > c["threshold"])) |
                 (~c["strict"] & (scores >= c["threshold"])))
    span = c["scale_threshold"] - c["low"]
    normalised = jnp.where(span > 0, jnp.clip(0.5 * (scores - c["low"]) / jnp.where(span > 0, span, 1.0), 0.0, 1.0),
                           (scores > c["scale_threshold"]).astype(jnp.float32))
    normalised = jnp.where(jnp.isnan(c["low"]), jnp.nan, normalised)
    return raw, heat, scores, normalised, decisions

  (b,) = jax.export.symbolic_shape("B")
  specs = [jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8), jax.ShapeDtypeStruct((b,), jnp.int32),
           jax.ShapeDtypeStruct((b, k, h, w, 3), jnp.float32)]
  outputs = [TILE_OUTPUT] + (list(IMAGE_OUTPUTS) if whole else [])
  proto = _to_onnx()(score, specs, model_name="fmjax_flow_mismatch", opset=OPSET,
                     input_names=list(INPUT_NAMES), output_names=outputs)
  for out in proto.graph.output:
    out.type.tensor_type.shape.dim[0].dim_param = "B"  # as the inputs name it
  proto.doc_string = ("fmjax Flow Mismatching: (tiles uint8 [B,h,w,3], category int32 [B], seeds "
                      f"float32 [B,K,h,w,3]) -> {', '.join(outputs)}; see manifest.json")
  return proto.SerializeToString()


def check_graph(data: bytes) -> None:
  """onnx's checker on the serialized model (ValueError naming what is wrong)."""
  import onnx
  try:
    onnx.checker.check_model(onnx.load_from_string(data))
  except onnx.checker.ValidationError as e:
    raise ValueError(f"The exported ONNX graph is invalid: {str(e).splitlines()[0]}") from None

