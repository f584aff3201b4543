"""Scoring an image of any size: stride padding, overlapping tiles and their blending.

Rule for the model's stride s = 2^(levels - 1): an image whose side is not a multiple of s
is padded at its bottom and right edges, by reflection, to the next multiple; it is scored
padded and its heatmap cropped back, so a heatmap always has the image's own shape.

Tiles (`evaluate.tile_size` > 0): square tiles of side `tile` (a multiple of s) start every
`tile - overlap` pixels; the last tile of a row or column is moved back to end at the
image's edge, so tiles never leave the image. A side no longer than `tile` is one tile of
that side's (padded) length: a tile larger than the image scores the whole image.

Blending: tile i's heatmap is weighted by w_i(y, x) = a_i(y) b_i(x) / (A(y) B(x)), where a_i, b_i
are 1-D windows that rise linearly over the overlap from 1/(overlap + 1) to 1 at the tile's
edges facing other tiles (1 elsewhere) and A, B are their sums over the tiles of a column /
row. The windows are separable, so the weights sum to 1 at every pixel exactly as A and B
normalise them, and a pixel's value is a convex mix of the tiles that cover it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.core.errors import ConfigError
from fmjax.score.settings import model_stride, tile_overlap  # noqa: F401  (re-exported)


def padded_side(side: int, stride: int) -> int:
  return -(-side // stride) * stride


def tile_starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
  """Starts of the tiles of side `tile` covering [0, length) with `overlap` pixels between
  neighbours (the last one ends at `length`); (0,) when one tile covers it (tile >= length)."""
  if tile >= length:
    return (0,)
  step = tile - overlap
  starts = list(range(0, length - tile, step)) + [length - tile]
  return tuple(sorted(set(starts)))


def _windows(length: int, tile: int, starts: tuple[int, ...], overlap: int) -> np.ndarray:
  """Normalised 1-D blend weights [len(starts), tile] (summing to 1 at every position)."""
  ramp = (np.arange(tile, dtype=np.float64) + 1.0) / (overlap + 1.0)
  windows = np.ones((len(starts), tile), np.float64)
  for i, s in enumerate(starts):
    if overlap > 0 and i > 0:  # rises from its first pixel where a previous tile overlaps
      windows[i] = np.minimum(windows[i], ramp)
    if overlap > 0 and i < len(starts) - 1:  # falls to its last pixel where the next overlaps
      windows[i] = np.minimum(windows[i], ramp[::-1])
  total = np.zeros(length, np.float64)
  for i, s in enumerate(starts):
    total[s:s + tile] += windows[i]
  return np.stack([windows[i] / total[s:s + tile] for i, s in enumerate(starts)]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TileGrid:
  """Tiles over a (padded) image of `height` x `width`: tile sides, starts and 1-D weights."""
  height: int
  width: int
  tile_h: int
  tile_w: int
  ys: tuple[int, ...]
  xs: tuple[int, ...]
  weights_y: np.ndarray  # [len(ys), tile_h]
  weights_x: np.ndarray  # [len(xs), tile_w]

  @property
  def num_tiles(self) -> int:
    return len(self.ys) * len(self.xs)

  def weight(self, iy: int, ix: int) -> np.ndarray:
    """The 2-D blend weights [tile_h, tile_w] of tile (iy, ix)."""
    return self.weights_y[iy][:, None] * self.weights_x[ix][None, :]


def tile_grid(height: int, width: int, tile: int, overlap: int) -> TileGrid:
  """The tiles of `tile_starts` along both sides of a `height` x `width` image (tile 0: one tile)."""
  tile_h = height if tile == 0 else min(tile, height)
  tile_w = width if tile == 0 else min(tile, width)
  ys, xs = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
  return TileGrid(height, width, tile_h, tile_w, ys, xs,
                  _windows(height, tile_h, ys, min(overlap, tile_h - 1)),
                  _windows(width, tile_w, xs, min(overlap, tile_w - 1)))


def pad_to_stride(images: jax.Array, stride: int) -> jax.Array:
  """[B,H,W,C] padded at the bottom and right, by reflection, to multiples of `stride`."""
  h, w = images.shape[1:3]
  ph, pw = padded_side(h, stride) - h, padded_side(w, stride) - w
  if ph == 0 and pw == 0:
    return images
  if ph >= h or pw >= w:  # reflection needs a side longer than the pad
    return jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
  return jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")


def blend_tiles(tile_heatmaps, y: jax.Array, grid: TileGrid) -> jax.Array:
  """Heatmaps [B,H,W] of images y [B,H,W,C] (H, W = grid.height, grid.width) from
  `tile_heatmaps(y_tile [B,th,tw,C], origin int32 [2]) -> [B,th,tw]`, one tile at a time
  (a scan, so memory holds one tile's work and the [B,H,W] sum), blended by the grid's weights.
  """
  if grid.num_tiles == 1:  # the whole image: no scan, no weights
    return tile_heatmaps(y, jnp.zeros((2,), jnp.int32)).astype(jnp.float32)
  b, c = y.shape[0], y.shape[-1]
  th, tw = grid.tile_h, grid.tile_w
  iy, ix = np.meshgrid(np.arange(len(grid.ys)), np.arange(len(grid.xs)), indexing="ij")
  iy, ix = iy.ravel(), ix.ravel()
  origins = jnp.asarray(np.stack([np.asarray(grid.ys)[iy], np.asarray(grid.xs)[ix]], 1), jnp.int32)
  wy, wx = jnp.asarray(grid.weights_y), jnp.asarray(grid.weights_x)
  index = jnp.asarray(np.stack([iy, ix], 1), jnp.int32)
  zero = jnp.zeros((), jnp.int32)

  def one_tile(acc, tile):
    origin, (i, j) = tile
    y0, x0 = origin[0], origin[1]
    y_tile = jax.lax.dynamic_slice(y, (zero, y0, x0, zero), (b, th, tw, c))
    heat = tile_heatmaps(y_tile, origin).astype(jnp.float32)
    weighted = heat * (wy[i][:, None] * wx[j][None, :])[None]
    current = jax.lax.dynamic_slice(acc, (zero, y0, x0), (b, th, tw))
    return jax.lax.dynamic_update_slice(acc, current + weighted, (zero, y0, x0)), None

  acc0 = jnp.zeros_like(y[..., 0], jnp.float32)
  acc, _ = jax.lax.scan(one_tile, acc0, (origins, index))
  return acc


def check_image_size(height: int, width: int, max_pixels: int) -> None:
  """Refuses images above `max_pixels` (evaluate.max_image_pixels; 0: no limit), naming it."""
  if max_pixels and height * width > max_pixels:
    raise ConfigError(
        f"An image of {width}x{height} = {height * width / 1e6:.1f} megapixels is above "
        f"evaluate.max_image_pixels = {max_pixels / 1e6:.1f} megapixels; raise the limit (memory "
        f"grows with the image: about 8 bytes per pixel per image, beside the tiles' work), or "
        f"resize the images (data.resize).")
