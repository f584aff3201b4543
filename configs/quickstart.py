"""A small U-Net on the embedded procedural dataset: a full run in minutes on a CPU.

  python -m fmjax.main --config configs/quickstart.py --workdir runs/quickstart
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "synthetic"
  configlib.small_cpu_unet(config, num_steps=500)
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 200
  config.evaluate.num_seeds = 4
  config.evaluate.num_times = 4
  config.evaluate.max_forward_batch = 512
  return config
