"""The data section of the config (data.*): what the loaders cannot run with."""

from __future__ import annotations

from fmjax.core.settings import rule_errors
from fmjax.data import DATASETS


def config_errors(config) -> list[str]:
  """What is wrong with data.* (the image size against the U-Net is the model's check)."""
  dc = config.data
  errors = [] if dc.name in DATASETS else [f"data.name must be one of {DATASETS}, got {dc.name!r}"]
  return errors + rule_errors([
      ("data.image_size", dc.image_size, dc.image_size >= 1, ">= 1"),
      ("data.val_fraction", dc.val_fraction, 0 <= dc.val_fraction < 1, "in [0, 1)")])
