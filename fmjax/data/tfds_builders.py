"""TFDS builders for the data sets of `fmjax.data.sets` (manual download -> array_record), read
without TensorFlow: every set whose masks are plain files (SETS: all but MVTec LOCO AD, whose
regions and saturations do not fit one mask), with a validation split for the sets that ship
validation normals (MVTec AD 2).

    builder = make_builder("mvtec", data_dir, image_size=128, categories=["bottle"])
    prepare(builder, manual_dir="/data/mvtec_ad")  # once: decode, resize, write array_record
    dataset = read_prepared(builder)                # AnomalyDataset via the TFDS data source

Choices: features are fixed-shape uint8 `Tensor`s (image [S,S,3], mask [S,S]) at
the configured resolution rather than `tfds.features.Image`, because encoding
PNGs inside TFDS needs TensorFlow, and decoding them again would cost time on
every read. Records are array_record files, which `tfds.data_source` (and so
grain) reads with random access and no TensorFlow at all. The images are
decoded with the same code as the folder reader, so both give identical arrays.
The resolution and categories are part of the builder config's name, so several
preparations live side by side in one data_dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types

import numpy as np

from fmjax.data import sets
from fmjax.data.dataset import AnomalyDataset
from fmjax.data.decode import read_image_and_size, read_mask
from fmjax.data.sources import Sample
from fmjax.core.errors import ConfigError, DataLayoutError

SETS = tuple(n for n in sets.MODULES if n != "mvtec_loco")
DEFAULT_OPTIONS = {"split_csv": "split_csv/1cls.csv", "realiad_images": "realiad_1024",
                   "realiad_jsons": "realiad_jsons"}


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("The TFDS builders need tensorflow-datasets (pip install "
                      "tensorflow-datasets); TensorFlow itself is not needed.") from e
  return tfds


def _config_name(image_size: int, categories, options: dict | None = None) -> str:
  """<categories>_<size>px, and a digest of the set's reading options when not the defaults
  (several preparations live side by side in one data_dir)."""
  name = f"{'-'.join(categories) if categories else 'all'}_{image_size}px"
  changed = {k: v for k, v in (options or {}).items() if DEFAULT_OPTIONS.get(k) != v}
  if changed:
    name += "_" + hashlib.blake2b(repr(sorted(changed.items())).encode(), digest_size=4).hexdigest()
  return name


def _splits(kind: str) -> tuple[str, ...]:
  return ("train", "test") + (("val",) if sets.get(kind).has_validation else ())


def _make_builder_class(kind: str):
  """A GeneratorBasedBuilder for the set `kind` (one of SETS), created on first use (lazy tfds
  import)."""
  tfds = _tfds()

  @dataclasses.dataclass
  class AnomalyConfig(tfds.core.BuilderConfig):
    image_size: int = 128
    categories: tuple = ()
    image_level_only: bool = False
    split_csv: str = "split_csv/1cls.csv"
    realiad_images: str = "realiad_1024"
    realiad_jsons: str = "realiad_jsons"

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A data set at one resolution: train (normal), test (labelled, with masks) and, for the
    sets that ship them, val (validation normals)."""
    name = f"fmjax_{kind}"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "Every set of fmjax.data.sets; a val split; the readers' order.",
                     "1.0.0": "MVTec AD and VisA."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the dataset from its authors and pass its root folder as manual_dir "
        f"(its layout: {sets.get(kind).description}).")
    BUILDER_CONFIG_CLS = AnomalyConfig
    url_infos = None  # manual download only: no checksums file to look up beside the code

    def _info(self):
      size = self.builder_config.image_size
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
          "mask": tfds.features.Tensor(shape=(size, size), dtype=np.uint8),
          "anomalous": tfds.features.Scalar(dtype=np.int64),
          "category": tfds.features.Text(),
          "defect": tfds.features.Text(),
          "path": tfds.features.Text(),
          "order": tfds.features.Scalar(dtype=np.int64),  # the folder reader's position
      }), description=f"{kind} anomaly detection at {size}x{size} (fmjax).")

    def _samples(self, dl_manager):
      cfg = self.builder_config
      root = str(dl_manager.manual_dir)
      options = types.SimpleNamespace(visa_split_csv=cfg.split_csv,
                                      realiad_images=cfg.realiad_images,
                                      realiad_jsons=cfg.realiad_jsons)
      return sets.get(kind).samples(root, list(cfg.categories), cfg.image_level_only, options)

    def _split_generators(self, dl_manager):
      _, samples = self._samples(dl_manager)
      return {split: self._generate_examples([s for s in samples if s.split == split])
              for split in _splits(kind)}

    def _generate_examples(self, samples: list[Sample]):
      size = self.builder_config.image_size
      for order, s in enumerate(samples):
        image, original_wh = read_image_and_size(s.path, size)
        mask = (read_mask(s.mask, size, original_wh) if s.mask
                else np.zeros((size, size), np.uint8))
        yield s.path, {"image": image, "mask": mask, "anomalous": s.label,
                       "category": s.category, "defect": s.defect, "path": s.path,
                       "order": order}

  Builder.__name__ = f"Fmjax{kind.title().replace('_', '')}"
  return Builder, AnomalyConfig


