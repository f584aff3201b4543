"""The data section of the config (data.*): what the loaders cannot run with."""

from __future__ import annotations

from fmjax.core.settings import rule_errors
from fmjax.data import DATASETS, sets
from fmjax.data.decode import parse_resize


def config_errors(config) -> list[str]:
  """What is wrong with data.* (the image size against the U-Net is the model's check)."""
  dc = config.data
  errors = [] if dc.name in DATASETS else [f"data.name must be one of {DATASETS}, got {dc.name!r}"]
  if dc.name in sets.MODULES and sets.get(dc.name).has_validation and dc.val_fraction > 0:
    errors.append(f"data.val_fraction must be 0 for {dc.name}: it ships validation normals "
                  f"(validation/good), which calibration uses (got {dc.val_fraction})")
  try:
    kind, _ = parse_resize(dc.resize)
    if kind != "square" and (dc.name == "synthetic" or dc.tfds_dir):
      errors.append(f"data.resize={dc.resize} reads image files; "
                    f"{'synthetic data' if dc.name == 'synthetic' else 'data.tfds_dir'} "
                    "holds square images of data.image_size")
  except ValueError as e:
    errors.append(str(e))
  return errors + rule_errors([
      ("data.image_size", dc.image_size, dc.image_size >= 1, ">= 1"),
      ("data.val_fraction", dc.val_fraction, 0 <= dc.val_fraction < 1, "in [0, 1)")])
