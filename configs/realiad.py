"""One class-conditional U-Net on the 30 Real-IAD categories (the paper's recipe at 128x128).

  python -m fmjax.main --config configs/realiad.py --workdir runs/realiad \
      --config.data.root=/path/to/Real-IAD [--config.data.categories=audiojack,pcb] \
      [--config.data.realiad_jsons=realiad_jsons_sv] [--config.data.realiad_images=realiad_256]

data.root holds the image folder (realiad_1024 by default) and the meta files' folder
(realiad_jsons: the unsupervised split; realiad_jsons_sv: single view; realiad_jsons_fuiad_<r>:
fully unsupervised). The five views of a sample are images of its category.
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "realiad"
  config.data.root = ""  # required: Real-IAD is not bundled
  config.data.categories = ""  # all 30
  config.data.val_fraction = 0.1  # held-out normals for calibrated thresholds
  return config
