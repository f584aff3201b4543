"""The paper's ablations as one-command studies on a trained workdir (`--mode=study`).

  compute      K and T swept as in Table 6 (fix K=5 vary T; fix T=5 vary K; K=T): mean metrics
               and images/s against K*T (Figure 2)
  aggregators  min, mean and quantiles over the K paths (Table 7)
  checkpoints  every saved checkpoint of the run, in training order (Table 9)
  seeds        the same model scored with several scoring seeds: the spread of the metrics
  pooling      class-conditional vs pooled (one unconditional model) training (Table 8):
               trains the model the workdir lacks in <workdir>/studies/pooling/<kind>/
  methods      the scorers of the same model (fmjax.methods): Flow Mismatching, ReconFlow,
               D-Flow, RADAR on a CFM model (Tables 4/5)

Each writes <workdir>/studies/<name>/results.json, results.md and plot.png. Rows are
saved as they finish and skipped when the study is run again, so a long study resumes.
"""

from __future__ import annotations

import copy
import os

import jax
import numpy as np

from fmjax import methods
from fmjax.core import files, plots
from fmjax.core.errors import ConfigError, MissingCheckpointError
from fmjax.report import evaluate
from fmjax.report.metrics import METRIC_KEYS, mean_over_categories
from fmjax.report.writer import format_percent, json_safe, present_columns
from fmjax.score.session import ScoringSession
from fmjax.studies.settings import (STUDIES, aggregator_settings, compute_settings,
                                    listed_steps, method_settings, seed_settings)
from fmjax.train.restore import saved_steps

POOLING_KINDS = ("conditional", "pooled")
# What a study setting changes: setting key -> config key.
SETTING_KEYS = {"num_seeds": "evaluate.num_seeds", "num_times": "evaluate.num_times",
                "aggregator": "evaluate.flow_mismatch.aggregator",
                "quantile": "evaluate.flow_mismatch.quantile", "seed": "evaluate.seed",
                "method": "evaluate.method"}


def _label(setting: dict) -> str:
  if "method" in setting:
    return setting["method"]
  if "model" in setting:
    return setting["model"]
  if "seed" in setting:
    return f"seed {setting['seed']}"
  if "step" in setting:
    return f"step {setting['step']}"
  if "aggregator" in setting and setting.get("quantile") is not None:
    return f"q{setting['quantile']:g}"
  if "aggregator" in setting:
    return setting["aggregator"]
  return f"K={setting['num_seeds']} T={setting['num_times']}"


def _own_kind(config) -> str:
  return "conditional" if config.data.class_conditional else "pooled"


def _run_dir(config, workdir: str, setting: dict) -> str:
  """The workdir, or the pooling study's run of the kind the workdir was not trained as."""
  kind = setting.get("model")
  if kind is None or kind == _own_kind(config):
    return workdir
  return os.path.join(workdir, "studies", "pooling", kind)


def _setting_config(config, setting: dict):
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    for key, path in SETTING_KEYS.items():
      if key in setting:
        *parents, last = path.split(".")
        node = cfg
        for part in parents:
          node = node[part]
        node[last] = setting[key]
    if "model" in setting:
      cfg.data.class_conditional = setting["model"] == "conditional"
  return cfg


def _evaluate_setting(config, workdir, dataset, setting: dict, sessions: dict) -> dict:
  """Scores the test split under `setting`; returns the row (mean over categories + pooled).

  `sessions` holds the loaded checkpoint ((run dir, step) -> ScoringSession), one at a time,
  so settings that differ only in how they score share its compiled functions."""
  cfg = _setting_config(config, setting)
  run_dir = _run_dir(config, workdir, setting)
  step = setting.get("step", setting.get("checkpoint_step"))
  if (run_dir, step) not in sessions:
    sessions.clear()  # one checkpoint in memory at a time
    sessions[(run_dir, step)] = ScoringSession.load(cfg, run_dir, dataset.class_names, step)
  session = sessions[(run_dir, step)]
  ckpt_step = session.step
  heatmaps, scores, images_per_s = session.score_split(dataset, "test", cfg.evaluate)
  per_category = evaluate.metrics_per_category(dataset, scores, heatmaps)
  mean = mean_over_categories(per_category)
  return {**setting, "label": _label(setting), "checkpoint_step": int(ckpt_step),
          "method": cfg.evaluate.method, "method_options": methods.scorer_options(cfg.evaluate),
          "seed": cfg.evaluate.seed, "images_per_s": images_per_s, "mean": mean,
          "per_category": {n: {k: m[k] for k in METRIC_KEYS if k in m} for n, m in per_category.items()}}


