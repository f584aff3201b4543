"""One class-conditional U-Net on BTAD's 3 products (the paper's recipe at 128x128).

  python -m fmjax.main --config configs/btad.py --workdir runs/btad \
      --config.data.root=/path/to/BTech_Dataset_transformed [--config.data.categories=01]

BTAD (beanTech Anomaly Detection, Mishra et al. 2021) as distributed:
<root>/<01|02|03>/train/ok, test/ok, test/ko (.bmp or .png), ground_truth/ko/<stem>.png.
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "btad"
  config.data.root = ""  # required: BTAD is not bundled
  config.data.categories = ""  # all 3: 01, 02, 03
  config.data.val_fraction = 0.1  # held-out normals for calibrated thresholds
  return config
