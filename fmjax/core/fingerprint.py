"""Fingerprints: short content hashes that say what a result was made from.

A checkpoint is identified by its parameters (not its step number: a workdir retrained to
the same step with another seed is another model), a data set by its training images, a
setting by its JSON. A result that can be reused later (a calibration, a study row, a
scaling arm, an export, a score folder) stores the fingerprints it was made from and is
reused only when they match. BLAKE2b, 16 bytes, as 32 hex digits; `short` for messages.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def of_arrays(arrays) -> str:
  """The hash of a sequence of arrays: each one's dtype, shape and bytes, in order."""
  h = hashlib.blake2b(digest_size=16)
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape};".encode())
    h.update(a.reshape(-1).view(np.uint8))
  return h.hexdigest()


def of_json(obj) -> str:
  """The hash of a JSON-able value (keys sorted)."""
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def short(fingerprint: str | None) -> str:
  """The first 12 hex digits, for messages ("none" when there is none)."""
  return fingerprint[:12] if fingerprint else "none"
