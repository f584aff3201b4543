"""One class-conditional U-Net on the 5 MVTec LOCO AD categories (the paper's recipe at 128x128).

  python -m fmjax.main --config configs/mvtec_loco.py --workdir runs/mvtec_loco \
      --config.data.root=/path/to/mvtec_loco_anomaly_detection [--config.data.categories=pushpins]

Calibration uses validation/good; the report adds AU-sPRO up to FPR 0.05 (the saturation of
each defect from defects_config.json) and gives logical and structural anomalies apart, each
with the normal test images. AUPIMO needs about 1e5 normal test pixels: at 128x128 LOCO's test
normals have enough. --config.evaluate.pixel_metrics_at=native measures the pixel metrics and
sPRO at the files' own sizes, where the absolute saturation thresholds are defined.
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "mvtec_loco"
  config.data.root = ""  # required: MVTec LOCO AD is not bundled
  config.data.categories = ""  # all 5: breakfast_box, juice_bottle, pushpins, screw_bag, splicing_connectors
  config.data.val_fraction = 0.0  # calibration uses the set's validation/good
  return config
