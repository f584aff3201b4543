"""Magnetic tiles at their native, non-square sizes: a CPU-sized high-resolution recipe.

  python -m fmjax.main --config configs/mtd_native.py --workdir runs/mtd_native
  python -m fmjax.main --config configs/mtd_native.py:squashed --workdir runs/mtd_squashed

`native` (the default) reads ../shared/data/mtd_native as published (greyscale JPEG files of
1,225 sizes, widths 103-632, heights 222-403; the test split is 66.2 megapixels), trains a
small U-Net without attention (8 channels) on random 64x64 crops and scores every test image
at its own size in 128x128 tiles, so heatmaps and pixel metrics are at native resolution.
`squashed` is the same model, crops, steps and batch on the 128x128 squashed copy
(../shared/data/mtd), scored whole. The sizes fit the 2-core CPU's half hour: a 60-step trial
ran 1.76 steps/s, and 30 test images (3.15 megapixels) scored in 39.8 s at K = T = 2, so
1,000 steps take about 10 minutes and the test split about 14.
"""

from fmjax import configlib


def get_config(arg: str = "native"):
  if arg not in ("native", "squashed"):
    raise ValueError(f"configs/mtd_native.py takes native or squashed, not {arg!r}.")
  config = configlib.base_config()
  config.data.name = "folder"
  config.data.categories = "magnetic_tile"
  configlib.small_cpu_unet(config, num_steps=1000)
  config.model.update(channels=8, attention_rates=(), head_channels=8, norm_groups=4)
  config.train.batch_size = 16
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 500
  config.data.crop_size = 64
  config.data.image_size = 64  # the crop; what the parameters are first built for
  config.evaluate.num_seeds = 2
  config.evaluate.num_times = 2
  config.evaluate.batch_size = 8
  config.evaluate.max_forward_batch = 800
  if arg == "native":
    config.data.root = "../shared/data/mtd_native"
    config.data.resize = "native"
    config.evaluate.tile_size = 128
    config.evaluate.tile_overlap = 0
  else:
    config.data.root = "../shared/data/mtd"
    config.data.resize = "long_side:128"  # the copy is 128x128 already: read as it is
  return config
