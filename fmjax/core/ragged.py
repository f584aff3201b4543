"""Arrays of images or maps that may differ in size (numpy only).

Images of one size are stacked [N,H,W,...]; images of many sizes (`data.resize` other than
square) are a 1-D object array of [H_i,W_i,...] arrays, which indexes, masks and iterates
like the stack.
"""

from __future__ import annotations

import numpy as np


def stack(arrays) -> np.ndarray:
  """[N,H,W,...] when the arrays share a shape, else a 1-D object array of them."""
  arrays = list(arrays)
  if all(a.shape == arrays[0].shape for a in arrays):
    return np.stack(arrays)
  out = np.empty(len(arrays), object)
  for i, a in enumerate(arrays):
    out[i] = a
  return out


def pixels(maps, dtype=np.float64) -> np.ndarray:
  """Every value of `maps` ([N,H,W] or N maps of any sizes), pooled into one 1-D array."""
  maps = np.asarray(maps) if not isinstance(maps, (list, tuple)) else maps
  if isinstance(maps, np.ndarray) and maps.dtype != object:
    return maps.astype(dtype, copy=False).ravel()
  if len(maps) == 0:
    return np.zeros(0, dtype)
  return np.concatenate([np.asarray(m, dtype).ravel() for m in maps])
