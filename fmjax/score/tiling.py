"""Scoring an image of any size: stride padding, overlapping tiles, blending (numpy, no JAX).

The device scores tiles of one shape at a time; this module cuts images into those tiles and
puts the tiles' heatmaps back together on the host, so one compiled function serves images
of every size, device memory depends on the tile and not on the image, and the exported
scorer (`fmjax.deploy`) assembles maps with the same code.

Rule for the model's stride s = 2^(levels - 1): an image whose side is not a multiple of s
is padded at its bottom and right edges, by reflection (numpy's "reflect", repeated for pads
longer than the side), to the next multiple; it is scored padded and its heatmap cropped
back, so a heatmap always has the image's own shape.

Tiles (`evaluate.tile_size` > 0): square tiles of side `tile` (a multiple of s) start every
`tile - overlap` pixels; the last tile of a row or column is moved back to end at the
image's edge, so tiles never leave the image. A side shorter than `tile` is padded (by the
same reflection) up to `tile` and is one tile: a tile larger than the image scores the
whole image. Every tile therefore has the shape tile x tile, and one compiled function
serves images of all sizes. `tile_size` 0 scores every image whole, at its padded size.

Blending: tile i's heatmap is weighted by w_i(y, x) = a_i(y) b_i(x) / (A(y) B(x)), where a_i, b_i
are 1-D windows that rise linearly over the overlap from 1/(overlap + 1) to 1 at the tile's
edges facing other tiles (1 elsewhere) and A, B are their sums over the tiles of a column /
row. The windows are separable, so the weights sum to 1 at every pixel exactly as A and B
normalise them, and a pixel's value is a convex mix of the tiles that cover it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

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
  for i in range(len(starts)):
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


def scored_shape(height: int, width: int, stride: int, tile: int) -> tuple[int, int]:
  """The padded size an image of `height` x `width` is scored at: its sides rounded up to
  multiples of `stride`, and (with tiles) to at least `tile`."""
  return max(padded_side(height, stride), tile), max(padded_side(width, stride), tile)


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """An image [H,W,...] padded at the bottom and right, by reflection, to `height` x `width`."""
  h, w = image.shape[:2]
  if (h, w) == (height, width):
    return image
  widths = ((0, height - h), (0, width - w)) + ((0, 0),) * (image.ndim - 2)
  return np.pad(image, widths, mode="reflect")


def pad_to_stride(image: np.ndarray, stride: int) -> np.ndarray:
  """An image [H,W,...] padded at the bottom and right, by reflection, to multiples of `stride`."""
  h, w = image.shape[:2]
  return pad_to(image, padded_side(h, stride), padded_side(w, stride))


@dataclasses.dataclass(frozen=True)
class Tile:
  """One piece of work for the device: rows y0:y0+h, columns x0:x0+w of padded image `image`."""
  image: int  # index of the image in the scored list
  index: tuple[int, int]  # (row, column) of the tile in its image's grid
  y0: int
  x0: int
  h: int
  w: int


class Tiler:
  """Cuts images of any sizes into tiles and blends the tiles' heatmaps back into one map per
  image (cropped to the image's size).

    tiler = Tiler(shapes, stride, tile, overlap)
    for shape, tiles in tiler.groups(batch): ...   # tiles of one shape, `batch` at a time
      pixels = tiler.cut(images, tiles)           # uint8 [n,h,w,C]
      for image, heatmap in tiler.add(tiles, heat): ...  # the images these tiles completed
  """

  def __init__(self, shapes: Sequence[tuple[int, int]], stride: int, tile: int, overlap: int):
    self.shapes = [tuple(int(v) for v in s[:2]) for s in shapes]
    self.stride, self.tile, self.overlap = stride, tile, overlap
    self.grids = [tile_grid(*scored_shape(h, w, stride, tile), tile, overlap)
                  for h, w in self.shapes]
    self._left = [g.num_tiles for g in self.grids]  # tiles still to come, per image
    self._maps: dict[int, np.ndarray] = {}  # blended sums of images in progress
    self._padded: dict[int, np.ndarray] = {}  # padded pixels of images being cut

  @property
  def num_tiles(self) -> int:
    return sum(g.num_tiles for g in self.grids)

  def tiles(self) -> list[Tile]:
    """Every tile, image by image (row-major within an image)."""
    out = []
    for i, g in enumerate(self.grids):
      for iy, y0 in enumerate(g.ys):
        for ix, x0 in enumerate(g.xs):
          out.append(Tile(i, (iy, ix), y0, x0, g.tile_h, g.tile_w))
    return out

  def groups(self, batch: int) -> Iterator[list[Tile]]:
    """Lists of at most `batch` tiles of one shape, shapes in order of first appearance and
    images in order within a shape (so an image's tiles are cut and finished together)."""
    by_shape: dict[tuple[int, int], list[Tile]] = {}
    for t in self.tiles():
      by_shape.setdefault((t.h, t.w), []).append(t)
    for tiles in by_shape.values():
      for start in range(0, len(tiles), batch):
        yield tiles[start:start + batch]

  def cut(self, images, tiles: Sequence[Tile]) -> np.ndarray:
    """The tiles' pixels [n,h,w,C] from `images` (a sequence of [H,W,C] arrays)."""
    out = []
    for t in tiles:
      padded = self._padded.get(t.image)
      if padded is None:
        g = self.grids[t.image]
        padded = self._padded[t.image] = pad_to(np.asarray(images[t.image]), g.height, g.width)
      out.append(padded[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w])
      self._cut_done(t)
    return np.stack(out)

  def _cut_done(self, t: Tile) -> None:
    g = self.grids[t.image]
    if t.index == (len(g.ys) - 1, len(g.xs) - 1):  # its image's last tile: drop its pixels
      self._padded.pop(t.image, None)

  def add(self, tiles: Sequence[Tile], heatmaps: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Blends the tiles' heatmaps [n,h,w]; returns (image index, heatmap float32 [H,W]) for every
    image whose last tile this was."""
    done = []
    for t, heat in zip(tiles, heatmaps):
      g = self.grids[t.image]
      if g.num_tiles == 1:
        whole = np.asarray(heat, np.float32)
      else:
        acc = self._maps.get(t.image)
        if acc is None:
          acc = self._maps[t.image] = np.zeros((g.height, g.width), np.float32)
        acc[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] += heat * g.weight(*t.index)
      self._left[t.image] -= 1
      if self._left[t.image] == 0:
        if g.num_tiles > 1:
          whole = self._maps.pop(t.image)
        h, w = self.shapes[t.image]
        done.append((t.image, np.ascontiguousarray(whole[:h, :w])))
    return done


def positions(tiles: Sequence[Tile]) -> tuple[np.ndarray, np.ndarray]:
  """(image index [n], origin int32 [n,2]: row, column) of n tiles, as the score function takes them."""
  return (np.array([t.image for t in tiles]),
          np.array([(t.y0, t.x0) for t in tiles], np.int32).reshape(-1, 2))


def check_image_size(height: int, width: int, max_pixels: int) -> None:
  """Refuses images above `max_pixels` (evaluate.max_image_pixels; 0: no limit), naming it."""
  if max_pixels and height * width > max_pixels:
    raise ConfigError(
        f"An image of {width}x{height} = {height * width / 1e6:.1f} megapixels is above "
        f"evaluate.max_image_pixels = {max_pixels / 1e6:.1f} megapixels; raise the limit (the "
        f"host holds about 8 bytes per pixel of each image in progress; device memory depends "
        f"only on the tile), or resize the images (data.resize).")
