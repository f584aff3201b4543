"""The registry of scoring methods and training objectives (one module each in this package).

Everything that needs a method (the evaluator, the config, the report, the
studies, `describe`) asks `scorer(name)` / `objective(name)`; adding a method is
its own module plus its name in MODULES (and its options' defaults in `settings.py`).

The method modules (and so JAX) are imported when the registry is first used (SCORERS,
OBJECTIVES, Scorer, ... or a function below), not when the package is: the config's defaults
(`fmjax.methods.settings`) load without JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fmjax.core.errors import ConfigError

if TYPE_CHECKING:
  from fmjax.methods.base import Objective, ScoreContext, Scorer  # noqa: F401

# The registry line: each module defines SCORER, OBJECTIVE or both.
MODULES = ("cfm", "flow_mismatch", "reconflow", "dflow", "radar", "reflect", "tccm", "wtflow")
_REEXPORTED = ("Objective", "ScoreContext", "Scorer")  # from fmjax.methods.base


def _registry() -> tuple[dict[str, Scorer], dict[str, Objective]]:
  """(SCORERS, OBJECTIVES), the method modules imported on the first call."""
  global SCORERS, OBJECTIVES
  if "SCORERS" not in globals():
    loaded = [importlib.import_module(f"{__name__}.{m}") for m in MODULES]
    scorers = {m.SCORER.name: m.SCORER for m in loaded if hasattr(m, "SCORER")}
    objectives = {m.OBJECTIVE.name: m.OBJECTIVE for m in loaded if hasattr(m, "OBJECTIVE")}
    SCORERS, OBJECTIVES = scorers, objectives  # both or neither
  return SCORERS, OBJECTIVES


def __getattr__(name: str):
  """The registry (SCORERS, OBJECTIVES), base's classes and the submodules, on first use."""
  if name in ("SCORERS", "OBJECTIVES"):
    return _registry()[name == "OBJECTIVES"]
  if name in _REEXPORTED:
    return getattr(importlib.import_module(f"{__name__}.base"), name)
  if name in MODULES + ("base", "mismatch", "settings"):
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scorer(name: str) -> Scorer:
  """The scoring method `name` (evaluate.method); an unknown name lists the known ones."""
  scorers = _registry()[0]
  if name not in scorers:
    raise ConfigError(f"Unknown evaluate.method {name!r}: use one of {', '.join(scorers)}.")
  return scorers[name]


def objective(name: str) -> Objective:
  """The training objective `name` (train.objective); an unknown name lists the known ones."""
  objectives = _registry()[1]
  if name not in objectives:
    raise ConfigError(f"Unknown train.objective {name!r}: use one of {', '.join(objectives)}.")
  return objectives[name]


def scorers_for(objective_name: str) -> list[str]:
  """The scoring methods that score a model trained with `objective_name`."""
  return [n for n, s in _registry()[0].items() if s.objective == objective_name]


# evaluate.* keys that change heatmaps for every method (fmjax/score/tiling.py, maps.py).
GEOMETRY_KEYS = ("tile_size", "tile_overlap", "smoothing_sigma", "smoothing_sigma_fraction")


def scorer_options(eval_config, name: str | None = None) -> dict:
  """The chosen scorer's settings: the shared keys it uses (K, T) and evaluate.<name>.*."""
  s = scorer(name or eval_config.method)
  options = {k: eval_config[k] for k in s.uses}
  if s.options:
    options.update(eval_config[s.name].to_dict())
  # How the heatmap is made beyond the method (tiles, smoothing): recorded only when not the
  # default, so the settings of a default scorer are what they have always been.
  for key in GEOMETRY_KEYS:
    if eval_config.get(key, 0) and (key != "tile_overlap" or eval_config.get("tile_size", 0)):
      options[key] = eval_config[key]
  return options


def objective_options(train_config) -> dict:
  """train.<objective>.* of the configured objective as a plain dict."""
  o = objective(train_config.objective)
  return train_config[o.name].to_dict() if o.options else {}
