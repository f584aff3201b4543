"""The paper's default: one class-conditional U-Net on all 15 MVTec AD categories.

  python -m fmjax.main --config configs/mvtec.py --workdir runs/mvtec \
      --config.data.root=/path/to/mvtec_ad [--config.data.categories=bottle,cable]

The data root defaults to the shared sample (only `bottle` there): pass
--config.data.categories=bottle to train on it.
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "mvtec"
  config.data.root = "../shared/data/mvtec"
  config.data.categories = ""  # all 15 MVTec AD categories
  config.data.val_fraction = 0.0  # every normal image trains, as in the paper
  return config
