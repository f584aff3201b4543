"""KolektorSDD (Tabernik et al. 2019), as distributed:

  <root>/kos01 ... kos50/Part<n>.jpg and Part<n>_label.bmp

One category, "kolektorsdd". An image is defective when its label has a nonzero pixel. The
original protocol uses 3-fold cross-validation; fmjax uses one fixed split, by part folder so
that no commutator has images on both sides:
  train: the defect-free images of kos01 ... kos40;
  test:  the defect-free images of kos41 ... kos50 and every defective image (of all folders),
         each with its label as mask.
"""

from __future__ import annotations

import os
import re

from fmjax.core.errors import DataLayoutError
from fmjax.data.decode import mask_has_foreground
from fmjax.data.sets import DataSet
from fmjax.data.sources import Sample, resolve_categories

CATEGORY = "kolektorsdd"
LAST_TRAIN_FOLDER = 40  # kos01..kos40 train, kos41..kos50 test (defect-free images)


def kolektorsdd_samples(root: str, categories=(), image_level_only: bool = False):
  """(["kolektorsdd"], samples) of KolektorSDD with the fixed split above."""
  resolve_categories(root, categories, [CATEGORY], "KolektorSDD")
  folders = sorted(d for d in os.listdir(root) if re.fullmatch(r"kos\d+", d) and
                   os.path.isdir(os.path.join(root, d)))
  if not folders:
    raise DataLayoutError(f"KolektorSDD: no kos01 ... kos50 folders under {root}.")
  samples = []
  for folder in folders:
    number = int(folder[3:])
    directory = os.path.join(root, folder)
    parts = sorted(f for f in os.listdir(directory)
                   if re.fullmatch(r"Part\d+\.jpg", f, flags=re.IGNORECASE))
    for part in parts:
      image = os.path.join(directory, part)
      label = os.path.splitext(image)[0] + "_label.bmp"
      if not os.path.isfile(label):
        raise DataLayoutError(f"KolektorSDD image {image} has no label {label}.")
      if mask_has_foreground(label):
        samples.append(Sample(image, CATEGORY, "test", "defect", 1,
                              None if image_level_only else label))
      else:
        samples.append(Sample(image, CATEGORY, "train" if number <= LAST_TRAIN_FOLDER else "test"))
  return [CATEGORY], samples


SET = DataSet("kolektorsdd", "KolektorSDD: kos01..kos50/Part<n>.jpg with Part<n>_label.bmp; fixed "
              "split: defect-free kos01-40 train, defect-free kos41-50 and all defective test",
              (CATEGORY,),
              lambda root, categories, image_level_only, dc: kolektorsdd_samples(
                  root, categories, image_level_only))
