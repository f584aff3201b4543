"""One class-conditional U-Net on the 6 MPDD categories (the paper's recipe at 128x128).

  python -m fmjax.main --config configs/mpdd.py --workdir runs/mpdd \
      --config.data.root=/path/to/MPDD [--config.data.categories=tubes,connector]

MPDD (Metal Parts Defect Detection, Jezek et al. 2021) ships in the MVTec layout:
<root>/<category>/train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png.
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "mpdd"
  config.data.root = ""  # required: MPDD is not bundled
  config.data.categories = ""  # all 6: bracket_black, bracket_brown, bracket_white, connector, metal_plate, tubes
  config.data.val_fraction = 0.1  # held-out normals for calibrated thresholds
  return config
