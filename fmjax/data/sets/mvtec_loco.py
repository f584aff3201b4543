"""MVTec LOCO AD (Bergmann et al. 2022), logical and structural anomalies, as distributed:

  <root>/<category>/train/good/<NNN>.png            normal training images
  <root>/<category>/validation/good/<NNN>.png       normal validation images (calibration)
  <root>/<category>/test/good/<NNN>.png
  <root>/<category>/test/{logical,structural}_anomalies/<NNN>.png
  <root>/<category>/ground_truth/<type>/<NNN>/<MMM>.png   one file per region of image NNN
  <root>/<category>/defects_config.json

Every region file holds one nonzero pixel value, which names its defect in defects_config.json:
a list of {"defect_name", "pixel_value" (1-255), "saturation_threshold", "relative_saturation"}
(relative: a fraction in (0, 1] of the region's area; absolute: a number of pixels). The union
of an image's regions is its mask for the pixel metrics; the regions and their saturation give
sPRO (`fmjax.report.spro`). Logical and structural anomalies are also reported apart, each
with the normal test images, as the benchmark does.
"""

from __future__ import annotations

import json
import os

import numpy as np

from fmjax.core.errors import DataLayoutError
from fmjax.data.decode import mask_pixels
from fmjax.data.sets import DataSet
from fmjax.data.sources import (Region, Sample, folders_with, images_in, list_images,
                                resolve_categories)

CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")
ANOMALY_TYPES = ("logical_anomalies", "structural_anomalies")
CONFIG_KEYS = ("defect_name", "pixel_value", "saturation_threshold", "relative_saturation")


def read_defects_config(path: str) -> dict[int, tuple[str, float, bool]]:
  """{pixel value: (defect name, saturation threshold, relative)} of a defects_config.json; a
  DataLayoutError naming the file and what was expected otherwise."""
  expected = ("a JSON list of {\"defect_name\", \"pixel_value\" (1-255), "
              "\"saturation_threshold\", \"relative_saturation\"}")
  if not os.path.isfile(path):
    raise DataLayoutError(f"MVTec LOCO AD: {path} is missing (each category ships one: {expected}).")
  try:
    with open(path) as f:
      entries = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataLayoutError(f"MVTec LOCO AD: {path} is not valid JSON ({e}); expected {expected}.")
  if not isinstance(entries, list) or not entries:
    raise DataLayoutError(f"MVTec LOCO AD: {path} must be {expected}; got "
                          f"{type(entries).__name__}{'' if entries else ' (empty)'}.")
  out = {}
  for i, e in enumerate(entries):
    where = f"MVTec LOCO AD: {path} entry {i}"
    if not isinstance(e, dict) or not set(CONFIG_KEYS) <= set(e):
      raise DataLayoutError(f"{where} must have the keys {list(CONFIG_KEYS)}; got "
                            f"{sorted(e) if isinstance(e, dict) else type(e).__name__}.")
    value, threshold, relative = e["pixel_value"], e["saturation_threshold"], e["relative_saturation"]
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 255):
      raise DataLayoutError(f"{where}: pixel_value must be an integer in 1-255, got {value!r}.")
    if not isinstance(relative, bool):
      raise DataLayoutError(f"{where}: relative_saturation must be true or false, got {relative!r}.")
    number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if relative and not (number and 0 < threshold <= 1):
      raise DataLayoutError(f"{where}: a relative saturation_threshold is a fraction in (0, 1], "
                            f"got {threshold!r}.")
    if not relative and not (number and threshold >= 1):
      raise DataLayoutError(f"{where}: an absolute saturation_threshold is a number of pixels "
                            f">= 1, got {threshold!r}.")
    if value in out:
      raise DataLayoutError(f"{where}: pixel_value {value} is used twice.")
    out[value] = (str(e["defect_name"]), float(threshold), relative)
  return out


