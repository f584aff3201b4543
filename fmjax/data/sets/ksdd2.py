"""KolektorSDD2 (Bozic, Tabernik, Skocaj 2021), as distributed:

  <root>/train/<id>.png and <id>_GT.png
  <root>/test/<id>.png and <id>_GT.png

One category, "ksdd2". An image is anomalous when its ground truth has a nonzero pixel. The
training split of this unsupervised method is the normal images of train/ (the anomalous ones,
246 in the published set, are left out and counted in a note); the test split is all of test/,
each anomalous image with its ground truth as mask.
"""

from __future__ import annotations

import os
import warnings

from fmjax.core.errors import DataLayoutError
from fmjax.data.decode import mask_has_foreground
from fmjax.data.sets import DataSet
from fmjax.data.sources import Sample, list_images, resolve_categories

CATEGORY = "ksdd2"


def _pairs(folder: str) -> list[tuple[str, str]]:
  """(image, ground truth) of a split folder, by id."""
  if not os.path.isdir(folder):
    raise DataLayoutError(f"KolektorSDD2: expected folder {folder} (train/ and test/ with "
                          "<id>.png and <id>_GT.png).")
  files = list_images(folder)
  images = [p for p in files if not os.path.splitext(p)[0].endswith("_GT")]
  pairs = []
  for image in images:
    gt = os.path.splitext(image)[0] + "_GT.png"
    if not os.path.isfile(gt):
      raise DataLayoutError(f"KolektorSDD2 image {image} has no ground truth {gt}.")
    pairs.append((image, gt))
  if not pairs:
    raise DataLayoutError(f"KolektorSDD2: no images in {folder}.")
  return pairs


def ksdd2_samples(root: str, categories=(), image_level_only: bool = False):
  """(["ksdd2"], samples) of KolektorSDD2 as distributed."""
  resolve_categories(root, categories, [CATEGORY], "KolektorSDD2")
  samples, left_out = [], 0
  for image, gt in _pairs(os.path.join(root, "train")):
    if mask_has_foreground(gt):
      left_out += 1
    else:
      samples.append(Sample(image, CATEGORY, "train"))
  for image, gt in _pairs(os.path.join(root, "test")):
    bad = mask_has_foreground(gt)
    samples.append(Sample(image, CATEGORY, "test", "defect" if bad else "good", int(bad),
                          gt if bad and not image_level_only else None))
  if left_out:
    warnings.warn(f"KolektorSDD2: {left_out} anomalous images of train/ left out of training "
                  "(the method trains on normal images only).", stacklevel=2)
  return [CATEGORY], samples


SET = DataSet("ksdd2", "KolektorSDD2: train/ and test/ of <id>.png with <id>_GT.png",
              (CATEGORY,),
              lambda root, categories, image_level_only, dc: ksdd2_samples(root, categories,
                                                                           image_level_only))
