"""One class-conditional U-Net on the 12 VisA categories (45,288,771 parameters).

  python -m fmjax.main --config configs/visa.py --workdir runs/visa \
      --config.data.root=/path/to/VisA [--config.data.categories=pcb1,candle]

The root is VisA as distributed (<root>/<category>/Data/..., <root>/split_csv/1cls.csv);
the official 1cls split defines train/test, and masks are binarised (nonzero = defect).
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "visa"
  config.data.root = ""  # required: VisA is not bundled
  config.data.categories = ""  # all 12 VisA categories
  config.data.visa_split_csv = "split_csv/1cls.csv"
  config.data.val_fraction = 0.0  # every normal image trains, as in the paper
  return config
