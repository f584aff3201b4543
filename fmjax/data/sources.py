"""Indexing datasets on disk (MVTec AD, VisA, MVTec-layout folders) and reading them into memory.

An indexer lists `Sample`s (path, category, split, defect, label, mask path)
and checks the layout strictly; `read_samples` decodes them in parallel with a
grain pipeline into an `AnomalyDataset`.

  MVTec layout:  <root>/<category>/train/good/*.png
                 <root>/<category>/test/<defect>/*.png              ("good" = normal)
                 <root>/<category>/ground_truth/<defect>/<stem>_mask.png
  VisA:          <root>/<category>/Data/Images/{Normal,Anomaly}/*.JPG
                 <root>/<category>/Data/Masks/Anomaly/*.png         (nonzero = defect)
                 <root>/split_csv/1cls.csv                          (object,split,label,image,mask)
"""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings

import grain
import numpy as np

from fmjax.data.dataset import AnomalyDataset
from fmjax.core.errors import DataLayoutError
from fmjax.data.decode import (IMAGE_EXTENSIONS, CorruptImageError, read_image_and_size, read_mask,
                               stack_images)

MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
                    "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
                    "zipper")
VISA_CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
                   "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")
NORMAL_FOLDERS = ("good", "Normal")


@dataclasses.dataclass(frozen=True)
class Region:
  """One ground-truth region of a data set with saturated regions (MVTec LOCO AD): a mask file
  whose nonzero pixels are the region, and when its overlap saturates (`fmjax.report.spro`)."""
  path: str
  saturation: float  # a fraction of the region's area (relative), or pixels of the file
  relative: bool


@dataclasses.dataclass(frozen=True)
class Sample:
  path: str
  category: str
  split: str  # "train" | "val" (a set's own validation normals) | "test"
  defect: str = "good"  # "good" for normal images
  label: int = 0  # 0 normal, 1 anomalous
  mask: str | tuple[str, ...] | None = None  # mask file(s) of an anomalous test image (union)
  regions: tuple[Region, ...] = ()  # its saturated regions (MVTec LOCO AD), else ()


def mask_files(mask: str | tuple[str, ...] | None) -> tuple[str, ...]:
  """The files of a `Sample.mask` (one path, several whose union is the mask, or none)."""
  return (mask,) if isinstance(mask, str) else tuple(mask or ())


def list_images(folder: str) -> list[str]:
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".") and
                os.path.isfile(os.path.join(folder, f)))


def _no_folder(path: str, what: str = "Data root") -> DataLayoutError:
  """The error for a data folder that is not there (a URL gets the way to make it a folder)."""
  if "://" in path:
    return DataLayoutError(
        f"{what} {path!r} is a URL, but images are read from a folder: copy them to the disk "
        "(gcloud storage cp -r <url> /data) or mount the bucket (gcsfuse), and give that folder.")
  if os.path.exists(path):
    return DataLayoutError(f"{what} {path!r} is a file, not a folder of images"
                           + (" (set --config.data.root to the folder)." if what == "Data root"
                              else "."))
  return DataLayoutError(f"{what} {path!r} does not exist"
                         + (" (set --config.data.root)." if what == "Data root" else "."))


def folders_with(root: str, child: str) -> list[str]:
  """The sub-folders of `root` that hold a folder `child` (a layout's categories), sorted; []
  when `root` is not a folder (`resolve_categories` then says so)."""
  if not os.path.isdir(root):
    return []
  return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, child)))


def images_in(folder: str, missing: str, empty: str | None = None) -> list[str]:
  """The images of `folder` (`list_images`); DataLayoutError(`missing`) when it is not a
  folder, DataLayoutError(`empty`) when it holds none (None: it may be empty)."""
  if not os.path.isdir(folder):
    raise DataLayoutError(missing)
  images = list_images(folder)
  if not images and empty is not None:
    raise DataLayoutError(empty)
  return images


