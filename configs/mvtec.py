"""The paper's default: one class-conditional U-Net on all 15 MVTec AD categories.

  python -m fmjax.main --config configs/mvtec.py --workdir runs/mvtec \
      --config.data.root=/path/to/mvtec_ad [--config.data.categories=bottle,cable]

The data root defaults to the shared sample (only `bottle` there): pass
--config.data.categories=bottle to train on it.

`configs/mvtec.py:fullres` is the flag set for MVTec AD's original files (900x900 bottle,
1024x1024 most others) at their own size: the paper's model trained on random 128x128 crops
(the pixels per sample of the paper's squashed 128x128 images, at full detail), every test
image scored whole-size in 256x256 tiles overlapping by 64 and smoothed by one pixel (the
README's rule), so heatmaps and pixel metrics are at the files' resolution. Its data root
defaults to ../shared/data/mvtec_fullres_sample (10 original bottle files, enough to exercise
it, with --config.data.categories=bottle); point --config.data.root at the full dataset for a
real run. A 900x900 or 1024x1024
image is 25 tiles of 256x256, 100 times the pixels the paper scores per image, so this is a
GPU/TPU recipe.
"""

from fmjax import configlib


def get_config(arg: str = ""):
  if arg not in ("", "fullres"):
    raise ValueError(f"configs/mvtec.py takes no argument or fullres, not {arg!r}.")
  config = configlib.base_config()
  config.data.name = "mvtec"
  config.data.root = "../shared/data/mvtec"
  config.data.categories = ""  # all 15 MVTec AD categories
  config.data.val_fraction = 0.0  # every normal image trains, as in the paper
  if arg == "fullres":
    config.data.root = "../shared/data/mvtec_fullres_sample"
    config.data.resize = "native"
    config.data.crop_size = 128
    config.evaluate.tile_size = 256
    config.evaluate.tile_overlap = 64
    config.evaluate.smoothing_sigma = 1.0
  return config
