"""Pictures of the evaluation: test image | heatmap overlay with the ground truth."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from fmjax.data import AnomalyDataset, NormStats

# Anchor colours of a perceptually ordered dark-to-bright map (black-purple-orange-yellow).
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                    np.float64) / 255.0


def colormap(x: np.ndarray) -> np.ndarray:
  """Values in [0, 1] [...] -> RGB float [...,3]."""
  pos = np.clip(x, 0, 1) * (len(_ANCHORS) - 1)
  lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
  frac = (pos - lo)[..., None]
  return _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac


def _outline(mask: np.ndarray) -> np.ndarray:
  """The pixels just outside a binary mask (8-neighbourhood), so thin defects stay visible."""
  m = mask.astype(bool)
  grown = m.copy()
  for dy in (-1, 0, 1):
    for dx in (-1, 0, 1):
      grown |= np.roll(np.roll(m, dy, axis=0), dx, axis=1)
  return grown & ~m


def heatmap_panel(image: np.ndarray, heatmap: np.ndarray, vmax: float, mask=None) -> np.ndarray:
  """uint8 image [H,W,3] | overlay of the heatmap (scaled by vmax), mask outline in white."""
  heat = colormap(heatmap / max(vmax, 1e-12))
  overlay = 0.45 * image.astype(np.float64) / 255.0 + 0.55 * heat
  if mask is not None:
    overlay[_outline(mask)] = 1.0
  return np.concatenate([image, np.round(overlay * 255).astype(np.uint8)], axis=1)


def write_heatmaps(directory: str, dataset: AnomalyDataset, heatmaps: np.ndarray,
                   scores: np.ndarray, norm: NormStats, count: int) -> list[str]:
  """Saves the `count` highest- and lowest-scoring test images' panels as PNGs; returns paths."""
  del norm  # panels show the stored uint8 images
  os.makedirs(directory, exist_ok=True)
  order = np.argsort(-scores)
  chosen = list(dict.fromkeys(list(order[: (count + 1) // 2]) + list(order[::-1][: count // 2])))
  vmax = float(np.quantile(heatmaps, 0.999))
  paths = []
  for rank, i in enumerate(chosen):
    mask = None if dataset.test_masks is None else dataset.test_masks[i]
    panel = heatmap_panel(dataset.test_images[i], heatmaps[i], vmax, mask)
    scale = max(1, 256 // panel.shape[0])
    img = Image.fromarray(panel).resize((panel.shape[1] * scale, panel.shape[0] * scale), Image.NEAREST)
    name = f"{rank:02d}_{dataset.class_names[dataset.test_classes[i]]}_{dataset.test_defects[i]}_{scores[i]:.3g}.png"
    path = os.path.join(directory, name)
    img.save(path)
    paths.append(path)
  return paths
