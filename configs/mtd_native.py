"""Magnetic tiles at their native, non-square sizes: a CPU-sized high-resolution recipe.

  python -m fmjax.main --config configs/mtd_native.py --workdir runs/mtd_native
  python -m fmjax.main --config configs/mtd_native.py:squashed --workdir runs/mtd_squashed

`native` (the default) reads ../shared/data/mtd_native as published (greyscale JPEG files of
1,225 sizes, widths 103-632, heights 222-403), trains the small CPU U-Net on random 96x96
crops (96: a multiple of the stride 4 that fits the narrowest image) and scores every test
image whole-size in 96x96 tiles overlapping by 24 pixels, so heatmaps and pixel metrics are
at native resolution. `squashed` is the same model, steps and batch on the 128x128 squashed
copy (../shared/data/mtd), today's default geometry. The README's "High-resolution images"
section compares the two.
"""

from fmjax import configlib


def get_config(arg: str = "native"):
  if arg not in ("native", "squashed"):
    raise ValueError(f"configs/mtd_native.py takes native or squashed, not {arg!r}.")
  config = configlib.base_config()
  config.data.name = "folder"
  config.data.categories = "magnetic_tile"
  configlib.small_cpu_unet(config, num_steps=1500)
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 500
  config.evaluate.num_seeds = 4
  config.evaluate.num_times = 4
  config.evaluate.max_forward_batch = 800
  if arg == "native":
    config.data.root = "../shared/data/mtd_native"
    config.data.resize = "native"
    config.data.crop_size = 96
    config.data.image_size = 96  # the crop; what the parameters are first built for
    config.evaluate.tile_size = 96
    config.evaluate.tile_overlap = 24
  else:
    config.data.root = "../shared/data/mtd"
    config.data.image_size = 128
  return config
