"""The scoring seeds of `fmjax.methods.mismatch` in numpy alone, for runtimes without JAX.

An ONNX export (`fmjax.decide.onnx_export`) takes its Gaussian seeds as an input, and
`fmjax.deploy` computes them here, so the same pixels get the same seeds, and the same score,
with or without JAX. This is JAX's own generator written again in numpy:

- Threefry-2x32 (Salmon et al. 2011, 20 rounds), the hash behind `jax.random`'s default key;
- `jax.random.key(seed)`: the key (seed >> 32, seed & 0xFFFFFFFF);
- `jax.random.fold_in(key, i)`: the hash of the counter pair (0, i) under `key`;
- `jax.random.normal(key, shape)` (partitionable Threefry, JAX's default since 0.5): value n of
  the flattened shape from the hash of the counter pair (n >> 32, n & 0xFFFFFFFF), its two
  words XOR-ed; 23 bits of it make a uniform u in [nextafter(-1, 0), 1), and the value is
  sqrt(2) erfinv(u);
- `mismatch.positional_seeds`: the first word of the hash of (row, (column K + k) C + c).

The integer part is exact; erfinv is the single-precision approximation XLA uses (Giles 2010),
evaluated in float32, so values agree with JAX's to a few units in the last place
(tests/test_onnx.py). numpy only.
"""

from __future__ import annotations

import numpy as np

_U32 = np.uint32
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x: np.ndarray, d: int) -> np.ndarray:
  return (x << _U32(d)) | (x >> _U32(32 - d))


def threefry_2x32(k1, k2, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The Threefry-2x32 hash of counter pairs (x1, x2) (uint32 arrays of one shape) under the key
  (k1, k2): two uint32 arrays of that shape."""
  k1, k2 = _U32(k1), _U32(k2)
  ks = (k1, k2, k1 ^ k2 ^ _U32(0x1BD11BDA))
  x = [np.asarray(x1, _U32) + ks[0], np.asarray(x2, _U32) + ks[1]]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x[0] = x[0] + x[1]
      x[1] = _rotate_left(x[1], r) ^ x[0]
    x[0] = x[0] + ks[(i + 1) % 3]
    x[1] = x[1] + ks[(i + 2) % 3] + _U32(i + 1)
  return x[0], x[1]


def key(seed: int) -> tuple[np.uint32, np.uint32]:
  """`jax.random.key(seed)`'s data for an integer seed."""
  seed = int(seed)
  return _U32((seed >> 32) & 0xFFFFFFFF), _U32(seed & 0xFFFFFFFF)


def fold_in(key_pair, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`jax.random.fold_in(key, d)` for each d of `data` (int32 [B]): keys as two uint32 [B]."""
  data = np.asarray(data).astype(np.int64).astype(_U32)
  return threefry_2x32(key_pair[0], key_pair[1], np.zeros_like(data), data)


def erfinv(x: np.ndarray) -> np.ndarray:
  """The inverse error function of float32 x in [-1, 1], float32 (Giles' single-precision
  approximation, as XLA computes it; +-inf at +-1)."""
  x = np.asarray(x, np.float32)
  with np.errstate(divide="ignore", invalid="ignore"):
    w = -np.log1p(-x * x).astype(np.float32)
  small = w < np.float32(5.0)
  ws = w - np.float32(2.5)
  p_small = np.float32(2.81022636e-08)
  for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
            -0.00417768164, 0.246640727, 1.50140941):
    p_small = np.float32(c) + p_small * ws
  wl = np.sqrt(np.maximum(w, np.float32(5.0))) - np.float32(3.0)
  p_large = np.float32(-0.000200214257)
  for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
            0.00943887047, 1.00167406, 2.83297682):
    p_large = np.float32(c) + p_large * wl
  out = np.where(small, p_small, p_large) * x
  out = np.where(np.abs(x) == 1, np.copysign(np.float32(np.inf), x), out)
  return out.astype(np.float32)


def _normals_from_bits(bits: np.ndarray) -> np.ndarray:
  """`jax.random.normal`'s float32 values from its 32 random bits per value."""
  u = ((bits >> _U32(9)) | _U32(0x3F800000)).view(np.float32) - np.float32(1.0)
  lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
  u = np.maximum(lo, u * (np.float32(1.0) - lo) + lo)
  return np.float32(np.sqrt(2)) * erfinv(u)


def image_seeds(seed: int, image_ids: np.ndarray, num_seeds: int, image_shape) -> np.ndarray:
  """`mismatch.draw_seeds(jax.random.key(seed), image_ids, num_seeds, image_shape)`:
  float32 [B,K,H,W,C]."""
  k1, k2 = fold_in(key(seed), image_ids)
  shape = (num_seeds,) + tuple(image_shape)
  n = np.arange(int(np.prod(shape)), dtype=np.uint64)
  hi, lo = (n >> np.uint64(32)).astype(_U32), (n & np.uint64(0xFFFFFFFF)).astype(_U32)
  out = np.empty((len(k1),) + shape, np.float32)
  for b in range(len(k1)):
    b1, b2 = threefry_2x32(k1[b], k2[b], hi, lo)
    out[b] = _normals_from_bits(b1 ^ b2).reshape(shape)
  return out


def positional_seeds(seed: int, image_ids: np.ndarray, num_seeds: int, tile_shape,
                     origins: np.ndarray) -> np.ndarray:
  """`mismatch.positional_seeds(jax.random.key(seed), image_ids, num_seeds, tile_shape,
  origins)`: float32 [B,K,h,w,C] of tiles at origins (int32 [B,2]: row, column)."""
  h, w, c = tuple(tile_shape)
  k = num_seeds
  k1, k2 = fold_in(key(seed), image_ids)
  origins = np.asarray(origins, np.int64)
  out = np.empty((len(k1), k, h, w, c), np.float32)
  kk, cc = np.arange(k, dtype=_U32), np.arange(c, dtype=_U32)
  for b in range(len(k1)):
    rows = (origins[b, 0] + np.arange(h)).astype(_U32)
    cols = (origins[b, 1] + np.arange(w)).astype(_U32)
    hi = np.broadcast_to(rows[None, :, None, None], (k, h, w, c))
    lo = np.broadcast_to((cols[None, None, :, None] * _U32(k) + kk[:, None, None, None]) * _U32(c)
                         + cc[None, None, None, :], (k, h, w, c))
    first, _ = threefry_2x32(k1[b], k2[b], hi, lo)
    u = ((first >> _U32(9)) | _U32(0x3F800000)).view(np.float32) - np.float32(1.0)
    u = np.maximum(np.float32(2.0) * u - np.float32(1.0),
                   np.nextafter(np.float32(-1.0), np.float32(0.0)))
    out[b] = np.float32(np.sqrt(2)) * erfinv(u)
  return out
