"""A small U-Net on the embedded procedural dataset: a full run in minutes on a CPU.

  python -m fmjax.main --config configs/quickstart.py --workdir runs/quickstart
"""

from fmjax import configlib


def get_config():
  config = configlib.base_config()
  config.data.name = "synthetic"
  config.data.image_size = 32
  config.model.channels = 16
  config.model.num_res_blocks = 1
  config.model.channel_mult = (1, 2, 2)
  config.model.attention_rates = (4,)
  config.model.head_channels = 16
  config.model.norm_groups = 8
  config.model.dropout = 0.0
  config.model.dtype = "float32"
  config.train.batch_size = 32
  config.train.num_steps = 500
  config.train.learning_rate = 1e-3
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 200
  config.evaluate.num_seeds = 4
  config.evaluate.num_times = 4
  config.evaluate.batch_size = 32
  config.evaluate.max_forward_batch = 512
  return config
