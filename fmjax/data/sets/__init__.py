"""Data sets read as their authors distribute them: one module per set, registered by name.

Each module defines `SET = DataSet(...)`: its name (`data.name`), its default categories, a
description, and `samples(root, categories, image_level_only, data_config)` -> (categories,
`Sample`s) that lists every file with its split, defect type, label and mask, checking the
layout strictly.
`fmjax.data.load_dataset` decodes the samples (`sources.read_samples`). The procedural
`synthetic` set is made in memory (`fmjax.data.synthetic`) and is not listed here.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

MODULES = ("mvtec", "visa", "folder", "mpdd", "btad", "ksdd2", "kolektorsdd", "mvtec_ad2",
           "mvtec_loco", "realiad")


@dataclasses.dataclass(frozen=True)
class DataSet:
  name: str
  description: str  # its layout and split, in a line
  categories: tuple[str, ...]  # the default; () = every category found under the root
  samples: Callable  # (root, categories, image_level_only, data_config) -> (categories, samples)
  # Defect types reported apart, each with the normal test images (MVTec LOCO AD's logical
  # and structural anomalies).
  defect_groups: tuple[str, ...] = ()
  # Unlabeled test splits scored by --mode=score in the set's server format (MVTec AD 2's
  # private tests): a module with `unlabeled_splits`, `submission_files` and FOLDER; None for
  # none.
  server: object = None
  # Whether the set ships validation normals (split "val"), which calibration uses in place
  # of data.val_fraction.
  has_validation: bool = False


def registry() -> dict[str, DataSet]:
  """{name: DataSet} of every module in MODULES."""
  sets = [importlib.import_module(f"fmjax.data.sets.{m}").SET for m in MODULES]
  return {s.name: s for s in sets}


def get(name: str) -> DataSet:
  return registry()[name]
