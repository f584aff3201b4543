"""The same model scored with several scoring seeds: the spread of the metrics."""

from __future__ import annotations

from fmjax.core.settings import parse_errors, parse_list
from fmjax.studies.ablations.base import Study, mean_table, metric_summary, present_columns


def seed_settings(spec: str) -> list[dict]:
  """"0,1,2" -> [{seed}]."""
  seeds = parse_list(spec, "study.seeds", int, min_items=2, distinct=True,
                     rule="at least two distinct seeds (comma-separated integers)")
  return [{"seed": s} for s in seeds]


def seeds_table(name: str, rows: list[dict]) -> str:
  """The mean table with the mean and sample standard deviation over the seeds below it."""
  keys = present_columns(r["mean"] for r in rows)
  spread = metric_summary(rows)
  lines = [f"| **{stat}** over {len(rows)} seeds | | " + " | ".join(
      f"{100 * spread[k][stat]:.2f}" if k in spread else "-" for k, _ in keys) + " | |"
      for stat in ("mean", "std")]
  return mean_table(name, rows, lines)


STUDY = Study(
    name="seeds", description="the same model scored with several scoring seeds: the spread",
    settings=lambda config, workdir, dataset: seed_settings(config.study.seeds),
    label=lambda s: f"seed {s['seed']}",
    check=lambda config: parse_errors(lambda: seed_settings(config.study.seeds)),
    table=seeds_table, summary=lambda rows: {"spread": metric_summary(rows)})
