"""Decoding image and mask files into arrays, strictly, at the size `data.resize` asks for.

Every image becomes uint8 RGB [H,W,3]: greyscale is repeated over three
channels, alpha is dropped, palettes are expanded, 16-bit and 32-bit integer
images are scaled from their full range (65535) to 8 bits, and the result is
resized with an antialiased bilinear filter. Masks become uint8 {0,1} [H,W]
(any nonzero pixel is foreground, so VisA's non-binary masks work) resized with
nearest neighbour to their image's size. A file that cannot be decoded raises
`CorruptImageError` naming it. So does a file of more than `MAX_FILE_PIXELS` pixels, refused
from its header before anything is decoded (this replaces Pillow's decompression-bomb guard,
which names no file), so an oversized image costs neither memory nor time; scoring has its own
limit on the size an image is scored at (`evaluate.max_image_pixels`).

`data.resize` (`resized_size`) sets H, W from the file's width w and height h:
  square         S x S (S = data.image_size): squashed, the aspect ratio is lost
  scale:<f>      round(f w) x round(f h)
  long_side:<n>  the long side n, the short side in proportion (rounded)
  native         w x h, the file's own size
The last three keep the aspect ratio (to rounding), so one dataset may hold many sizes.
Sides need not be multiples of the model's stride: scoring pads them
(`fmjax.score.tiling`), and training crops (`data.crop_size`) are multiples.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from fmjax.core.errors import CorruptDataError
from fmjax.core.ragged import stack as stack_images  # noqa: F401  (the data modules' name)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


CorruptImageError = CorruptDataError  # the name the data modules use

RESIZE_RULES = ("square", "scale:<f>", "long_side:<n>", "native")

# The largest file (width x height) the reader decodes: 200 megapixels, 600 MB as RGB, e.g. a
# 14142 x 14142 scan. Pillow's own guard is off; this one names the file and the limit.
MAX_FILE_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = None


def parse_resize(rule: str) -> tuple[str, float]:
  """data.resize -> (kind, value): ("square", 0), ("scale", f), ("long_side", n) or
  ("native", 0); ValueError naming the valid forms otherwise."""
  text = str(rule).strip()
  kind, _, value = text.partition(":")
  try:
    if kind in ("square", "native") and not value:
      return kind, 0.0
    if kind == "scale" and 0 < float(value) <= 16:
      return kind, float(value)
    if kind == "long_side" and value.isdigit() and int(value) >= 1:
      return kind, float(int(value))
  except ValueError:
    pass
  raise ValueError(f"data.resize {rule!r} is not one of {', '.join(RESIZE_RULES)} "
                   "(e.g. scale:0.5, long_side:512; f in (0, 16], n >= 1)")


def resized_size(width: int, height: int, image_size: int, rule: str = "square") -> tuple[int, int]:
  """(width, height) an image of `width` x `height` is read at under `data.resize` = `rule`."""
  kind, value = parse_resize(rule)
  if kind == "square":
    return image_size, image_size
  if kind == "native":
    return width, height
  f = value if kind == "scale" else value / max(width, height)
  return max(1, int(round(width * f))), max(1, int(round(height * f)))


def _open(path, name: str | None = None) -> Image.Image:
  """The decoded image of a file path (or a binary file object called `name`)."""
  try:
    im = Image.open(path)  # reads the header only
  except (OSError, SyntaxError, ValueError) as e:
    raise CorruptImageError(f"Cannot decode {name or path}: {e}") from e
  w, h = im.size
  if w * h > MAX_FILE_PIXELS:
    im.close()
    raise CorruptImageError(
        f"Not decoding {name or path}: {w}x{h} = {w * h / 1e6:.1f} megapixels is above the "
        f"reader's limit of {MAX_FILE_PIXELS / 1e6:.0f} megapixels "
        "(fmjax.data.decode.MAX_FILE_PIXELS); scale or cut the image first.")
  try:
    im.load()  # decode now: truncated files fail here, not later
    return im
  except (OSError, SyntaxError, ValueError) as e:
    raise CorruptImageError(f"Cannot decode {name or path}: {e}") from e


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


def read_image_and_size(path, size: int, resize: str = "square", name: str | None = None
                        ) -> tuple[np.ndarray, tuple[int, int]]:
  """An image file (a path, or a binary file object called `name` in messages) -> (uint8 RGB
  [H,W,3] at `resized_size` (antialiased bilinear), the file's (w, h))."""
  with _open(path, name) as im:
    rgb = to_rgb8(im)
  original = rgb.size
  target = resized_size(*original, size, resize)
  if original != target:
    rgb = rgb.resize(target, Image.BILINEAR, reducing_gap=None)
  return np.asarray(rgb, np.uint8), original


def read_image(path: str, size: int, resize: str = "square") -> np.ndarray:
  """An image file -> uint8 RGB [H,W,3] at `resized_size` (antialiased bilinear resize)."""
  return read_image_and_size(path, size, resize)[0]


def mask_pixels(path: str) -> np.ndarray:
  """A mask file's pixel values [H,W] (greyscale and 16/32-bit integer modes as stored; 1-bit,
  palette and colour converted to 8-bit greyscale, so a 1-bit foreground is 255); a file that
  cannot be decoded is a CorruptImageError naming it."""
  with _open(path) as im:
    return np.asarray(im.convert("L") if im.mode not in ("L", "I;16", "I") else im)


def mask_has_foreground(path: str) -> bool:
  """True when the mask file has a nonzero pixel (`read_mask`'s foreground)."""
  return bool(mask_pixels(path).any())


def read_mask(path: str, size: int, image_wh: tuple[int, int] | None = None,
              notes: list[str] | None = None, resize: str = "square") -> np.ndarray:
  """A mask file -> uint8 {0,1} [H,W] at its image's `resized_size`; foreground = any nonzero
  pixel.

  With `image_wh` (the image's original width, height), a mask of another size
  is resized to it with a warning before the final resize. Warnings go to
  `notes` when given (thread-safe), else to `warnings.warn`.
  """
  m = mask_pixels(path)
  binary = Image.fromarray(((m > 0) * 255).astype(np.uint8))
  note = None
  if image_wh is not None and binary.size != tuple(image_wh):
    note = (f"Mask {path} is {binary.size[0]}x{binary.size[1]} but its image is "
            f"{image_wh[0]}x{image_wh[1]}; resizing the mask to the image (nearest).")
    binary = binary.resize(tuple(image_wh), Image.NEAREST)
  target = resized_size(*binary.size, size, resize)
  if binary.size != target:
    binary = binary.resize(target, Image.NEAREST)
  out = (np.asarray(binary) > 127).astype(np.uint8)
  if not (m > 0).any():
    note = f"Mask {path} has no foreground pixel; its image counts as anomalous with an empty mask."
  elif not out.any():
    note = (f"Mask {path} loses all its foreground pixels when resized to {target[0]}x{target[1]} "
            "(nearest); its image counts as anomalous with an empty mask (a larger "
            "data.image_size, or data.resize=native, keeps it).")
  if note is not None:
    if notes is None:
      warnings.warn(note, stacklevel=2)
    else:
      notes.append(note)
  return out
