"""The U-Net on KolektorSDD2 (the paper's recipe at 128x128; one category, "ksdd2").

  python -m fmjax.main --config configs/ksdd2.py --workdir runs/ksdd2 \
      --config.data.root=/path/to/KolektorSDD2

KolektorSDD2 (Bozic et al. 2021) as distributed: train/ and test/ of <id>.png with <id>_GT.png.
Training uses the normal images of train/ only (an image is anomalous when its ground truth has
a nonzero pixel); the test split is all of test/. Its images are about 230x630 pixels and its
defects thin: `--config.data.resize=native --config.data.crop_size=128
--config.evaluate.tile_size=128` scores them at their size (README "High-resolution images").
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "ksdd2"
  config.data.root = ""  # required: KolektorSDD2 is not bundled
  config.data.val_fraction = 0.1  # held-out normals for calibrated thresholds
  return config
