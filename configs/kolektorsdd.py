"""The U-Net on KolektorSDD (the paper's recipe at 128x128; one category, "kolektorsdd").

  python -m fmjax.main --config configs/kolektorsdd.py --workdir runs/kolektorsdd \
      --config.data.root=/path/to/KolektorSDD

KolektorSDD (Tabernik et al. 2019) as distributed: kos01 ... kos50/Part<n>.jpg with
Part<n>_label.bmp. fmjax's fixed split (fmjax/data/sets/kolektorsdd.py): the defect-free
images of kos01-kos40 train; the defect-free images of kos41-kos50 and every defective image
test. The images are about 500x1260 pixels: `--config.data.resize=native
--config.data.crop_size=128 --config.evaluate.tile_size=256` scores them at their size.
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "kolektorsdd"
  config.data.root = ""  # required: KolektorSDD is not bundled
  config.data.val_fraction = 0.1  # held-out normals for calibrated thresholds
  return config
