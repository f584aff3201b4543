"""The in-memory form every data source produces, and normalisation statistics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import numpy as np

from fmjax.core import files, fingerprint
from fmjax.core.errors import ConfigError, DataLayoutError


@dataclasses.dataclass
class AnomalyDataset:
  """Normal training images and a labelled test split.

  Images are uint8 [N,H,W,3]; masks are uint8 {0,1} [M,H,W] or None for
  image-level-only datasets. A dataset of many sizes (`data.resize` other than square)
  holds 1-D object arrays of [H_i,W_i,3] images and [H_i,W_i] masks instead, indexed,
  masked and iterated like the stacks. Classes index `class_names` (one per category).
  """
  name: str
  class_names: list[str]
  train_images: np.ndarray
  train_classes: np.ndarray
  test_images: np.ndarray
  test_classes: np.ndarray
  test_labels: np.ndarray  # 0 normal, 1 anomalous
  test_masks: np.ndarray | None
  test_defects: list[str]
  test_paths: list[str]
  train_paths: list[str] | None = None  # files of the training images, when read from disk
  # Normal images held out of training (`hold_out_normals`), for calibration and validation.
  val_images: np.ndarray | None = None  # uint8 [V,H,W,3]
  val_classes: np.ndarray | None = None  # [V]
  val_paths: list[str] | None = None
  # Each test image's file: its (height, width) before `data.resize`, and its mask file (None
  # for normal images); None for data that was not read from files (`--config.evaluate.
  # pixel_metrics_at=native` needs them).
  test_file_sizes: list[tuple[int, int]] | None = None
  test_mask_paths: list[str | tuple[str, ...] | None] | None = None
  # Each test image's saturated regions (`sources.Region`s; () for normal images), for sPRO
  # (MVTec LOCO AD); None for sets without them.
  test_regions: list[tuple] | None = None
  # Defect types reported apart, each with the normal test images (MVTec LOCO AD: logical and
  # structural anomalies); () for none.
  defect_groups: tuple[str, ...] = ()

  def __post_init__(self):
    n, m = len(self.train_images), len(self.test_images)
    if n == 0:
      raise DataLayoutError(f"Dataset {self.name!r} has no training images.")
    if m == 0:
      raise DataLayoutError(f"Dataset {self.name!r} has no test images.")
    checks = [(self.train_classes, n, "train_classes"), (self.test_classes, m, "test_classes"),
              (self.test_labels, m, "test_labels"), (self.test_defects, m, "test_defects"),
              (self.test_paths, m, "test_paths")]
    for name in ("test_masks", "test_file_sizes", "test_mask_paths", "test_regions"):
      if getattr(self, name) is not None:
        checks.append((getattr(self, name), m, name))
    for arr, size, what in checks:
      if len(arr) != size:
        raise ValueError(f"{what} has {len(arr)} entries for {size} images.")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """[H,W,3] of the training images when they share one size (ValueError otherwise)."""
    if self.train_images.dtype == object:
      raise ValueError(f"Dataset {self.name!r} holds images of {len(self.train_sizes())} sizes.")
    return tuple(self.train_images.shape[1:])

  def fingerprint(self) -> str:
    """What the model trains on, as a hash (`fmjax.core.fingerprint`): the training images'
    pixels in order, their classes and the class names. Recorded in each checkpoint, so that
    a resume on other data (other files, data.* settings, held-out fraction) is refused."""
    if getattr(self, "_fingerprint", None) is None:
      self._fingerprint = fingerprint.of_arrays(
          [np.frombuffer(json.dumps(list(self.class_names)).encode(), np.uint8),
           np.asarray(self.train_classes, np.int64), *self.train_images])
    return self._fingerprint

  def test_fingerprint(self) -> str:
    """The labelled test split as a hash: images, classes, labels, masks and class names. A
    result measured on the test split (a study row) is reused only on the same split."""
    if getattr(self, "_test_fingerprint", None) is None:
      masks = [] if self.test_masks is None else list(self.test_masks)
      self._test_fingerprint = fingerprint.of_arrays(
          [np.frombuffer(json.dumps(list(self.class_names)).encode(), np.uint8),
           np.asarray(self.test_classes, np.int64), np.asarray(self.test_labels, np.int64),
           *self.test_images, *masks])
    return self._test_fingerprint

  def train_sizes(self) -> set[tuple[int, int]]:
    """The (height, width) of the training images."""
    if self.train_images.dtype != object:
      return {tuple(self.train_images.shape[1:3])}
    return {tuple(im.shape[:2]) for im in self.train_images}


@dataclasses.dataclass(frozen=True)
class NormStats:
  """Per-channel mean and std (in [0, 1] units) of the normal training images."""
  mean: tuple[float, float, float]
  std: tuple[float, float, float]

  @classmethod
  def of(cls, images: np.ndarray) -> "NormStats":
    """The statistics of uint8 images [N,H,W,3] (or an object array of [H_i,W_i,3]: every pixel
    counted once)."""
    if images.dtype != object:
      x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
      return cls(tuple(float(v) for v in x.mean(0)), tuple(float(max(v, 1e-6)) for v in x.std(0)))
    count, total = 0, 0.0
    for im in images:  # two passes (mean, then squared deviations), as np.std
      x = im.reshape(-1, im.shape[-1]).astype(np.float64) / 255.0
      count, total = count + len(x), total + x.sum(0)
    mean = total / count
    squares = sum(np.square(im.reshape(-1, im.shape[-1]) / 255.0 - mean).sum(0) for im in images)
    std = np.sqrt(squares / count)
    return cls(tuple(float(v) for v in mean), tuple(float(max(v, 1e-6)) for v in std))

  def normalize(self, images):
    """uint8 [...,3] -> float32 (x/255 - mean) / std; works on numpy and jax arrays."""
    mean = np.asarray(self.mean, np.float32)
    std = np.asarray(self.std, np.float32)
    return (images.astype(np.float32) / 255.0 - mean) / std

  def denormalize(self, x) -> np.ndarray:
    """float (normalised) -> float in [0, 1] units."""
    return np.asarray(x) * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)

  def save(self, path: str, data: str | None = None) -> None:
    """data_stats.json: mean, std and the fingerprint of the data they were computed on."""
    files.write_json(path, {**dataclasses.asdict(self), **({"data": data} if data else {})})

  @classmethod
  def load(cls, path: str) -> tuple["NormStats", str | None]:
    """(statistics, data fingerprint or None) of a data_stats.json, checked entry by entry
    (a hand-edited or truncated file is one CorruptFileError)."""
    from fmjax.core.records import Fields, read_json_file  # pylint: disable=g-import-not-at-top
    fix = f"delete {path} and rerun to compute the statistics again"
    f = Fields(read_json_file(path, fix), path, fix)
    values = {}
    for key in ("mean", "std"):
      v = f.numbers(key)
      if len(v) != 3 or not all(math.isfinite(x) for x in v) or (key == "std" and min(v) <= 0):
        f.fail(key, f"= {v}, not 3 finite numbers{' > 0' if key == 'std' else ''}")
      values[key] = tuple(float(x) for x in v)
    return cls(**values), (f.string("data") if f.has("data") else None)

  @classmethod
  def from_dict(cls, d) -> "NormStats":
    return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

  def to_dict(self):
    return {"mean": list(self.mean), "std": list(self.std)}


def held_out_count(n: int, fraction: float) -> int:
  """How many of a category's n normal images `fraction` holds out: round(fraction * n), at
  least 1 when fraction > 0, and never all of them (at least one is left to train on)."""
  if fraction <= 0 or n < 2:
    return 0
  return int(min(max(1, np.floor(fraction * n + 0.5)), n - 1))


def _content_key(image: np.ndarray) -> bytes:
  return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8).digest()


def hold_out_normals(dataset: AnomalyDataset, fraction: float) -> AnomalyDataset:
  """The dataset with `held_out_count` normal training images of each category moved to
  val_images/val_classes/val_paths.

  Which ones depends only on the images' pixels (those with the smallest content hashes),
  not on file order or on the other categories, so the split is the same on every host and
  every run, and adding images to a category moves few others.
  """
  if fraction <= 0:
    return dataset
  if dataset.val_images is not None:
    raise ConfigError(f"data.val_fraction={fraction:g}, but {dataset.name} ships its own "
                      "validation normals, which calibration uses: set "
                      "--config.data.val_fraction=0.")
  held = np.zeros(len(dataset.train_images), bool)
  for c in np.unique(dataset.train_classes):
    idx = np.flatnonzero(dataset.train_classes == c)
    keys = [_content_key(dataset.train_images[i]) for i in idx]
    order = sorted(range(len(idx)), key=lambda j: (keys[j], j))
    held[idx[order[:held_out_count(len(idx), fraction)]]] = True
  keep = ~held
  paths = dataset.train_paths
  return dataclasses.replace(
      dataset, train_images=dataset.train_images[keep], train_classes=dataset.train_classes[keep],
      train_paths=None if paths is None else [p for p, k in zip(paths, keep) if k],
      val_images=dataset.train_images[held], val_classes=dataset.train_classes[held],
      val_paths=None if paths is None else [p for p, h in zip(paths, held) if h])


def workdir_stats_path(workdir: str) -> str:
  return os.path.join(workdir, "data_stats.json")