def train_pooling_runs(config, workdir: str, dataset) -> list[dict]:
  """Trains (or resumes, or finds finished) the conditional and the pooled model.

  The workdir holds the kind its config says (data.class_conditional); the other
  kind is trained with the same recipe in <workdir>/studies/pooling/<kind>/.
  Returns the settings [{model, checkpoint_step}] to evaluate.
  """
  from fmjax.train import loop as train  # pylint: disable=g-import-not-at-top
  settings = []
  for kind in POOLING_KINDS:
    run_dir = _run_dir(config, workdir, {"model": kind})
    print(f"study pooling: the {kind} model in {run_dir}", flush=True)
    state = train.train(_setting_config(config, {"model": kind}), run_dir, dataset)
    settings.append({"model": kind, "checkpoint_step": int(jax.device_get(state.step))})
  return settings


def _same_setting(row: dict, setting: dict) -> bool:
  return all(row.get(k) == v for k, v in setting.items())


def run_study(config, workdir: str, dataset) -> dict:
  """Runs `config.study.name` on the trained model in `workdir`; returns {"rows": [...]}."""
  name = config.study.name
  if name not in STUDIES:  # configlib.validate says so first
    raise ConfigError(f"study.name must be one of {STUDIES}, got {name!r}")
  if name == "compute":
    settings = compute_settings(config.study.compute)
  elif name == "aggregators":
    settings = aggregator_settings(config.study.aggregators)
  elif name == "seeds":
    settings = seed_settings(config.study.seeds)
  elif name == "pooling":
    settings = train_pooling_runs(config, workdir, dataset)
  elif name == "methods":
    settings = method_settings(config.study.methods, config.train.objective)
  else:
    steps = saved_or_listed_steps(config, workdir, saved_steps(workdir))
    settings = [{"step": s} for s in steps]
  out_dir = os.path.join(workdir, "studies", name)
  files.makedirs(out_dir)
  results_path = os.path.join(out_dir, "results.json")
  rows = []
  if files.exists(results_path):
    rows = files.read_json(results_path)["rows"]
  sessions: dict = {}
  for i, setting in enumerate(settings):
    if any(_same_setting(r, setting) for r in rows):
      continue
    print(f"study {name}: {i + 1}/{len(settings)} {_label(setting)}", flush=True)
    row = _evaluate_setting(config, workdir, dataset, setting, sessions)
    rows.append(row)
    if jax.process_index() == 0:
      _write_rows(results_path, name, rows)
  rows = [next(r for r in rows if _same_setting(r, s)) for s in settings]  # in settings order
  extra = {"spread": seed_spread(rows)} if name == "seeds" else {}
  if jax.process_index() == 0:
    _write_rows(results_path, name, rows, **extra)
    files.write_text(os.path.join(out_dir, "results.md"), results_table(name, rows))
    plots.save(study_plot(name, rows), os.path.join(out_dir, "plot.png"))
    print(results_table(name, rows), flush=True)
    print(f"Study written to {out_dir}/ (results.md, results.json, plot.png).", flush=True)
  return {"study": name, "rows": rows, **extra}


def saved_or_listed_steps(config, workdir: str, saved: list[int]) -> list[int]:
  listed = listed_steps(config.study.steps)
  if not saved:
    raise MissingCheckpointError(f"No checkpoints in {workdir}: train first.")
  missing = [s for s in listed if s not in saved]
  if missing:
    raise ConfigError(f"study.steps {missing} are not saved in {workdir}; saved: {saved}. Keep more "
                     "with --config.train.keep_checkpoints while training.")
  return listed or saved


