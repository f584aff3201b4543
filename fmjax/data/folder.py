"""Datasets in MVTec AD layout, read into memory at the configured resolution.

  <root>/<category>/train/good/*.png
  <root>/<category>/test/<defect>/*.png          ("good" = normal)
  <root>/<category>/ground_truth/<defect>/<stem>_mask.png
"""

from __future__ import annotations

import os
from concurrent import futures

import numpy as np
from PIL import Image

from fmjax.data.dataset import AnomalyDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
                    "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
                    "zipper")


def _list_images(folder: str) -> list[str]:
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_EXTENSIONS))


def read_image(path: str, size: int) -> np.ndarray:
  """Any PIL-readable image -> uint8 RGB [size,size,3] (antialiased bilinear resize)."""
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, np.float64)
        im = Image.fromarray(np.round(arr / max(arr.max(), 1) * 255).astype(np.uint8))
      rgb = im.convert("RGB")
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"Cannot read image {path}: {e}") from e
  if rgb.size != (size, size):
    rgb = rgb.resize((size, size), Image.BILINEAR, reducing_gap=None)
  return np.asarray(rgb, np.uint8)


def read_mask(path: str, size: int) -> np.ndarray:
  """A mask image -> uint8 {0,1} [size,size] (nearest resize, foreground = nonzero)."""
  try:
    with Image.open(path) as im:
      m = np.asarray(im.convert("L"))
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"Cannot read mask {path}: {e}") from e
  binary = Image.fromarray(((m > 0) * 255).astype(np.uint8))
  if binary.size != (size, size):
    binary = binary.resize((size, size), Image.NEAREST)
  return (np.asarray(binary) > 127).astype(np.uint8)


def _category_files(root: str, category: str, image_level_only: bool):
  cat_dir = os.path.join(root, category)
  train_dir = os.path.join(cat_dir, "train", "good")
  test_dir = os.path.join(cat_dir, "test")
  for d in (train_dir, test_dir):
    if not os.path.isdir(d):
      raise FileNotFoundError(f"Category {category!r}: expected folder {d} (MVTec layout "
                              f"<root>/<category>/train/good and test/<defect>).")
  train = _list_images(train_dir)
  if not train:
    raise ValueError(f"Category {category!r}: no images in {train_dir}.")
  test = []
  for defect in sorted(os.listdir(test_dir)):
    ddir = os.path.join(test_dir, defect)
    if not os.path.isdir(ddir):
      continue
    for path in _list_images(ddir):
      mask = None
      if defect != "good" and not image_level_only:
        stem = os.path.splitext(os.path.basename(path))[0]
        mask = os.path.join(cat_dir, "ground_truth", defect, f"{stem}_mask.png")
        if not os.path.isfile(mask):
          raise FileNotFoundError(
              f"Anomalous test image {path} has no mask {mask}. Set "
              "--config.data.image_level_only=True for datasets without masks.")
      test.append((path, defect, mask))
  if not test:
    raise ValueError(f"Category {category!r}: no test images under {test_dir}.")
  return train, test


def load_folder_dataset(root: str, categories=(), image_size: int = 128,
                        image_level_only: bool = False, name: str = "folder",
                        num_workers: int = 8) -> AnomalyDataset:
  """Reads categories (all sub-folders of `root` when empty) of an MVTec-layout tree."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"Data root {root!r} does not exist (set --config.data.root).")
  found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "train")))
  categories = list(categories) or found
  missing = [c for c in categories if c not in found]
  if missing:
    raise FileNotFoundError(f"Categories {missing} not found under {root}; found {found}.")

  train_paths, train_cls, tests = [], [], []
  for ci, cat in enumerate(categories):
    train, test = _category_files(root, cat, image_level_only)
    train_paths += train
    train_cls += [ci] * len(train)
    tests += [(ci,) + t for t in test]

  with futures.ThreadPoolExecutor(num_workers) as pool:
    train_images = list(pool.map(lambda p: read_image(p, image_size), train_paths))
    test_images = list(pool.map(lambda t: read_image(t[1], image_size), tests))
    masks = None
    if not image_level_only:
      zero = np.zeros((image_size, image_size), np.uint8)
      masks = list(pool.map(lambda t: read_mask(t[3], image_size) if t[3] else zero, tests))
  return AnomalyDataset(
      name=name, class_names=categories,
      train_images=np.stack(train_images), train_classes=np.asarray(train_cls, np.int32),
      test_images=np.stack(test_images), test_classes=np.asarray([t[0] for t in tests], np.int32),
      test_labels=np.asarray([int(t[2] != "good") for t in tests], np.int32),
      test_masks=None if masks is None else np.stack(masks),
      test_defects=[t[2] for t in tests], test_paths=[t[1] for t in tests])
