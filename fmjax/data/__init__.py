"""Data sources. `load_dataset(config.data)` returns an `AnomalyDataset`."""

from fmjax.data.dataset import AnomalyDataset, NormStats, hold_out_normals
from fmjax.data.decode import CorruptImageError
from fmjax.data.sources import mvtec_samples, read_samples, visa_samples
from fmjax.data.synthetic import make_synthetic_dataset
from fmjax.data import sets
from fmjax.core.errors import ConfigError, DataLayoutError

DATASETS = ("synthetic",) + tuple(sets.MODULES)  # data.name: the procedural set, then `sets`


def categories_of(data_config) -> list[str]:
  """The configured categories: `data.categories` (comma-separated) or the dataset's defaults."""
  cats = data_config.categories
  cats = [c.strip() for c in cats.split(",") if c.strip()] if isinstance(cats, str) else list(cats)
  if cats:
    return cats
  if data_config.name == "synthetic":
    return list(data_config.synthetic.categories)
  if data_config.name in sets.MODULES:
    return list(sets.get(data_config.name).categories)  # () for folder: every one found
  return []


def load_folder_dataset(root: str, categories=(), image_size: int = 128,
                        image_level_only: bool = False, name: str = "folder",
                        skip_corrupt: bool = False, resize: str = "square") -> AnomalyDataset:
  """Reads categories (all sub-folders of `root` with a train/ folder when empty) of an
  MVTec-layout tree, each file at its `data.resize` size."""
  categories, samples = mvtec_samples(root, categories, image_level_only)
  return read_samples(name, categories, samples, image_size, with_masks=not image_level_only,
                      skip_corrupt=skip_corrupt, resize=resize)


def load_visa_dataset(root: str, categories=(), image_size: int = 128,
                      split_csv: str = "split_csv/1cls.csv", skip_corrupt: bool = False,
                      image_level_only: bool = False, resize: str = "square") -> AnomalyDataset:
  """Reads VisA as distributed, split by its official CSV; masks binarised (nonzero = defect)."""
  categories, samples = visa_samples(root, categories, split_csv, image_level_only)
  return read_samples("visa", categories, samples, image_size, with_masks=not image_level_only,
                      skip_corrupt=skip_corrupt, resize=resize)


def load_dataset(data_config) -> AnomalyDataset:
  """The dataset named by `config.data.name` at `config.data.image_size`, with
  `data.val_fraction` of each category's normal training images held out (`hold_out_normals`)."""
  return hold_out_normals(_load_source(data_config), data_config.get("val_fraction", 0.0))


def _load_source(data_config) -> AnomalyDataset:
  name = data_config.name
  if name == "synthetic":
    syn = data_config.synthetic
    return make_synthetic_dataset(
        image_size=data_config.image_size, categories=categories_of(data_config),
        num_train=syn.num_train, num_test_normal=syn.num_test_normal,
        num_test_anomalous=syn.num_test_anomalous, seed=syn.seed)
  if name not in DATASETS:
    raise ConfigError(f"Unknown dataset {name!r}: use one of {DATASETS}.")
  if not data_config.root:
    raise ConfigError(f"Set --config.data.root to the {name} data folder.")
  resize = data_config.get("resize", "square")
  if data_config.tfds_dir:
    from fmjax.data import tfds_builders  # pylint: disable=g-import-not-at-top
    if name not in tfds_builders.SETS:
      raise ConfigError(f"data.tfds_dir works with {', '.join(tfds_builders.SETS)}, not {name!r}.")
    if resize != "square":
      raise ConfigError(f"data.tfds_dir stores square images; it cannot read data.resize={resize}.")
    categories = categories_of(data_config)
    builder = tfds_builders.make_builder(
        name, data_config.tfds_dir, data_config.image_size, categories,
        data_config.image_level_only, data_config.visa_split_csv, data_config.realiad_images,
        data_config.realiad_jsons)
    tfds_builders.prepare(builder, data_config.root)  # a no-op once prepared
    return tfds_builders.read_prepared(builder, categories,
                                       with_masks=not data_config.image_level_only)
  data_set = sets.get(name)
  categories, samples = data_set.samples(data_config.root, categories_of(data_config),
                                         data_config.image_level_only, data_config)
  dataset = read_samples(name, categories, samples, data_config.image_size,
                         with_masks=not data_config.image_level_only,
                         skip_corrupt=data_config.skip_corrupt, resize=resize)
  dataset.defect_groups = data_set.defect_groups
  return dataset
