"""The registry of scoring methods and training objectives (one module each in this package).

Everything that needs a method (the evaluator, the config, the report, the
studies, `describe`) asks `scorer(name)` / `objective(name)`; adding a method is
its own module plus its name in MODULES.
"""

from __future__ import annotations

import importlib

from fmjax.core.errors import ConfigError
from fmjax.methods.base import Objective, ScoreContext, Scorer  # noqa: F401  (re-exported)

# The registry line: each module defines SCORER, OBJECTIVE or both.
MODULES = ("cfm", "flow_mismatch", "reconflow", "dflow", "radar", "reflect", "tccm", "wtflow")

_loaded = [importlib.import_module(f"fmjax.methods.{m}") for m in MODULES]
SCORERS: dict[str, Scorer] = {m.SCORER.name: m.SCORER for m in _loaded if hasattr(m, "SCORER")}
OBJECTIVES: dict[str, Objective] = {m.OBJECTIVE.name: m.OBJECTIVE for m in _loaded
                                    if hasattr(m, "OBJECTIVE")}


def scorer(name: str) -> Scorer:
  """The scoring method `name` (evaluate.method); an unknown name lists the known ones."""
  if name not in SCORERS:
    raise ConfigError(f"Unknown evaluate.method {name!r}: use one of {', '.join(SCORERS)}.")
  return SCORERS[name]


def objective(name: str) -> Objective:
  """The training objective `name` (train.objective); an unknown name lists the known ones."""
  if name not in OBJECTIVES:
    raise ConfigError(f"Unknown train.objective {name!r}: use one of {', '.join(OBJECTIVES)}.")
  return OBJECTIVES[name]


def scorers_for(objective_name: str) -> list[str]:
  """The scoring methods that score a model trained with `objective_name`."""
  return [n for n, s in SCORERS.items() if s.objective == objective_name]


def scorer_options(eval_config, name: str | None = None) -> dict:
  """The chosen scorer's settings: the shared keys it uses (K, T) and evaluate.<name>.*."""
  s = scorer(name or eval_config.method)
  options = {k: eval_config[k] for k in s.uses}
  if s.options:
    options.update(eval_config[s.name].to_dict())
  return options


def objective_options(train_config) -> dict:
  """train.<objective>.* of the configured objective as a plain dict."""
  o = objective(train_config.objective)
  return train_config[o.name].to_dict() if o.options else {}
