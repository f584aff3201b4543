"""Table 9: every saved checkpoint of the run (or study.steps), in training order."""

from __future__ import annotations

from fmjax.core.errors import ConfigError, MissingCheckpointError
from fmjax.core.settings import parse_errors, parse_list, positive_int
from fmjax.studies.ablations.base import Study
from fmjax.train.restore import saved_steps


def listed_steps(spec: str) -> list[int]:
  """study.steps: "200,400" -> [200, 400]; "" -> [] (every saved checkpoint)."""
  return parse_list(spec, "study.steps", positive_int, min_items=0,
                    rule="comma-separated checkpoint steps >= 1 (empty: every saved one)")


def saved_or_listed_steps(config, workdir: str, saved: list[int]) -> list[int]:
  """study.steps when all of them are saved, else every saved step."""
  listed = listed_steps(config.study.steps)
  if not saved:
    raise MissingCheckpointError(f"No checkpoints in {workdir}: train first.")
  missing = [s for s in listed if s not in saved]
  if missing:
    raise ConfigError(f"study.steps {missing} are not saved in {workdir}; saved: {saved}. Keep more "
                      "with --config.train.keep_checkpoints while training.")
  return listed or saved


STUDY = Study(
    name="checkpoints", description="every kept checkpoint of the run, in training order (Table 9)",
    settings=lambda config, workdir, dataset: [
        {"step": s} for s in saved_or_listed_steps(config, workdir, saved_steps(workdir))],
    label=lambda s: f"step {s['step']}",
    check=lambda config: parse_errors(lambda: listed_steps(config.study.steps)))