def _write_rows(path: str, name: str, rows: list[dict], **extra) -> None:
  """results.json as strict JSON (undefined metrics -> null)."""
  files.write_json(path, json_safe({"study": name, "rows": rows, **extra}))


def seed_spread(rows: list[dict]) -> dict:
  """{metric: {mean, std (sample, ddof=1), min, max}} of the mean metrics over the seed rows."""
  spread = {}
  for key in METRIC_KEYS:
    values = np.array([_number(r["mean"].get(key)) for r in rows])
    if values.size and np.all(np.isfinite(values)):
      spread[key] = {"mean": float(values.mean()),
                     "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                     "min": float(values.min()), "max": float(values.max())}
  return spread


def _number(value) -> float:
  """None (an undefined value read back from results.json) -> NaN."""
  return float("nan") if value is None else float(value)


def _percent(value) -> float:
  """A metric (fraction, None when undefined) in percent; NaN when undefined."""
  return 100 * _number(value)


def results_table(name: str, rows: list[dict]) -> str:
  """Markdown table of the mean metrics (percent) and images/s per setting."""
  if name == "pooling":
    return pooling_table(rows)
  keys = present_columns(r["mean"] for r in rows)
  lines = [f"# Study: {name}", "",
           "Mean over categories, percent; images/s on this machine "
           f"({jax.devices()[0].device_kind}).", "",
           "| Setting | K*T | " + " | ".join(n for _, n in keys) + " | images/s |",
           "|---|---:|" + "---:|" * len(keys) + "---:|"]
  for r in rows:
    cells = [format_percent(r["mean"].get(k)) for k, _ in keys]
    group = f"{r['group']}: " if "group" in r else ""
    rate = r["images_per_s"]
    rate = "-" if rate is None or not np.isfinite(rate) else f"{rate:.2f}"
    lines.append(f"| {group}{r['label']} | {_kt(r)} | " + " | ".join(cells) + f" | {rate} |")
  if name == "seeds":
    spread = seed_spread(rows)
    for stat in ("mean", "std"):
      cells = [f"{100 * spread[k][stat]:.2f}" if k in spread else "-" for k, _ in keys]
      lines.append(f"| **{stat}** over {len(rows)} seeds | | " + " | ".join(cells) + " | |")
  return "\n".join(lines) + "\n"


def _kt(row: dict) -> str:
  """K*T of a row's scorer ("-" for a method without K and T, e.g. one forward pass)."""
  o = {**row.get("method_options", {}), **row}
  if "num_seeds" in o and "num_times" in o:
    return str(o["num_seeds"] * o["num_times"])
  return str(o["num_times"]) if "num_times" in o else "-"


def pooling_table(rows: list[dict]) -> str:
  """Table 8's layout: per category (and Mean), the seven metrics of each kind of model."""
  by_kind = {r["model"]: r for r in rows}
  kinds = [k for k in ("pooled", "conditional") if k in by_kind]
  keys = present_columns(r["mean"] for r in rows)
  categories = list(next(iter(by_kind.values()))["per_category"])
  head = " | ".join(f"{kind[:4]}. {n}" for kind in kinds for _, n in keys)
  lines = ["# Study: pooling (conditional vs pooled training, Table 8)", "",
           "Percent. " + "; ".join(f"{k}: checkpoint step {by_kind[k]['checkpoint_step']}"
                                   for k in kinds) + f"; K={rows[0]['method_options'].get('num_seeds')}, "
           f"T={rows[0]['method_options'].get('num_times')}.", "",
           f"| Class | {head} |", "|---|" + "---:|" * (len(keys) * len(kinds))]
  for category in categories + ["Mean"]:
    cells = []
    for kind in kinds:
      metrics = by_kind[kind]["mean"] if category == "Mean" else by_kind[kind]["per_category"][category]
      cells += [format_percent(metrics.get(k)) for k, _ in keys]
    name = "**Mean**" if category == "Mean" else category
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _finite_points(points: list[tuple]) -> tuple[list, list]:
  """(xs, ys) of the points whose y is defined: undefined metrics are not drawn."""
  kept = [(x, y) for x, y in points if np.isfinite(y)]
  return [x for x, _ in kept], [y for _, y in kept]


def study_plot(name: str, rows: list[dict]):
  """A matplotlib figure of a study's mean metrics (percent).

  compute: each metric against images/s (log axis), one line per group of settings, points
  labelled KxT (the paper's Figure 2); pooling: bars per category and model kind; the others:
  each metric per checkpoint step or per setting.
  """
  metric_names = [("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "PRO")]
  metric_names = [(k, n) for k, n in metric_names
                  if any(np.isfinite(_number(r["mean"].get(k))) for r in rows)]
  if name == "compute":
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig = plots.figure(4.2 * max(len(metric_names), 1), 3.8)
    axes = fig.subplots(1, max(len(metric_names), 1), squeeze=False)[0]
    for ax, (key, title) in zip(axes, metric_names):
      for g, colour in zip(groups, plots.PALETTE * 3):
        mine = sorted((r for r in rows if r["group"] == g), key=lambda r: _number(r["images_per_s"]))
        points = [(_number(r["images_per_s"]), _percent(r["mean"].get(key)),
                   f"{r['num_seeds']}x{r['num_times']}") for r in mine]
        points = [p for p in points if np.isfinite(p[1]) and np.isfinite(p[0]) and p[0] > 0]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=colour, markersize=4,
                label=g)
        for x, y, kt in points:
          ax.annotate(kt, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=colour)
      ax.set_xscale("log")
      ax.margins(x=0.12)  # room for the KxT labels of the end points
      ax.set_title(f"{title} vs speed", fontsize=10)
      ax.set_xlabel("images/s (log scale)", fontsize=9)
      ax.set_ylabel(f"{title} (%)", fontsize=9)
      ax.grid(alpha=0.3)
      plots.legend(ax, loc="best")
    fig.suptitle("Accuracy-speed trade-off over K paths x T times (labels KxT)", fontsize=10)
    return fig
  if name == "pooling":
    categories = list(rows[0]["per_category"]) + ["Mean"]
    fig = plots.figure(max(4.0, 0.7 * len(categories) + 1.5) * max(len(metric_names), 1), 3.8)
    axes = fig.subplots(1, max(len(metric_names), 1), squeeze=False)[0]
    width = 0.8 / len(rows)
    for ax, (key, title) in zip(axes, metric_names):
      for j, (r, colour) in enumerate(zip(rows, plots.PALETTE)):
        values = [_percent((r["mean"] if c == "Mean" else r["per_category"][c]).get(key))
                  for c in categories]
        ax.bar(np.arange(len(categories)) - 0.4 + (j + 0.5) * width, values, width, color=colour,
               label=r["model"])
      ax.set_xticks(np.arange(len(categories)), categories, rotation=30, ha="right", fontsize=8)
      finite = [v for r in rows for v in [_percent(r["mean"].get(key))] if np.isfinite(v)]
      if finite:
        ax.set_ylim(max(0.0, min(finite) - 15), 100.5)
      ax.set_title(title, fontsize=10)
      ax.set_ylabel("percent", fontsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=len(rows),
               fontsize=8)
    return fig
  xs = [r["step"] for r in rows] if name == "checkpoints" else list(range(len(rows)))
  fig = plots.figure(max(5.0, 0.9 * len(rows) + 1.5), 4.0)
  ax = fig.subplots()
  for (key, title), colour in zip(metric_names, plots.PALETTE):
    mxs, mys = _finite_points([(x, _percent(r["mean"].get(key))) for x, r in zip(xs, rows)])
    ax.plot(mxs, mys, "o-", color=colour, label=title)
  if name == "checkpoints":
    ax.set_xlabel("training step", fontsize=9)
  else:
    ax.set_xticks(xs, [r["label"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("setting", fontsize=9)
  ax.set_ylabel("percent (mean over categories)", fontsize=9)
  ax.set_title(f"{name} study", fontsize=10)
  ax.grid(alpha=0.3)
  plots.legend(ax, loc="best")
  return fig
