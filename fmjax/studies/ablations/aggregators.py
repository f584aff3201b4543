"""Table 7: min, mean and quantiles over the K paths."""

from __future__ import annotations

from fmjax.core.errors import ConfigError
from fmjax.core.settings import parse_errors, parse_list
from fmjax.studies.ablations.base import Study


def aggregator_settings(spec: str) -> list[dict]:
  """"min,mean,q0.1" -> [{aggregator, quantile}]."""
  return parse_list(spec, "study.aggregators", _aggregator,
                    rule="comma-separated aggregators (e.g. 'min,mean,q0.1')")


def _aggregator(item: str) -> dict:
  if item in ("min", "mean"):
    return {"aggregator": item, "quantile": None}
  try:
    q = float(item[1:]) if item.startswith("q") else None
  except ValueError:
    q = None
  if q is None or not 0 < q <= 1:
    raise ConfigError(f"study.aggregators: {item!r} is not min, mean or q<fraction> with a "
                      "fraction in (0, 1] (e.g. q0.1).")
  return {"aggregator": "quantile", "quantile": q}


def _label(setting: dict) -> str:
  q = setting.get("quantile")
  return f"q{q:g}" if q is not None else setting["aggregator"]


STUDY = Study(
    name="aggregators", description="min, mean and quantiles over the K paths (Table 7)",
    settings=lambda config, workdir, dataset: aggregator_settings(config.study.aggregators),
    label=_label,
    check=lambda config: parse_errors(lambda: aggregator_settings(config.study.aggregators)))