def missing_file(expected: str, what: str, fix: str = "") -> DataLayoutError:
  """The error for a file the layout names that is not there: when a file of the same name with
  another extension is (a .bmp where a .png was expected), it says so."""
  stem = os.path.splitext(expected)[0]
  folder = os.path.dirname(expected) or "."
  others = sorted(f for f in (os.listdir(folder) if os.path.isdir(folder) else [])
                  if os.path.splitext(f)[0] == os.path.basename(stem) and
                  os.path.join(folder, f) != expected)
  if others:
    return DataLayoutError(f"{what} {expected}: found {os.path.join(folder, others[0])}, but "
                           f"the layout expects {expected} (a {os.path.splitext(expected)[1]} "
                           "file).")
  return DataLayoutError(f"{what} {expected}." + (f" {fix}" if fix else ""))


def unmatched_masks(gt_dir: str, expected: set[str], layout: str) -> None:
  """A DataLayoutError for the first file of `gt_dir` that is not one of the `expected` mask
  paths (a mask whose name matches no image)."""
  if not os.path.isdir(gt_dir):
    return
  for path in list_images(gt_dir):  # image files only (a Thumbs.db or a README is not a mask)
    if path not in expected:
      raise DataLayoutError(f"{layout} mask {path} matches no test image (each mask is named "
                            "after its image).")


def resolve_categories(root: str, wanted, found: list[str], layout: str) -> list[str]:
  if not os.path.isdir(root):
    raise _no_folder(root)
  categories = list(wanted) or found
  if not categories:
    raise DataLayoutError(f"No categories in {layout} layout under {root}.")
  missing = [c for c in categories if c not in found]
  if missing:
    raise DataLayoutError(f"Categories {missing} not found under {root} ({layout} layout); "
                          f"found {found}.")
  return categories


def mvtec_samples(root: str, categories=(), image_level_only: bool = False):
  """(categories, samples) of an MVTec-layout tree; all categories with a train/ folder if none given."""
  categories = resolve_categories(root, categories, folders_with(root, "train"), "MVTec")
  samples = []
  for cat in categories:
    cat_dir = os.path.join(root, cat)
    train_dir, test_dir = os.path.join(cat_dir, "train", "good"), os.path.join(cat_dir, "test")
    for d in (train_dir, test_dir):
      if not os.path.isdir(d):
        raise DataLayoutError(f"Category {cat!r}: expected folder {d} (MVTec layout "
                              f"<root>/<category>/train/good and test/<defect>).")
    train = list_images(train_dir)
    if not train:
      raise DataLayoutError(f"Category {cat!r}: the training split is empty (no images in {train_dir}).")
    samples += [Sample(p, cat, "train") for p in train]
    test = []
    for defect in sorted(os.listdir(test_dir)):
      ddir = os.path.join(test_dir, defect)
      if not os.path.isdir(ddir):
        continue
      normal = defect in NORMAL_FOLDERS
      gt_dir = os.path.join(cat_dir, "ground_truth", defect)
      images = list_images(ddir)
      if images and not normal and not image_level_only and not os.path.isdir(gt_dir):
        raise DataLayoutError(
            f"Category {cat!r}: defect type {defect!r} has no masks folder {gt_dir}. Set "
            "--config.data.image_level_only=True for datasets without masks.")
      masks = set()
      for path in images:
        mask = None
        if not normal and not image_level_only:
          stem = os.path.splitext(os.path.basename(path))[0]
          mask = os.path.join(gt_dir, f"{stem}_mask.png")
          if not os.path.isfile(mask):
            raise missing_file(mask, f"Anomalous test image {path} has no mask",
                               "Set --config.data.image_level_only=True for datasets without "
                               "masks.")
          masks.add(mask)
        test.append(Sample(path, cat, "test", defect, int(not normal), mask))
      if not normal and not image_level_only:
        unmatched_masks(gt_dir, masks, "MVTec-layout")
    if not test:
      raise DataLayoutError(f"Category {cat!r}: the test split is empty (no images under {test_dir}).")
    samples += test
  return categories, samples


