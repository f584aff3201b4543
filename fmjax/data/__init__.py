"""Data sources. `load_dataset(config.data)` returns an `AnomalyDataset`."""

from fmjax.data.dataset import AnomalyDataset, NormStats
from fmjax.data.folder import MVTEC_CATEGORIES, load_folder_dataset
from fmjax.data.synthetic import make_synthetic_dataset

DATASETS = ("synthetic", "mvtec", "folder")


def categories_of(data_config) -> list[str]:
  """The configured categories: `data.categories` (comma-separated) or the dataset's defaults."""
  cats = data_config.categories
  cats = [c.strip() for c in cats.split(",") if c.strip()] if isinstance(cats, str) else list(cats)
  if cats:
    return cats
  if data_config.name == "synthetic":
    return list(data_config.synthetic.categories)
  if data_config.name == "mvtec":
    return list(MVTEC_CATEGORIES)
  return []  # folder: every category found under root


def load_dataset(data_config) -> AnomalyDataset:
  """The dataset named by `config.data.name` at `config.data.image_size`."""
  name = data_config.name
  if name == "synthetic":
    syn = data_config.synthetic
    return make_synthetic_dataset(
        image_size=data_config.image_size, categories=categories_of(data_config),
        num_train=syn.num_train, num_test_normal=syn.num_test_normal,
        num_test_anomalous=syn.num_test_anomalous, seed=syn.seed)
  if name in ("mvtec", "folder"):
    if not data_config.root:
      raise ValueError(f"Set --config.data.root to the {name} data folder.")
    return load_folder_dataset(
        data_config.root, categories_of(data_config), data_config.image_size,
        image_level_only=data_config.image_level_only, name=name)
  raise ValueError(f"Unknown dataset {name!r}: use one of {DATASETS}.")
