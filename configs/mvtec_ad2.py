"""One class-conditional U-Net on the 8 MVTec AD 2 categories (the paper's recipe at 128x128).

  python -m fmjax.main --config configs/mvtec_ad2.py --workdir runs/mvtec_ad2 \
      --config.data.root=/path/to/mvtec_ad_2 [--config.data.categories=can,vial]
  python -m fmjax.main --config configs/mvtec_ad2.py --workdir runs/mvtec_ad2 --mode=score \
      --config.data.root=/path/to/mvtec_ad_2

The first trains, calibrates on validation/good and evaluates test_public; the second scores
test_private and test_private_mixed into the evaluation server's format:
runs/mvtec_ad2/scores/mvtec_ad2_submission/ and mvtec_ad2_submission.tar.gz
(fmjax/data/sets/mvtec_ad2.py states the format).
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "mvtec_ad2"
  config.data.root = ""  # required: MVTec AD 2 is not bundled
  config.data.categories = ""  # all 8: can, fabric, fruit_jelly, rice, sheet_metal, vial, wallplugs, walnuts
  config.data.val_fraction = 0.0  # calibration uses the set's validation/good
  return config