def visa_samples(root: str, categories=(), split_csv: str = "split_csv/1cls.csv",
                 image_level_only: bool = False):
  """(categories, samples) of VisA as distributed, split by the official CSV."""
  csv_path = split_csv if os.path.isabs(split_csv) else os.path.join(root, split_csv)
  if not os.path.isdir(root):
    raise _no_folder(root)
  if not os.path.isfile(csv_path):
    raise DataLayoutError(f"VisA split file {csv_path} not found (the official split_csv/1cls.csv "
                          "that ships with VisA; or set --config.data.visa_split_csv).")
  with open(csv_path, newline="") as f:
    rows = list(csv.DictReader(f))
  need = {"object", "split", "label", "image", "mask"}
  if not rows or not need <= set(rows[0]):
    raise DataLayoutError(f"{csv_path} must have the columns {sorted(need)}; "
                          f"found {sorted(rows[0]) if rows else 'no rows'}.")
  found = sorted({r["object"] for r in rows})
  categories = resolve_categories(root, categories, found, "VisA")
  samples = []
  for cat in categories:
    mine = sorted((r for r in rows if r["object"] == cat), key=lambda r: r["image"])
    for split in ("train", "test"):
      if not any(r["split"] == split for r in mine):
        raise DataLayoutError(f"Category {cat!r}: the {split} split in {csv_path} is empty.")
    for r in mine:
      path = os.path.join(root, r["image"])
      if not os.path.isfile(path):
        raise DataLayoutError(f"{csv_path} lists {r['image']}, which is not in {root}.")
      anomalous = r["label"].strip().lower() == "anomaly"
      if r["split"] == "train" and anomalous:
        raise DataLayoutError(f"{csv_path} puts an anomalous image in the train split: {r['image']}.")
      mask = None
      if anomalous and not image_level_only:
        if not r["mask"]:
          raise DataLayoutError(f"Anomalous image {r['image']} has no mask in {csv_path}.")
        mask = os.path.join(root, r["mask"])
        if not os.path.isfile(mask):
          raise DataLayoutError(f"Mask {mask} of {r['image']} does not exist.")
      samples.append(Sample(path, cat, r["split"], "anomaly" if anomalous else "good",
                            int(anomalous), mask))
  return categories, samples


class _Decode(grain.transforms.Map):
  """Sample -> {"image", "mask", "error"}; errors are returned, not raised, to report all at once."""

  def __init__(self, image_size: int, with_masks: bool, resize: str = "square"):
    self.size, self.with_masks, self.resize = image_size, with_masks, resize

  def map(self, sample: Sample) -> dict:
    out = {"image": None, "mask": None, "error": None, "warnings": [], "file_size": None}
    try:
      out["image"], original_wh = read_image_and_size(sample.path, self.size, self.resize)
      out["file_size"] = (int(original_wh[1]), int(original_wh[0]))
      if self.with_masks and sample.split == "test":
        out["mask"] = np.zeros(out["image"].shape[:2], np.uint8)
        for mask in mask_files(sample.mask):
          out["mask"] |= read_mask(mask, self.size, original_wh, notes=out["warnings"],
                                   resize=self.resize)
    except CorruptImageError as e:
      out["error"] = str(e)
    return out


def _decode_all(samples: list[Sample], decode: _Decode, skip_corrupt: bool,
                num_threads: int) -> list[dict]:
  """Decodes all samples with grain threads; undecodable files are all listed, or skipped."""
  ds = grain.MapDataset.source(samples).map(decode)
  decoded = list(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                      prefetch_buffer_size=64)))
  errors = [d["error"] for d in decoded if d["error"]]
  if errors and not skip_corrupt:
    listed = "\n  ".join(errors[:10]) + (f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else "")
    raise CorruptImageError(f"{len(errors)} of {len(samples)} files cannot be decoded:\n  {listed}\n"
                            "Fix or remove them, or set --config.data.skip_corrupt=True to skip "
                            "them with a warning.")
  if errors:
    warnings.warn(f"Skipped {len(errors)} undecodable files (data.skip_corrupt=True): "
                  + "; ".join(errors[:5]), stacklevel=3)
  return decoded


