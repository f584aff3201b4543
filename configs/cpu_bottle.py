"""A small U-Net on the real MVTec AD bottle images at 32x32: a CPU-sized check that the method works.

  python -m fmjax.main --config configs/cpu_bottle.py --workdir runs/cpu_bottle

Trains and evaluates in about 20 minutes on a 2-core CPU. The tests run its first 500 steps
(tests/test_real_data.py) and require image AUROC >= 0.85 and pixel AUROC >= 0.72 at the
paper's K = T = 10, so a broken scorer or trainer fails on real data, not only on the
procedural images.
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "mvtec"
  config.data.root = "../shared/data/mvtec"
  config.data.categories = "bottle"
  config.data.val_fraction = 0.0  # every normal image trains, as in the paper
  configlib.small_cpu_unet(config, num_steps=1500)
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 500
  config.evaluate.max_forward_batch = 800
  return config
