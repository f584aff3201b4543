"""The embedded default dataset: procedural textured surfaces with synthetic defects.

Nothing is downloaded: every image is generated deterministically from a seed.
Each category is a surface texture with a few normal variations (phase, scale,
orientation, colour and illumination jitter). Test images carry one or two
defects (scratch, spot, crack, patch) drawn with hard edges and blended into the
surface with a random opacity (40% to 100%); patches take a colour near the
surface's own (20-35% brighter or darker), so some defects are subtle. The
ground-truth mask is exactly the set of pixels the defect changed.
"""

from __future__ import annotations

import numpy as np

from fmjax.data.dataset import AnomalyDataset
from fmjax.core.errors import ConfigError

CATEGORIES = ("weave", "brushed", "tiles")
DEFECTS = ("scratch", "spot", "crack", "patch")


def _grid(size):
  y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
  return x, y


def _texture(category: str, size: int, rng: np.random.Generator) -> np.ndarray:
  """One normal surface [size,size,3] in [0,1] (float64)."""
  x, y = _grid(size)
  phase = rng.uniform(0, 2 * np.pi, 2)
  light = 1.0 + 0.12 * ((x - 0.5) * rng.uniform(-1, 1) + (y - 0.5) * rng.uniform(-1, 1))
  tint = 1.0 + rng.uniform(-0.06, 0.06, 3)
  if category == "weave":
    f = 4.0 * rng.uniform(0.92, 1.08)
    pattern = 0.5 + 0.25 * np.sin(2 * np.pi * f * x + phase[0]) + 0.25 * np.sin(2 * np.pi * f * y + phase[1])
    base, accent = np.array([0.55, 0.45, 0.3]), np.array([0.85, 0.75, 0.55])
  elif category == "brushed":
    angle = np.deg2rad(20.0 + rng.uniform(-8, 8))
    u = np.cos(angle) * x + np.sin(angle) * y
    f = 3.0 * rng.uniform(0.9, 1.1)
    pattern = 0.5 + 0.45 * np.sin(2 * np.pi * f * u + phase[0])
    base, accent = np.array([0.3, 0.35, 0.45]), np.array([0.65, 0.7, 0.8])
  elif category == "tiles":
    period = 1 / (3.0 * rng.uniform(0.95, 1.05))
    gx = ((x + phase[0] / (2 * np.pi) * period) % period) / period
    gy = ((y + phase[1] / (2 * np.pi) * period) % period) / period
    grout = np.minimum(np.minimum(gx, 1 - gx), np.minimum(gy, 1 - gy))
    pattern = np.clip(grout * 9.0, 0, 1)
    base, accent = np.array([0.35, 0.3, 0.3]), np.array([0.8, 0.78, 0.72])
  else:
    raise ConfigError(f"Unknown synthetic category {category!r}; known: {CATEGORIES}.")
  img = base + (accent - base) * pattern[..., None]
  return np.clip(img * light[..., None] * tint, 0, 1)


