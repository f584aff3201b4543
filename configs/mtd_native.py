"""Magnetic tiles at their native, non-square sizes: a CPU-sized high-resolution recipe.

  python -m fmjax.main --config configs/mtd_native.py --workdir runs/mtd_native
  python -m fmjax.main --config configs/mtd_native.py:squashed --workdir runs/mtd_squashed

`native` (the default) reads ../shared/data/mtd_native as published (greyscale JPEG files of
1,225 sizes, widths 103-632, heights 222-403; the test split is 66.2 megapixels), trains a
small U-Net (8 channels, attention only in its middle block) on random 64x64 crops and scores every test image
at its own size in 128x128 tiles, so heatmaps and pixel metrics are at native resolution.
`squashed` is the same model, crops, steps and batch on the images squashed to 128x128 (the
pixels of ../shared/data/mtd), scored whole. Both smooth the maps by one pixel (the README's
rule) and measure pixel metrics at the files' own sizes (`evaluate.pixel_metrics_at=native`:
the squashed maps are enlarged back). The sizes fit the 2-core CPU's half hour: the native
recipe measured 26 minutes in all (training 7.9, calibration 1.8, the test split 15.0), the
squashed one 12.8; both are near chance at this compute (README, "High-resolution images").
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
    config.data.resize = "native"
    config.evaluate.tile_size = 128
    config.evaluate.tile_overlap = 0
  else:
    # The 128x128 squashed copy: these files read at data.resize=square are ../shared/data/mtd
    # pixel for pixel (tests/test_real_data.py), and read from here their masks are also at
    # hand at the files' sizes, for pixel metrics measured at native resolution.
    config.data.resize = "square"
    config.data.image_size = 128
  config.data.root = "../shared/data/mtd_native"
  config.evaluate.smoothing_sigma = 1.0  # the README's rule: one pixel of the scored map
  config.evaluate.pixel_metrics_at = "native"  # both rows measured on the files' pixels
  return config
