"""Real-IAD (Wang et al., CVPR 2024), read through its per-category JSON meta files:

  <root>/<data.realiad_images>/<category>/OK/S<nnnn>/<category>_<nnnn>_OK_C<v>_<time>.jpg
  <root>/<data.realiad_images>/<category>/NG/<defect code>/S<nnnn>/..._C<v>_<time>.jpg (+ .png mask)
  <root>/<data.realiad_jsons>/<category>.json   (realiad_jsons/realiad_jsons/<category>.json,
                                                 as the archive unpacks, is found too; for
                                                 the other splits unpacked there, give
                                                 data.realiad_jsons=realiad_jsons/realiad_jsons_sv)

A meta file is {"meta": {"prefix", "normal_class"}, "train": [...], "test": [...]}, each sample
{"category", "anomaly_class", "image_path", "mask_path"}, paths relative to
<root>/<data.realiad_images>/<prefix>. A test sample is normal when its anomaly_class is
meta.normal_class ("OK") or it has no mask_path. The split is the meta file's: realiad_jsons
(the unsupervised setting, the default), realiad_jsons_sv (single view, C1) or
realiad_jsons_fuiad_<r> (fully unsupervised, anomalies mixed into train at rate r: they train
as given). The five camera views C1-C5 of a sample are images of the same category.
"""

from __future__ import annotations

import json
import os

from fmjax.core.errors import DataLayoutError
from fmjax.data.sets import DataSet
from fmjax.data.sources import Sample, resolve_categories

CATEGORIES = ("audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood",
              "mint", "mounts", "pcb", "phone_battery", "plastic_nut", "plastic_plug",
              "porcelain_doll", "regulator", "rolled_strip_base", "sim_card_set", "switch", "tape",
              "terminalblock", "toothbrush", "toy", "toy_brick", "transistor1", "u_block", "usb",
              "usb_adaptor", "vcpill", "wooden_beads", "woodstick", "zipper")
SAMPLE_KEYS = {"category", "anomaly_class", "image_path", "mask_path"}


def _meta_dir(root: str, jsons: str) -> str:
  folder = jsons if os.path.isabs(jsons) else os.path.join(root, jsons)
  nested = os.path.join(folder, os.path.basename(os.path.normpath(folder)))
  return nested if os.path.isdir(nested) else folder


def _read_meta(path: str) -> dict:
  """A category's meta file, checked: one line naming the file and what was expected."""
  expected = ('{"meta": {"prefix", "normal_class"}, "train": [...], "test": [...]} with samples '
              '{"category", "anomaly_class", "image_path", "mask_path"}')
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataLayoutError(f"Real-IAD meta file {path} cannot be read ({e}); expected {expected}.")
  ok = (isinstance(meta, dict) and isinstance(meta.get("meta"), dict) and
        isinstance(meta["meta"].get("prefix"), str) and
        all(isinstance(meta.get(s), list) for s in ("train", "test")))
  if not ok:
    raise DataLayoutError(f"Real-IAD meta file {path} must be {expected}.")
  for split in ("train", "test"):
    for i, s in enumerate(meta[split]):
      if not isinstance(s, dict) or set(s) != SAMPLE_KEYS:
        raise DataLayoutError(f"Real-IAD meta file {path}: {split}[{i}] must have exactly the "
                              f"keys {sorted(SAMPLE_KEYS)}; got "
                              f"{sorted(s) if isinstance(s, dict) else type(s).__name__}.")
  return meta


def realiad_samples(root: str, categories=(), image_level_only: bool = False,
                    images: str = "realiad_1024", jsons: str = "realiad_jsons"):
  """(categories, samples) of Real-IAD as its meta files split it."""
  meta_dir = _meta_dir(root, jsons)
  if not os.path.isdir(meta_dir):
    if not os.path.isdir(root):
      resolve_categories(root, categories, [], "Real-IAD")  # says the root is missing
    raise DataLayoutError(f"Real-IAD: the meta folder {meta_dir} does not exist (set "
                          "--config.data.realiad_jsons to realiad_jsons, realiad_jsons_sv or "
                          "realiad_jsons_fuiad_<r>).")
  found = sorted(f[:-5] for f in os.listdir(meta_dir) if f.endswith(".json"))
  categories = resolve_categories(root, categories, found, "Real-IAD")
  image_root = os.path.join(root, images)
  if not os.path.isdir(image_root):
    raise DataLayoutError(f"Real-IAD: the image folder {image_root} does not exist (set "
                          "--config.data.realiad_images to realiad_256, realiad_512, "
                          "realiad_1024 or realiad_raw).")
  samples = []
  for cat in categories:
    path = os.path.join(meta_dir, f"{cat}.json")
    meta = _read_meta(path)
    base = os.path.join(image_root, meta["meta"]["prefix"])
    normal_class = meta["meta"].get("normal_class", "OK")
    for split in ("train", "test"):
      for s in meta[split]:
        image = os.path.join(base, s["image_path"])
        if not os.path.isfile(image):
          raise DataLayoutError(f"Real-IAD meta file {path} lists {s['image_path']}, which is "
                                f"not in {base}.")
        normal = s["anomaly_class"] == normal_class or not s["mask_path"]
        if split == "train":
          samples.append(Sample(image, cat, "train"))
          continue
        mask = None
        if not normal and not image_level_only:
          mask = os.path.join(base, s["mask_path"])
          if not os.path.isfile(mask):
            raise DataLayoutError(f"Real-IAD mask {mask} of {image} does not exist.")
        samples.append(Sample(image, cat, "test", "good" if normal else s["anomaly_class"],
                              int(not normal), mask))
    if not any(s.category == cat and s.split == "train" for s in samples):
      raise DataLayoutError(f"Real-IAD meta file {path} lists no training image.")
  return categories, samples


SET = DataSet("realiad", "Real-IAD: <images>/<category>/{OK,NG}/..., split by "
              "<jsons>/<category>.json", CATEGORIES,
              lambda root, categories, image_level_only, dc: realiad_samples(
                  root, categories, image_level_only, dc.realiad_images, dc.realiad_jsons))
