"""The tests' small config, importable without conftest's set-up (e.g. by a config file
that a subprocess loads)."""


def tiny_config(**overrides):
  """A U-Net small enough to train a few steps on CPU in seconds, on 16x16 synthetic data."""
  from fmjax import configlib
  c = configlib.base_config()
  c.data.name = "synthetic"
  c.data.image_size = 16
  c.data.synthetic.num_train = 12
  c.data.synthetic.num_test_normal = 2
  c.data.synthetic.num_test_anomalous = 2
  c.model.channels = 8
  c.model.num_res_blocks = 1
  c.model.channel_mult = (1, 2)
  c.model.attention_rates = (2,)
  c.model.head_channels = 8
  c.model.norm_groups = 4
  c.model.dtype = "float32"
  c.train.batch_size = 8
  c.train.num_steps = 4
  c.train.learning_rate = 1e-3
  c.train.log_every_steps = 1
  c.train.checkpoint_every_steps = 2
  c.evaluate.num_seeds = 2
  c.evaluate.num_times = 2
  c.evaluate.batch_size = 8
  c.evaluate.num_heatmaps = 2
  c.mesh.num_devices = 1
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c