_CLASSES: dict = {}


def make_builder(kind: str, data_dir: str, image_size: int = 128,
                 categories=(), image_level_only: bool = False,
                 split_csv: str = "split_csv/1cls.csv", realiad_images: str = "realiad_1024",
                 realiad_jsons: str = "realiad_jsons"):
  """A TFDS builder for the set `kind` (one of SETS) writing array_record files under
  `data_dir`."""
  if kind not in SETS:
    raise ConfigError(f"No TFDS builder for {kind!r}: use one of {SETS}.")
  if kind not in _CLASSES:
    _CLASSES[kind] = _make_builder_class(kind)
  builder_cls, config_cls = _CLASSES[kind]
  options = {"split_csv": split_csv, "realiad_images": realiad_images,
             "realiad_jsons": realiad_jsons}
  config = config_cls(name=_config_name(image_size, categories, options), image_size=image_size,
                      categories=tuple(categories), image_level_only=image_level_only, **options)
  return builder_cls(config=config, data_dir=data_dir, file_format="array_record")


def prepare(builder, manual_dir: str) -> None:
  """Writes the array_record files from the dataset folder `manual_dir` (no-op once done)."""
  tfds = _tfds()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def read_prepared(builder, class_names=None, with_masks: bool = True) -> AnomalyDataset:
  """The prepared train, test (and val) splits, read through the builder's data source
  (array_record).

  In the folder reader's order (recorded when prepared), so both give the same arrays.
  """
  splits = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split=split)
    splits[split] = [source[i] for i in range(len(source))]
    if not splits[split]:
      raise DataLayoutError(f"The prepared {split} split of {builder.info.full_name} is empty.")
  for rows in splits.values():
    rows.sort(key=lambda r: int(r["order"]))
  found = list(dict.fromkeys(_text(r["category"]) for r in splits["train"]))
  names = list(class_names or found)
  index = {c: i for i, c in enumerate(names)}
  train, test = splits["train"], splits["test"]
  return AnomalyDataset(
      name=builder.name.removeprefix("fmjax_"), class_names=names,
      train_images=np.stack([r["image"] for r in train]),
      train_classes=np.asarray([index[_text(r["category"])] for r in train], np.int32),
      test_images=np.stack([r["image"] for r in test]),
      test_classes=np.asarray([index[_text(r["category"])] for r in test], np.int32),
      test_labels=np.asarray([r["anomalous"] for r in test], np.int32),
      test_masks=np.stack([r["mask"] for r in test]) if with_masks else None,
      test_defects=[_text(r["defect"]) for r in test], test_paths=[_text(r["path"]) for r in test],
      train_paths=[_text(r["path"]) for r in train],
      **({} if "val" not in splits else dict(
          val_images=np.stack([r["image"] for r in splits["val"]]),
          val_classes=np.asarray([index[_text(r["category"])] for r in splits["val"]], np.int32),
          val_paths=[_text(r["path"]) for r in splits["val"]])))


def _text(v) -> str:
  return v.decode() if isinstance(v, bytes) else str(v)