def read_samples(name: str, categories: list[str], samples: list[Sample], image_size: int,
                 with_masks: bool = True, skip_corrupt: bool = False,
                 num_threads: int = 16, resize: str = "square") -> AnomalyDataset:
  """Decodes every sample (grain, `num_threads` threads) into an in-memory AnomalyDataset at
  the size `resize` (`decode.resized_size`) gives each file."""
  decoded = _decode_all(samples, _Decode(image_size, with_masks, resize), skip_corrupt, num_threads)
  for d in decoded:
    for w in d["warnings"]:
      warnings.warn(w, stacklevel=2)
  keep = [(s, d) for s, d in zip(samples, decoded) if not d["error"]]
  class_of = {c: i for i, c in enumerate(categories)}
  train = [(s, d) for s, d in keep if s.split == "train"]
  val = [(s, d) for s, d in keep if s.split == "val"]
  test = [(s, d) for s, d in keep if s.split == "test"]
  for split, items in (("train", train), ("test", test)):
    for cat in categories:
      if not any(s.category == cat for s, _ in items):
        raise DataLayoutError(f"Category {cat!r} has no readable {split} images.")
  return AnomalyDataset(
      name=name, class_names=list(categories),
      train_images=stack_images([d["image"] for _, d in train]),
      train_classes=np.asarray([class_of[s.category] for s, _ in train], np.int32),
      test_images=stack_images([d["image"] for _, d in test]),
      test_classes=np.asarray([class_of[s.category] for s, _ in test], np.int32),
      test_labels=np.asarray([s.label for s, _ in test], np.int32),
      test_masks=stack_images([d["mask"] for _, d in test]) if with_masks else None,
      test_defects=[s.defect for s, _ in test], test_paths=[s.path for s, _ in test],
      train_paths=[s.path for s, _ in train],
      test_file_sizes=[d["file_size"] for _, d in test],
      test_mask_paths=[s.mask for s, _ in test] if with_masks else None,
      test_regions=([s.regions for s, _ in test]
                    if with_masks and any(s.regions for s, _ in test) else None),
      **({} if not val else dict(
          val_images=stack_images([d["image"] for _, d in val]),
          val_classes=np.asarray([class_of[s.category] for s, _ in val], np.int32),
          val_paths=[s.path for s, _ in val])))


def folder_images(folder: str, exclude=()) -> list[str]:
  """Every image file under `folder` (recursively; hidden files and folders, and the folders
  in `exclude`, e.g. fmjax's own outputs, left out), sorted; an error if there are none."""
  if not os.path.isdir(folder):
    raise _no_folder(folder, "Folder")
  skip = {os.path.realpath(e) for e in exclude}
  inside = lambda p: any(p == s or p.startswith(s + os.sep) for s in skip)
  paths = []
  for d, dirs, names in ([] if inside(os.path.realpath(folder)) else os.walk(folder)):
    dirs[:] = sorted(n for n in dirs if not n.startswith(".") and
                     os.path.realpath(os.path.join(d, n)) not in skip)
    paths += [os.path.join(d, f) for f in names
              if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
  paths.sort()
  if not paths:
    raise DataLayoutError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}"
                          + (" (fmjax's own output folders left out)." if skip else "."))
  return paths


@dataclasses.dataclass
class DecodedImages:
  array: np.ndarray  # uint8 [n_ok,H,W,3], or an object array of [H_i,W_i,3] (many sizes)
  ok: list[bool]  # per input path: decoded (False only with skip_corrupt)
  file_sizes: list[tuple[int, int]] | None = None  # (height, width) of each decoded file


def read_images(paths: list[str], image_size: int, skip_corrupt: bool = False,
                num_threads: int = 16, resize: str = "square") -> DecodedImages:
  """Decodes image files in parallel (grain threads); corrupt files raise or are skipped."""
  samples = [Sample(p, "", "score") for p in paths]
  decoded = _decode_all(samples, _Decode(image_size, False, resize), skip_corrupt, num_threads)
  ok = [not d["error"] for d in decoded]
  if not any(ok):
    raise CorruptImageError(f"None of the {len(paths)} files could be decoded.")
  return DecodedImages(stack_images([d["image"] for d in decoded if not d["error"]]), ok,
                       [d["file_size"] for d in decoded if not d["error"]])
