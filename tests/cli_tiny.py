"""The tests' tiny config as a config file, for runs of the command line in a subprocess:
`python -m fmjax.main --config tests/cli_tiny.py ...` (with a quarter of the normal images
held out, so that calibration has images)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny import tiny_config  # noqa: E402


def config(**overrides):
  """The tiny config with a quarter of the normal images held out, and `overrides`."""
  return tiny_config(**{"data.val_fraction": 0.25, "data.synthetic.num_train": 16, **overrides})


def get_config():
  return config()
