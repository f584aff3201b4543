"""Any folder in MVTec layout (e.g. ../shared/data/mtd), one or several categories.

  python -m fmjax.main --config configs/folder.py --workdir runs/mtd \
      --config.data.root=../shared/data/mtd [--config.data.categories=magnetic_tile] \
      [--config.data.class_conditional=False]   # one pooled model instead of class labels
      [--config.data.image_level_only=True]     # no ground_truth masks: image metrics only

Every sub-folder of the root with a train/ folder is a category unless categories are given.
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "folder"
  config.data.root = "../shared/data/mtd"
  config.data.categories = ""  # every category found under root
  return config
