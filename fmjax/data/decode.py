"""Decoding image and mask files into fixed-size arrays, strictly.

Every image becomes uint8 RGB [S,S,3]: greyscale is repeated over three
channels, alpha is dropped, palettes are expanded, 16-bit and 32-bit integer
images are scaled from their full range (65535) to 8 bits, and the result is
resized with an antialiased bilinear filter. Masks become uint8 {0,1} [S,S]
(any nonzero pixel is foreground, so VisA's non-binary masks work) resized with
nearest neighbour. A file that cannot be decoded raises `CorruptImageError`
naming it.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from fmjax.core.errors import CorruptDataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


CorruptImageError = CorruptDataError  # the name the data modules use


def _open(path: str) -> Image.Image:
  try:
    im = Image.open(path)
    im.load()  # decode now: truncated files fail here, not later
    return im
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise CorruptImageError(f"Cannot decode {path}: {e}") from e


def to_rgb8(im: Image.Image) -> Image.Image:
  """Any PIL image -> 8-bit RGB (16/32-bit integer images scaled from their full range)."""
  if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    arr = np.asarray(im).astype(np.float64)
    full = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
    im = Image.fromarray(np.round(np.clip(arr / full, 0, 1) * 255).astype(np.uint8))
  elif im.mode == "F":
    arr = np.asarray(im, np.float64)
    im = Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    im = im.convert("RGBA")
  return im.convert("RGB")


def read_image_and_size(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """An image file -> (uint8 RGB [size,size,3] (antialiased bilinear resize), original (w, h))."""
  with _open(path) as im:
    rgb = to_rgb8(im)
  original = rgb.size
  if original != (size, size):
    rgb = rgb.resize((size, size), Image.BILINEAR, reducing_gap=None)
  return np.asarray(rgb, np.uint8), original


def read_image(path: str, size: int) -> np.ndarray:
  """An image file -> uint8 RGB [size,size,3] (antialiased bilinear resize)."""
  return read_image_and_size(path, size)[0]


def read_mask(path: str, size: int, image_wh: tuple[int, int] | None = None,
              notes: list[str] | None = None) -> np.ndarray:
  """A mask file -> uint8 {0,1} [size,size]; foreground = any nonzero pixel.

  With `image_wh` (the image's original width, height), a mask of another size
  is resized to it with a warning before the final resize. Warnings go to
  `notes` when given (thread-safe), else to `warnings.warn`.
  """
  with _open(path) as im:
    m = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I;16", "I") else im)
  binary = Image.fromarray(((m > 0) * 255).astype(np.uint8))
  note = None
  if image_wh is not None and binary.size != tuple(image_wh):
    note = (f"Mask {path} is {binary.size[0]}x{binary.size[1]} but its image is "
            f"{image_wh[0]}x{image_wh[1]}; resizing the mask to the image (nearest).")
    binary = binary.resize(tuple(image_wh), Image.NEAREST)
  if binary.size != (size, size):
    binary = binary.resize((size, size), Image.NEAREST)
  out = (np.asarray(binary) > 127).astype(np.uint8)
  if not (m > 0).any():
    note = f"Mask {path} has no foreground pixel; its image counts as anomalous with an empty mask."
  elif not out.any():
    note = (f"Mask {path} loses all its foreground pixels when resized to {size}x{size} (nearest); "
            "its image counts as anomalous with an empty mask (a larger data.image_size keeps it).")
  if note is not None:
    if notes is None:
      warnings.warn(note, stacklevel=2)
    else:
      notes.append(note)
  return out
