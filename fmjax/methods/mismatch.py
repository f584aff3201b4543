"""The Flow Mismatching scorer (paper Section 3, Eqs. 2-4).

For a test image y, seeds x0^k ~ N(0, I) and interior times t_j = j / (T + 1):

  Z_t^k(i)  = || v(x_t^k, t)(i) - (y - x0^k)(i) ||^2   (summed over channels)
  delta_t(i) = aggregate_k Z_t^k(i)                    (min, mean or a quantile)
  H(i)      = (1/T) sum_t t^2 delta_t(i)                (heatmap)
  S         = max_i H(i) + mean of the top 1% of H       (image score)

All K seeds of a chunk of images and a chunk of times are folded into one forward
batch of at most `max_forward_batch` samples; chunks are scanned (no Python loop
over seeds or times), so memory stays bounded for any K * T * batch. `unrolled` traces
no loops at all (for ONNX graphs; the caller bounds the batch).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.extend.random  # noqa: F401  (threefry_2x32 for positional seeds)
import jax.numpy as jnp

AGGREGATORS = ("min", "mean", "quantile")
VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (x [N,H,W,C], t [N], labels [N])


def interior_times(num_times: int) -> jax.Array:
  """t_j = j / (T + 1), j = 1..T, float32 [T]."""
  if num_times < 1:
    raise ValueError(f"The number of times T must be >= 1, got {num_times}.")
  return jnp.arange(1, num_times + 1, dtype=jnp.float32) / (num_times + 1)


def validate_aggregator(aggregator: str, quantile: float | None) -> None:
  """Raises ValueError for an unknown aggregator or a quantile outside (0, 1]."""
  if aggregator not in AGGREGATORS:
    raise ValueError(f"Unknown aggregator {aggregator!r}: use one of {', '.join(AGGREGATORS)}.")
  if aggregator == "quantile" and (quantile is None or not 0.0 < quantile <= 1.0):
    raise ValueError(f"aggregator='quantile' needs a quantile in (0, 1], got {quantile!r}.")


def aggregate_seeds(z: jax.Array, aggregator: str, quantile: float | None = None, axis: int = 0):
  """Aggregates mismatches over the seed axis: min, mean, or the ceil(q K)-th order statistic."""
  if aggregator == "min":
    return jnp.min(z, axis=axis)
  if aggregator == "mean":
    return jnp.mean(z, axis=axis)
  rank = max(1, math.ceil(quantile * z.shape[axis] - 1e-9))  # 1-based order statistic
  return jnp.take(jnp.sort(z, axis=axis), rank - 1, axis=axis)


def image_score(heatmaps: jax.Array, top_fraction: float = 0.01) -> jax.Array:
  """S = max + mean of the top ceil(top_fraction * H * W) pixels; heatmaps [B,H,W] -> [B]."""
  flat = heatmaps.reshape(heatmaps.shape[0], -1)
  k = max(1, math.ceil(top_fraction * flat.shape[1]))
  top = jax.lax.top_k(flat, k)[0]
  return top[:, 0] + jnp.mean(top, axis=1)


def _at_most(b, chunk: int) -> int:
  """min(b, chunk) for a batch size b that may be symbolic (an exported function's batch):
  a symbolic b keeps `chunk`, so the function serves any batch."""
  return min(b, chunk) if isinstance(b, int) else chunk


def _chunks(total: int, chunk: int) -> tuple[int, int]:
  """(number of chunks, padded total) covering `total` items in pieces of `chunk`."""
  n = -(-total // chunk)
  return n, n * chunk


def times_per_call(num_times: int, samples_per_time: int, max_forward_batch: int) -> int:
  """Times in one call of the velocity field when each time takes `samples_per_time`
  samples (images x seeds): as many as fit max_forward_batch, at least one, at most all."""
  return max(1, min(num_times, max_forward_batch // samples_per_time))


def map_image_chunks(fn, *per_image: jax.Array, chunk: int) -> jax.Array:
  """fn(*chunks) -> [c,...] over the images in chunks of `chunk`, one after another.

  `per_image` arrays share their leading (image) axis B; the last chunk is padded
  with zeros and the padding dropped from the result. Returns [B,...].
  """
  b = per_image[0].shape[0]
  chunk = max(1, _at_most(b, chunk))
  n, b_pad = _chunks(b, chunk)
  split = lambda a: jnp.pad(a, [(0, b_pad - b)] + [(0, 0)] * (a.ndim - 1)).reshape(
      (n, chunk) + a.shape[1:])
  out = jax.lax.map(lambda args: fn(*args), tuple(split(a) for a in per_image))
  return out.reshape((b_pad,) + out.shape[2:])[:b]


def flow_mismatch(velocity_fn: VelocityFn, y: jax.Array, x0: jax.Array, times: jax.Array,
                  labels: jax.Array, aggregator: str = "min", quantile: float | None = None, *,
                  max_forward_batch: int = 1024, top_fraction: float = 0.01,
                  unrolled: bool = False):
  """Flow Mismatching heatmaps and image scores.

  Args:
    velocity_fn: v(x [N,H,W,C], t [N], labels [N]) -> [N,H,W,C].
    y: test images [B,H,W,C].
    x0: Gaussian seeds [B,K,H,W,C].
    times: interior times [T].
    labels: the images' class labels [B] (the null label for pooled models).
    aggregator: "min" (paper default), "mean" or "quantile".
    quantile: q in (0, 1] for "quantile" (the ceil(q K)-th order statistic).
    max_forward_batch: the largest number of samples in one call of velocity_fn (with
      `unrolled`, per image: a call takes B * K * min(T, max_forward_batch // K) samples).
    unrolled: no loops in the traced function: all B images go into every call of
      velocity_fn and the chunks of times are unrolled, so the caller bounds B. For graphs
      run where loops are slow: onnxruntime neither prepacks the convolution weights of a
      loop's body nor folds their transposes (the quickstart U-Net ran 1.6x slower in a loop).

  Returns:
    heatmaps [B,H,W] float32 and scores [B] float32.
  """
  validate_aggregator(aggregator, quantile)
  if y.ndim != 4 or x0.ndim != 5 or x0.shape[0] != y.shape[0] or x0.shape[2:] != y.shape[1:]:
    raise ValueError(f"Expected y [B,H,W,C] and x0 [B,K,H,W,C], got {y.shape} and {x0.shape}.")
  times = jnp.asarray(times, jnp.float32)
  if times.ndim != 1 or times.shape[0] < 1:
    raise ValueError(f"times must be a non-empty vector, got shape {times.shape}.")
  b, k = x0.shape[:2]
  num_t = times.shape[0]
  if k < 1:
    raise ValueError("The number of seeds K must be >= 1.")

  # Images per chunk, then times per chunk, so that images * K * times <= max_forward_batch.
  if unrolled:  # chunks of times sized for one image; all B images go into each call
    img_chunk = 1
  elif isinstance(b, int):
    img_chunk = max(1, min(b, max_forward_batch // k))
  else:  # a symbolic batch (an exported scorer): one image per chunk, the only chunk that
    img_chunk = 1  # divides every batch, so a call costs what its images cost (no padding)
  t_chunk = times_per_call(num_t, img_chunk * k, max_forward_batch)
  n_t, t_pad = _chunks(num_t, t_chunk)
  t_all = jnp.pad(times, (0, t_pad - num_t))
  t_weight = jnp.pad(jnp.square(times), (0, t_pad - num_t))  # padded times weigh 0
  lab = jnp.asarray(labels, jnp.int32)

  def heatmap_chunk(yc, x0c, lc):  # [bc,H,W,C], [bc,K,H,W,C], [bc]
    target = yc[:, None] - x0c  # geometric velocity y - x0

    def time_chunk(acc, ts_ws):
      ts, ws = ts_ws  # [tc]
      tb = ts[:, None, None, None, None, None]
      xt = (1.0 - tb) * x0c[None] + tb * yc[None, :, None]  # [tc,bc,K,H,W,C]
      flat = xt.reshape((-1,) + xt.shape[3:])
      tt = jnp.broadcast_to(ts[:, None, None], xt.shape[:3]).reshape(-1)
      v = velocity_fn(flat, tt, jnp.broadcast_to(lc[None, :, None], xt.shape[:3]).reshape(-1))
      v = v.astype(jnp.float32).reshape(xt.shape)
      z = jnp.sum(jnp.square(v - target[None]), axis=-1)  # [tc,bc,K,H,W]
      delta = aggregate_seeds(z, aggregator, quantile, axis=2)  # [tc,bc,H,W]
      if unrolled:  # a product and a sum, not a matrix product: OpenVINO computes what lies
        # between the outputs and the last matrix product in float32, also in bf16 mode
        return acc + jnp.sum(ws[:, None, None, None] * delta, axis=0), None
      return acc + jnp.einsum("t,tbhw->bhw", ws, delta), None

    acc0 = jnp.zeros_like(yc[..., 0])  # inherits the per-device (shard_map) type
    if unrolled:  # the last chunk is shorter instead of padded
      acc = acc0
      for start in range(0, num_t, t_chunk):
        ts = times[start:start + t_chunk]
        acc, _ = time_chunk(acc, (ts, jnp.square(ts)))
      return acc / num_t
    ts_ws = (t_all.reshape(n_t, t_chunk), t_weight.reshape(n_t, t_chunk))
    acc, _ = jax.lax.scan(time_chunk, acc0, ts_ws)
    return acc / num_t

  y32, x0_32 = y.astype(jnp.float32), x0.astype(jnp.float32)
  if unrolled:
    heatmaps = heatmap_chunk(y32, x0_32, lab)
  else:
    heatmaps = map_image_chunks(heatmap_chunk, y32, x0_32, lab, chunk=img_chunk)
  return heatmaps, image_score(heatmaps, top_fraction)


def draw_seeds(key: jax.Array, image_ids: jax.Array, num_seeds: int, image_shape) -> jax.Array:
  """Seeds x0 [B,K,H,W,C] for images with global ids [B]: image i's seeds depend only on (key, i)."""
  if num_seeds < 1:
    raise ValueError(f"The number of seeds K must be >= 1, got {num_seeds}.")
  draw = lambda i: jax.random.normal(jax.random.fold_in(key, i), (num_seeds,) + tuple(image_shape))
  return jax.vmap(draw)(image_ids)


def positional_seeds(key: jax.Array, image_ids: jax.Array, num_seeds: int, tile_shape,
                     origins: jax.Array) -> jax.Array:
  """Seeds x0 [B,K,h,w,C] of tiles of shape (h, w, C) at `origins` (int32 [B,2]: row, column)
  of images with global ids [B], in which every value depends only on (key, image id, its
  pixel's row and column in the whole image, k, c).

  A tile's seeds are therefore the whole image's seeds cut to the tile, so how an image is
  tiled does not change the noise any pixel sees. Each value is a standard normal made from
  32 bits of the Threefry-2x32 hash of the counter pair (row, (column K + k) C + c) under the
  image's key fold_in(key, id).
  """
  if num_seeds < 1:
    raise ValueError(f"The number of seeds K must be >= 1, got {num_seeds}.")
  h, w, c = tuple(tile_shape)
  k = num_seeds
  kk, cc = jnp.arange(k, dtype=jnp.uint32), jnp.arange(c, dtype=jnp.uint32)

  def one_tile(i, origin):
    # Counters [K,h,w,C]: the high word is the row, the low word the position within the row.
    rows = (origin[0] + jnp.arange(h, dtype=jnp.int32)).astype(jnp.uint32)
    cols = (origin[1] + jnp.arange(w, dtype=jnp.int32)).astype(jnp.uint32)
    hi = jnp.broadcast_to(rows[None, :, None, None], (k, h, w, c))
    lo = (cols[None, None, :, None] * k + kk[:, None, None, None]) * c + cc[None, None, None, :]
    lo = jnp.broadcast_to(lo, (k, h, w, c))
    pair = jax.random.key_data(jax.random.fold_in(key, i))
    bits = jax.extend.random.threefry_2x32(pair, jnp.concatenate([hi.ravel(), lo.ravel()]))
    return bits[:hi.size].reshape(hi.shape)  # the first word of each (hi, lo) pair's hash

  bits = jax.vmap(one_tile)(image_ids, jnp.asarray(origins, jnp.int32))
  # 23 mantissa bits -> a uniform in [1, 2) -> (-1, 1) -> a normal by the inverse error function.
  u = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0
  u = jnp.maximum(2.0 * u - 1.0, jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0)))
  return jnp.sqrt(jnp.float32(2.0)) * jax.scipy.special.erfinv(u)


def score_images(velocity_fn: VelocityFn, y: jax.Array, labels: jax.Array, key: jax.Array,
                 num_seeds: int = 10, num_times: int = 10, aggregator: str = "min",
                 quantile: float | None = None, image_ids: jax.Array | None = None, **kwargs):
  """flow_mismatch with seeds drawn from `key` and t_j = j / (T + 1): -> (heatmaps, scores)."""
  if image_ids is None:
    image_ids = jnp.arange(y.shape[0])
  x0 = draw_seeds(key, image_ids, num_seeds, y.shape[1:])
  return flow_mismatch(velocity_fn, y, x0, interior_times(num_times), labels, aggregator, quantile,
                       **kwargs)