def _region(path: str, defects: dict, config_path: str) -> Region:
  """The Region of one ground-truth file: its single nonzero value looked up in `defects`."""
  values = [int(v) for v in np.unique(mask_pixels(path)) if v != 0]
  if len(values) != 1:
    raise DataLayoutError(f"MVTec LOCO AD region {path} must hold one nonzero pixel value; "
                          f"it holds {values or 'none'}.")
  if values[0] not in defects:
    raise DataLayoutError(f"MVTec LOCO AD region {path} has pixel value {values[0]}, which "
                          f"{config_path} does not list (it lists {sorted(defects)}).")
  _, threshold, relative = defects[values[0]]
  return Region(path, threshold, relative)


def loco_samples(root: str, categories=(), image_level_only: bool = False):
  """(categories, samples) of MVTec LOCO AD as distributed (validation normals as "val")."""
  categories = resolve_categories(root, categories, folders_with(root, "train"), "MVTec LOCO AD")
  samples = []
  for cat in categories:
    folder = os.path.join(root, cat)
    need = ["train/good", "validation/good", "test/good"] + [f"test/{t}" for t in ANOMALY_TYPES]
    for name in need:
      if not os.path.isdir(os.path.join(folder, *name.split("/"))):
        raise DataLayoutError(f"MVTec LOCO AD category {cat!r}: expected folder "
                              f"{os.path.join(folder, *name.split('/'))} ({', '.join(need)}).")
    config_path = os.path.join(folder, "defects_config.json")
    defects = read_defects_config(config_path) if not image_level_only else {}
    for split, name in (("train", "train/good"), ("val", "validation/good"), ("test", "test/good")):
      images = list_images(os.path.join(folder, *name.split("/")))
      if not images and split != "test":
        raise DataLayoutError(f"MVTec LOCO AD category {cat!r}: no images in "
                              f"{os.path.join(folder, *name.split('/'))}.")
      samples += [Sample(p, cat, split) for p in images]
    for kind in ANOMALY_TYPES:
      for image in list_images(os.path.join(folder, "test", kind)):
        if image_level_only:
          samples.append(Sample(image, cat, "test", kind, 1))
          continue
        stem = os.path.splitext(os.path.basename(image))[0]
        gt = os.path.join(folder, "ground_truth", kind, stem)
        masks = images_in(gt, f"MVTec LOCO AD image {image} has no mask folder {gt}/ (one file "
                          "per region: 000.png, 001.png, ...).",
                          f"MVTec LOCO AD mask folder {gt}/ of {image} holds no mask.")
        regions = tuple(_region(m, defects, config_path) for m in masks)
        samples.append(Sample(image, cat, "test", kind, 1, tuple(masks), regions))
    _check_mask_folders(folder, samples, cat)
  return categories, samples


def _check_mask_folders(folder: str, samples: list[Sample], cat: str) -> None:
  """A mask folder that names no test image is a layout mistake (a renamed or missing image)."""
  for kind in ANOMALY_TYPES:
    gt_root = os.path.join(folder, "ground_truth", kind)
    if not os.path.isdir(gt_root):
      continue
    stems = {os.path.splitext(os.path.basename(s.path))[0] for s in samples
             if s.category == cat and s.defect == kind}
    for name in sorted(os.listdir(gt_root)):
      if os.path.isdir(os.path.join(gt_root, name)) and name not in stems:
        raise DataLayoutError(f"MVTec LOCO AD mask folder {os.path.join(gt_root, name)}/ matches "
                              f"no image {os.path.join(folder, 'test', kind, name)}.png.")


SET = DataSet("mvtec_loco", "MVTec LOCO AD: train/good, validation/good, test/{good,logical_"
              "anomalies,structural_anomalies}, ground_truth/<type>/<NNN>/<MMM>.png, "
              "defects_config.json", CATEGORIES,
              lambda root, categories, image_level_only, dc: loco_samples(root, categories,
                                                                          image_level_only),
              defect_groups=ANOMALY_TYPES, has_validation=True)