def _line_mask(size, p0, p1, width):
  """Pixels within width/2 of the segment p0-p1 (coordinates in pixels)."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  d = np.asarray(p1, float) - np.asarray(p0, float)
  s = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
  dist = np.hypot(xx - (p0[0] + s * d[0]), yy - (p0[1] + s * d[1]))
  return dist <= width / 2


def _defect(kind: str, size: int, rng: np.random.Generator,
            surface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A defect on `surface` [size,size,3]: boolean mask [size,size] and its colour [3] in [0,1]."""
  margin = size * 0.15
  c = rng.uniform(margin, size - margin, 2)
  if kind == "scratch":
    ang = rng.uniform(0, np.pi)
    half = rng.uniform(0.15, 0.3) * size
    d = half * np.array([np.cos(ang), np.sin(ang)])
    mask = _line_mask(size, c - d, c + d, max(1.0, size / 32))
    color = np.array([0.95, 0.95, 0.92]) if rng.random() < 0.5 else np.array([0.05, 0.05, 0.08])
  elif kind == "spot":
    r = rng.uniform(0.05, 0.1) * size * np.array([1.0, rng.uniform(0.6, 1.0)])
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    mask = ((xx - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 <= 1.0
    color = rng.choice([np.array([0.8, 0.15, 0.1]), np.array([0.1, 0.5, 0.15]), np.array([0.05, 0.05, 0.05])])
  elif kind == "crack":
    mask = np.zeros((size, size), bool)
    p = c.copy()
    ang = rng.uniform(0, 2 * np.pi)
    for _ in range(int(size * 0.35)):
      ang += rng.normal(0, 0.5)
      q = np.clip(p + 1.5 * np.array([np.cos(ang), np.sin(ang)]), 1, size - 2)
      mask |= _line_mask(size, p, q, max(1.0, size / 40))
      p = q
    color = np.array([0.02, 0.02, 0.02])
  elif kind == "patch":
    wh = rng.uniform(0.1, 0.2, 2) * size
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    mask = (np.abs(xx - c[0]) <= wh[0] / 2) & (np.abs(yy - c[1]) <= wh[1] / 2)
    shade = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35)  # near the surface's colour
    color = np.clip(surface[mask].mean(0) * shade, 0, 1)
  else:
    raise ValueError(f"Unknown defect {kind!r}; known: {DEFECTS}.")
  return mask, color


def _to_uint8(img: np.ndarray) -> np.ndarray:
  return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_synthetic_dataset(image_size: int = 32, categories=CATEGORIES, num_train: int = 200,
                           num_test_normal: int = 20, num_test_anomalous: int = 30,
                           seed: int = 0) -> AnomalyDataset:
  """Generates the procedural dataset (per category counts), deterministic in `seed`."""
  categories = list(categories)
  rng = np.random.default_rng([seed, 20260])
  train, train_cls = [], []
  test, test_cls, labels, masks, defects, paths = [], [], [], [], [], []
  for ci, cat in enumerate(categories):
    for i in range(num_train):
      train.append(_to_uint8(_texture(cat, image_size, rng)))
      train_cls.append(ci)
    for i in range(num_test_normal + num_test_anomalous):
      clean = _to_uint8(_texture(cat, image_size, rng))
      if i < num_test_normal:
        img, mask, kind = clean, np.zeros((image_size, image_size), np.uint8), "good"
      else:
        kind = DEFECTS[i % len(DEFECTS)]
        img = clean.astype(np.float64) / 255
        mask = np.zeros((image_size, image_size), bool)
        for _ in range(1 + (rng.random() < 0.25)):
          m, color = _defect(kind, image_size, rng, img)
          opacity = rng.uniform(0.4, 1.0)
          img = np.where(m[..., None], (1 - opacity) * img + opacity * color, img)
          mask |= m
        img = _to_uint8(img)
        # The mask is exactly the set of pixels the defect changed.
        mask = (np.any(img != clean, axis=-1) & mask).astype(np.uint8)
        if not mask.any():  # the defect colour equalled the surface: draw it again
          img[..., 0] = np.where(m, 255 - clean[..., 0], clean[..., 0])
          mask = np.any(img != clean, axis=-1).astype(np.uint8)
      test.append(img)
      test_cls.append(ci)
      labels.append(int(kind != "good"))
      masks.append(mask)
      defects.append(kind)
      paths.append(f"synthetic://{cat}/test/{kind}/{i:03d}")
  return AnomalyDataset(
      name="synthetic", class_names=categories,
      train_images=np.stack(train), train_classes=np.asarray(train_cls, np.int32),
      test_images=np.stack(test), test_classes=np.asarray(test_cls, np.int32),
      test_labels=np.asarray(labels, np.int32), test_masks=np.stack(masks),
      test_defects=defects, test_paths=paths)
