"""BTAD, the beanTech Anomaly Detection data set (Mishra et al. 2021), as distributed:

  <root>/<category>/train/ok/*.{bmp,png}        normal training images
  <root>/<category>/test/ok/*.{bmp,png}         normal test images
  <root>/<category>/test/ko/*.{bmp,png}         anomalous test images
  <root>/<category>/ground_truth/ko/<stem>.png  their masks (same stem as the image)

Categories 01, 02, 03 (category 01 and 03 ship .bmp images, 02 .png); the defect type of every
anomalous image is "ko".
"""

from __future__ import annotations

import os

from fmjax.core.errors import DataLayoutError
from fmjax.data.sets import DataSet
from fmjax.data.sources import (Sample, folders_with, list_images, missing_file, resolve_categories,
                                unmatched_masks)

CATEGORIES = ("01", "02", "03")


def _mask(gt_dir: str, image: str) -> str:
  stem = os.path.splitext(os.path.basename(image))[0]
  for ext in (".png", ".bmp"):
    path = os.path.join(gt_dir, stem + ext)
    if os.path.isfile(path):
      return path
  raise missing_file(os.path.join(gt_dir, stem + ".png"), f"Anomalous BTAD image {image} has "
                     "no mask", "Set --config.data.image_level_only=True to read it without "
                     "masks.")


def btad_samples(root: str, categories=(), image_level_only: bool = False):
  """(categories, samples) of BTAD as distributed."""
  categories = resolve_categories(root, categories, folders_with(root, "train"), "BTAD")
  samples = []
  for cat in categories:
    folders = {name: os.path.join(root, cat, *name.split("/"))
               for name in ("train/ok", "test/ok", "test/ko")}
    for name, folder in folders.items():
      if not os.path.isdir(folder):
        raise DataLayoutError(f"BTAD category {cat!r}: expected folder {folder} (train/ok, "
                              "test/ok, test/ko, ground_truth/ko).")
    train = list_images(folders["train/ok"])
    if not train:
      raise DataLayoutError(f"BTAD category {cat!r}: no images in {folders['train/ok']}.")
    samples += [Sample(p, cat, "train") for p in train]
    samples += [Sample(p, cat, "test") for p in list_images(folders["test/ok"])]
    gt_dir = os.path.join(root, cat, "ground_truth", "ko")
    anomalous = list_images(folders["test/ko"])
    if anomalous and not image_level_only and not os.path.isdir(gt_dir):
      raise DataLayoutError(f"BTAD category {cat!r}: the masks folder {gt_dir} is missing. Set "
                            "--config.data.image_level_only=True to read it without masks.")
    for p in anomalous:
      samples.append(Sample(p, cat, "test", "ko", 1,
                            None if image_level_only else _mask(gt_dir, p)))
    if not image_level_only:
      unmatched_masks(gt_dir, {s.mask for s in samples if s.category == cat and s.mask},
                      "BTAD")
  return categories, samples


SET = DataSet("btad", "BTAD: <category>/train/ok, test/{ok,ko}, ground_truth/ko/<stem>.png",
              CATEGORIES,
              lambda root, categories, image_level_only, dc: btad_samples(root, categories,
                                                                          image_level_only))
