"""Image ids: the content hash each image's scoring seeds come from.

A leaf module (numpy and hashlib only), shared by the evaluator and the exported scorer
(`fmjax.deploy`), so both draw the same seeds for the same pixels.
"""

from __future__ import annotations

import hashlib

import numpy as np


def image_ids(images: np.ndarray) -> np.ndarray:
  """int32 [M]: a 31-bit hash of each uint8 image [M,H,W,3]'s pixels, the id its seeds come from,
  so an image's score depends on its content, not on its place in a folder or a batch."""
  return np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(im).tobytes(),
                                                  digest_size=4).digest(), "little") & 0x7FFFFFFF
                   for im in images], np.int32)
