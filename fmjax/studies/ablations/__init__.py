"""The paper's ablations as one-command studies on a trained workdir (`--mode=study`), and their
registry: one module per study in this package, each defining STUDY (`base.Study`).

  compute      K and T swept as in Table 6 (fix K=5 vary T; fix T=5 vary K; K=T): mean metrics
               and images/s against K*T (Figure 2)
  aggregators  min, mean and quantiles over the K paths (Table 7)
  checkpoints  every saved checkpoint of the run, in training order (Table 9)
  seeds        the same model scored with several scoring seeds: the spread of the metrics
  pooling      class-conditional vs pooled (one unconditional model) training (Table 8):
               trains the model the workdir lacks in <workdir>/studies/pooling-runs/<kind>/
  methods      the scorers of the same model (fmjax.methods): Flow Mismatching, ReconFlow,
               D-Flow, RADAR on a CFM model (Tables 4/5)

Each writes <workdir>/studies/<name>/results.json, results.md, plot.png and report.html. Rows are saved as
they finish; a rerun reuses a finished row only when its setting, checkpoint (its content's
fingerprint, not its step) and every scorer setting (method, its options with K and T, seed,
EMA) and the test split (its fingerprint) match, and scores it again
otherwise, so a long study resumes and a retrained model or another scorer is never reported
with stale rows.
"""

from __future__ import annotations

import importlib
import os

from fmjax.core import console, files, plots
from fmjax.core.errors import ConfigError, MissingCheckpointError
from fmjax.core.records import Fields, read_json_file
from fmjax.report import evaluate, page
from fmjax.report.metrics import REPORTED_KEYS, mean_over_categories
from fmjax.score.settings import aupimo_fpr
from fmjax.report.writer import json_safe
from fmjax.score.scoring import THRESHOLD_KEYS, scorer_settings
from fmjax.score.session import ScoringSession
from fmjax.studies.ablations.base import Study, page_plots, setting_config
from fmjax.train.restore import checkpoint_fingerprint, saved_steps

# The registry line: each module defines STUDY.
MODULES = ("compute", "aggregators", "checkpoints", "seeds", "pooling", "methods")

_loaded = [importlib.import_module(f"fmjax.studies.ablations.{m}") for m in MODULES]
STUDIES: dict[str, Study] = {m.STUDY.name: m.STUDY for m in _loaded}


def study(name: str) -> Study:
  """The study `name` (study.name); an unknown name lists the known ones."""
  if name not in STUDIES:
    raise ConfigError(f"study.name must be one of {tuple(STUDIES)}, got {name!r}")
  return STUDIES[name]


def config_errors(config) -> list[str]:
  """study.name, and every study's own study.* settings (checked whatever the mode)."""
  errors = []
  if config.study.name not in STUDIES:
    errors.append(f"study.name must be one of {tuple(STUDIES)}, got {config.study.name!r}")
  for s in STUDIES.values():
    errors += s.check(config)
  return errors


def _scorer_of(config, run_dir: str, setting: dict) -> dict:
  """The THRESHOLD_KEYS values a row of `setting` would be scored with now: its checkpoint
  (the setting's step, else the newest saved in `run_dir`; identified by its fingerprint) and
  the scorer settings."""
  step = setting.get("step", setting.get("checkpoint_step"))
  steps = saved_steps(run_dir)
  if not steps:
    raise MissingCheckpointError(f"No checkpoints in {run_dir}: train first.")
  step = steps[-1] if step is None else step
  settings = scorer_settings(config, step, checkpoint_fingerprint(config, run_dir, step))
  return {k: settings[k] for k in THRESHOLD_KEYS}


def _reusable(row: dict, setting: dict, scorer: dict) -> bool:
  """The finished `row` is the one `setting` would make now (same setting, checkpoint and
  scorer)."""
  return (all(row.get(k) == v for k, v in setting.items()) and
          all(row.get(k) == v for k, v in scorer.items()))


