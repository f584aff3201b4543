"""Tables 4/5: the scorers of the same model (Flow Mismatching, ReconFlow, D-Flow, RADAR, ...)."""

from __future__ import annotations

from fmjax import methods
from fmjax.core.errors import ConfigError
from fmjax.core.settings import one_of, parse_errors, parse_list
from fmjax.studies.ablations.base import Study


def method_settings(spec: str, objective: str | None = "cfm") -> list[dict]:
  """"flow_mismatch,reconflow" -> [{method}]; every method must score `objective`'s models
  (None: any objective)."""
  names = parse_list(spec, "study.methods", one_of(methods.SCORERS),
                     rule=f"comma-separated scorers among {tuple(methods.SCORERS)}")
  wrong = [m for m in names if objective is not None and methods.scorer(m).objective != objective]
  if wrong:
    raise ConfigError(f"study.methods: {wrong} do not score a model trained with "
                      f"train.objective={objective}; these do: {methods.scorers_for(objective)}.")
  return [{"method": m} for m in names]


def _check(config) -> list[str]:
  """study.methods parses; when it is the study run, its methods score train.objective's models
  (otherwise a run with another objective would be refused for the default list)."""
  objective = config.train.objective if config.study.name == "methods" else None
  return parse_errors(lambda: method_settings(config.study.methods, objective))


STUDY = Study(
    name="methods", description="the scorers of the same model (Tables 4/5)",
    settings=lambda config, workdir, dataset: method_settings(config.study.methods,
                                                              config.train.objective),
    label=lambda s: s["method"], check=_check)
