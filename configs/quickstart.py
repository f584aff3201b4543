"""A small U-Net on the embedded procedural dataset: a full run in minutes on a CPU.

  python -m fmjax.main --config configs/quickstart.py --workdir runs/quickstart

The recipe is `fmjax.configlib.quickstart_config()` (the notebooks use it without this file).
"""

from fmjax import configlib


def get_config():
  return configlib.quickstart_config()