def _evaluate_setting(s: Study, config, workdir, dataset, setting: dict, sessions: dict) -> dict:
  """Scores the test split under `setting`; returns the row (mean over categories + pooled).

  `sessions` holds the loaded checkpoint ((run dir, step) -> ScoringSession), one at a time,
  so settings that differ only in how they score share its compiled functions."""
  cfg = setting_config(config, setting)
  run_dir = s.run_dir(config, workdir, setting)
  step = setting.get("step", setting.get("checkpoint_step"))
  if (run_dir, step) not in sessions:
    sessions.clear()  # one checkpoint in memory at a time
    sessions[(run_dir, step)] = ScoringSession.load(cfg, run_dir, dataset.class_names, step)
  session = sessions[(run_dir, step)]
  heatmaps, scores, images_per_s = session.score_split(dataset, "test", cfg.evaluate)
  fpr_range = aupimo_fpr(cfg.evaluate)
  per_category = evaluate.metrics_per_category(dataset, scores, heatmaps, aupimo_fpr=fpr_range)
  return {**setting, "label": s.label(setting), **session.settings(cfg.evaluate),
          "test_data": dataset.test_fingerprint(), "aupimo_fpr": list(fpr_range),
          "images_per_s": images_per_s, "mean": mean_over_categories(per_category),
          "per_category": {n: {k: m[k] for k in REPORTED_KEYS if k in m}
                           for n, m in per_category.items()}}


def _saved_rows(path: str, fix: str) -> list[dict]:
  """The rows of a study's results.json or of its partial rows file (checked: a hand-edited
  or truncated file is one CorruptFileError naming it); [] when absent."""
  if not files.exists(path):
    return []
  f = Fields(read_json_file(path, fix), path, fix)
  rows = [r.obj for r in f.list_of("rows")]
  for i, row in enumerate(f.list_of("rows")):
    if not row.has("mean") or not row.has("label"):
      row.fail("mean" if not row.has("mean") else "label", "is missing")
    row.fields("mean")
  return rows


def run_study(config, workdir: str, dataset) -> dict:
  """Runs `config.study.name` on the trained model in `workdir`; returns {"rows": [...]}.

  Rows are saved as they finish in studies/.<name>.rows.json (a rerun resumes from it); the
  results (results.json, results.md, plot.png) are written as one group at the end
  (`files.folder_group`): an interrupted study leaves the previous results whole."""
  s = study(config.study.name)
  settings = s.settings(config, workdir, dataset)
  test_data = dataset.test_fingerprint()
  scorers = [{**_scorer_of(setting_config(config, st), s.run_dir(config, workdir, st), st),
              "test_data": test_data, "aupimo_fpr": list(aupimo_fpr(config.evaluate))}
             for st in settings]
  out_dir = os.path.join(workdir, "studies", s.name)
  partial_path = os.path.join(workdir, "studies", f".{s.name}.rows.json")
  fix = f"delete it to score the study's rows again (--mode=study --config.study.name={s.name})"
  saved = (_saved_rows(partial_path, fix) +
           _saved_rows(os.path.join(out_dir, "results.json"), fix))
  sessions: dict = {}
  rows = []
  for i, (setting, scorer) in enumerate(zip(settings, scorers)):
    row = next((r for r in saved if _reusable(r, setting, scorer)), None)
    if row is None:
      console.say(f"study {s.name}: {i + 1}/{len(settings)} {s.label(setting)}")
      row = _evaluate_setting(s, config, workdir, dataset, setting, sessions)
      saved = [row] + [r for r in saved if not all(r.get(k) == v for k, v in setting.items())]
      if console.is_main_process():
        files.makedirs(os.path.dirname(partial_path))
        _write_rows(partial_path, s.name, saved)
    rows.append(row)
  extra = s.summary(rows)
  if console.is_main_process():
    with files.folder_group(out_dir) as group:
      _write_rows(os.path.join(group, "results.json"), s.name, rows, **extra)
      files.write_text(os.path.join(group, "results.md"), s.table(s.name, rows))
      plots.save(s.plot(s.name, rows), os.path.join(group, "plot.png"))
      page.write_safely(os.path.join(group, "report.html"), lambda: page.table_page(
          "study", f"Study: {s.name}", s.description, s.table(s.name, rows),
          page_plots(s.name, rows), ["results.md", "results.json", "plot.png"]))
    files.remove(partial_path)
    console.say(s.table(s.name, rows),
                f"Study written to {out_dir}/ (report.html, results.md, results.json, plot.png).")
  return {"study": s.name, "rows": rows, **extra}


def results_table(name: str, rows: list[dict]) -> str:
  """The study's markdown table of `rows`."""
  return study(name).table(name, rows)


def study_plot(name: str, rows: list[dict]):
  """The study's matplotlib figure of `rows`."""
  return study(name).plot(name, rows)


def _write_rows(path: str, name: str, rows: list[dict], **extra) -> None:
  """results.json as strict JSON (undefined metrics -> null)."""
  files.write_json(path, json_safe({"study": name, "rows": rows, **extra}))
