"""MVTec AD 2 (Heckler-Kram et al. 2025), as distributed:

  <root>/<category>/train/good/*.png                    normal training images
  <root>/<category>/validation/good/*.png               normal validation images (calibration)
  <root>/<category>/test_public/good/*.png              the labelled public test
  <root>/<category>/test_public/bad/<stem>.png
  <root>/<category>/test_public/ground_truth/bad/<stem>_mask.png   (255 = defect)
  <root>/<category>/test_private/<NNN>_regular.png       unlabeled: scored for the server
  <root>/<category>/test_private_mixed/<NNN>_mixed.png   unlabeled, mixed lighting

The labelled split fmjax evaluates is test_public; calibration uses validation/good (so
data.val_fraction must be 0). `--mode=score` without data.score_dir scores test_private and
test_private_mixed into the evaluation server's format (`submission_files`), as MVTec's public
utility code (`check_and_prepare_data_for_upload.py`, `mvtec_ad_2_public_offline.py`) states it:

  anomaly_images/<category>/<split>/<stem>.tiff              2-D float16 anomaly map
  anomaly_images_thresholded/<category>/<split>/<stem>.png   2-D uint8, 0 or 255 (optional)

for both private splits of all 8 categories and nothing else, packed as <folder>.tar.gz with
paths <folder>/<relative path>. fmjax writes each map at its image's own size (the ground
truth's) and the binary map at the category's calibrated pixel threshold.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np

from fmjax.core.errors import DataLayoutError, NonFiniteError
from fmjax.data.sets import DataSet
from fmjax.data.sources import (Sample, folders_with, images_in, missing_file, resolve_categories,
                                unmatched_masks)

CATEGORIES = ("can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs",
              "walnuts")
PRIVATE_SPLITS = ("test_private", "test_private_mixed")
# Images per private split that the server's checker requires (check_and_prepare_data_for_
# upload.py); a submission with other counts is refused there.
SERVER_COUNTS = {"can": 321, "fabric": 314, "fruit_jelly": 255, "rice": 277, "sheet_metal": 142,
                 "vial": 276, "wallplugs": 232, "walnuts": 228}
FOLDER = "mvtec_ad2_submission"  # <workdir>/scores/<FOLDER>/ and <FOLDER>.tar.gz


def _images(root: str, cat: str, name: str, may_be_empty: bool = False) -> list[str]:
  """The images of <root>/<cat>/<name>, a folder the layout requires."""
  path = os.path.join(root, cat, *name.split("/"))
  return images_in(path, f"MVTec AD 2 category {cat!r}: expected folder {path} (train/good, "
                   "validation/good, test_public/{good,bad}, test_public/ground_truth/bad).",
                   None if may_be_empty else f"MVTec AD 2 category {cat!r}: no images in {path}.")


def ad2_samples(root: str, categories=(), image_level_only: bool = False):
  """(categories, samples) of MVTec AD 2's labelled splits: train, validation ("val") and
  test_public."""
  categories = resolve_categories(root, categories, folders_with(root, "validation"), "MVTec AD 2")
  samples = []
  for cat in categories:
    for split, name in (("train", "train/good"), ("val", "validation/good")):
      samples += [Sample(p, cat, split) for p in _images(root, cat, name)]
    samples += [Sample(p, cat, "test") for p in _images(root, cat, "test_public/good", True)]
    bad = _images(root, cat, "test_public/bad", True)
    gt = os.path.join(root, cat, "test_public", "ground_truth", "bad")
    if bad and not image_level_only and not os.path.isdir(gt):
      raise DataLayoutError(f"MVTec AD 2 category {cat!r}: the masks folder {gt} is missing. Set "
                            "--config.data.image_level_only=True to read it without masks.")
    masks = set()
    for p in bad:
      mask = None
      if not image_level_only:
        mask = os.path.join(gt, os.path.splitext(os.path.basename(p))[0] + "_mask.png")
        if not os.path.isfile(mask):
          raise missing_file(mask, f"MVTec AD 2 image {p} has no mask")
        masks.add(mask)
      samples.append(Sample(p, cat, "test", "bad", 1, mask))
    if not image_level_only:
      unmatched_masks(gt, masks, "MVTec AD 2")
  return categories, samples


def unlabeled_splits(root: str, categories) -> list[tuple[str, str, list[str]]]:
  """[(category, split, image paths)] of the private test splits, in order."""
  out = []
  for cat in resolve_categories(root, categories, folders_with(root, "validation"), "MVTec AD 2"):
    for split in PRIVATE_SPLITS:
      path = os.path.join(root, cat, split)
      out.append((cat, split, images_in(
          path, f"MVTec AD 2 category {cat!r}: expected folder {path} (the unlabeled private "
          "test that the evaluation server scores).", f"MVTec AD 2: no images in {path}.")))
  return out


def submission_paths(category: str, split: str, image: str) -> tuple[str, str]:
  """(the map's, the binary map's) paths inside the submission folder."""
  stem = os.path.splitext(os.path.basename(image))[0]
  return (os.path.join("anomaly_images", category, split, f"{stem}.tiff"),
          os.path.join("anomaly_images_thresholded", category, split, f"{stem}.png"))


def submission_files(category: str, split: str, image: str, heatmap: np.ndarray,
                     pixel_threshold: float | None) -> dict[str, bytes]:
  """{path in the submission folder: file bytes} of one image: its map as a 2-D float16 TIFF
  (values beyond float16's range clipped to it) and, with a threshold, its binary map as a 0/255
  PNG (pixels above the threshold are 255). A map with NaN is refused, naming the image."""
  import tifffile  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  heatmap = np.asarray(heatmap, np.float32)
  if np.isnan(heatmap).any():
    raise NonFiniteError(f"The anomaly map of {image} has NaN values; the server format needs "
                         "finite maps.")
  limit = float(np.finfo(np.float16).max)
  tiff, png = submission_paths(category, split, image)
  out = io.BytesIO()
  tifffile.imwrite(out, np.clip(heatmap, -limit, limit).astype(np.float16), compression="zlib")
  files = {tiff: out.getvalue()}
  if pixel_threshold is not None:
    out = io.BytesIO()
    Image.fromarray(np.where(heatmap > pixel_threshold, 255, 0).astype(np.uint8)).save(out, "PNG")
    files[png] = out.getvalue()
  return files


SET = DataSet("mvtec_ad2", "MVTec AD 2: train/good, validation/good, test_public/{good,bad} with "
              "ground_truth/bad/<stem>_mask.png; test_private, test_private_mixed unlabeled",
              CATEGORIES,
              lambda root, categories, image_level_only, dc: ad2_samples(root, categories,
                                                                         image_level_only),
              server=sys.modules[__name__], has_validation=True)
