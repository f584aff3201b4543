"""What a study of the paper's ablations is: one `Study` object in its own module of this package,
and what the studies share to present their rows (mean table, line plot).

A row is the evaluation of the test split under one setting: the setting's keys, its label,
the checkpoint step and scorer it was scored with, images/s, the mean metrics over the
categories and each category's.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import jax
import numpy as np

from fmjax.core import plots
from fmjax.report import page
from fmjax.report.metrics import METRIC_KEYS
from fmjax.report.writer import TABLE_COLUMNS, format_percent

# What a study setting changes: setting key -> config key.
SETTING_KEYS = {"num_seeds": "evaluate.num_seeds", "num_times": "evaluate.num_times",
                "aggregator": "evaluate.flow_mismatch.aggregator",
                "quantile": "evaluate.flow_mismatch.quantile", "seed": "evaluate.seed",
                "method": "evaluate.method"}
# The metrics a study's plot draws, when defined.
PLOTTED = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "PRO"))


def number(value) -> float:
  """None (an undefined value read back from results.json) -> NaN."""
  return float("nan") if value is None else float(value)


def percent(value) -> float:
  """A metric (fraction, None when undefined) in percent; NaN when undefined."""
  return 100 * number(value)


def kt(row: dict) -> str:
  """K*T of a row's scorer ("-" for a method without K and T, e.g. one forward pass)."""
  o = {**row.get("method_options", {}), **row}
  if "num_seeds" in o and "num_times" in o:
    return str(o["num_seeds"] * o["num_times"])
  return str(o["num_times"]) if "num_times" in o else "-"


def present_columns(metric_dicts) -> list[tuple[str, str]]:
  """The (key, column name) pairs of the report's TABLE_COLUMNS found in any of the rows' metric
  dicts (a row's "mean" or one category's)."""
  metric_dicts = list(metric_dicts)
  return [(k, name) for k, name in TABLE_COLUMNS if any(k in m for m in metric_dicts)]


def mean_table(name: str, rows: list[dict], extra_lines: list[str] = ()) -> str:
  """Markdown table of the mean metrics (percent) and images/s per setting, then `extra_lines`."""
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
    lines.append(f"| {group}{r['label']} | {kt(r)} | " + " | ".join(cells) + f" | {rate} |")
  return "\n".join(lines + list(extra_lines)) + "\n"


def plotted_metrics(rows: list[dict]) -> list[tuple[str, str]]:
  """(key, title) of the PLOTTED metrics that some row defines."""
  return [(k, n) for k, n in PLOTTED if any(np.isfinite(number(r["mean"].get(k))) for r in rows)]


def finite_points(points: list[tuple]) -> tuple[list, list]:
  """(xs, ys) of the points whose y is defined: undefined metrics are not drawn."""
  kept = [(x, y) for x, y in points if np.isfinite(y)]
  return [x for x, _ in kept], [y for _, y in kept]


def settings_plot(name: str, rows: list[dict]):
  """Each plotted metric (percent, mean over categories) per setting, or per training step
  when the rows are checkpoints."""
  by_step = all("step" in r for r in rows) and bool(rows)
  xs = [r["step"] for r in rows] if by_step else list(range(len(rows)))
  fig = plots.figure(max(5.0, 0.9 * len(rows) + 1.5), 4.0)
  ax = fig.subplots()
  for (key, title), colour in zip(plotted_metrics(rows), plots.PALETTE):
    mxs, mys = finite_points([(x, percent(r["mean"].get(key))) for x, r in zip(xs, rows)])
    ax.plot(mxs, mys, "o-", color=colour, label=title)
  if by_step:
    ax.set_xlabel("training step", fontsize=9)
  else:
    ax.set_xticks(xs, [r["label"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("setting", fontsize=9)
  ax.set_ylabel("percent (mean over categories)", fontsize=9)
  ax.set_title(f"{name} study", fontsize=10)
  ax.grid(alpha=0.3)
  plots.legend(ax, loc="best")
  return fig


def page_plots(name: str, rows: list[dict]) -> list[dict]:
  """The plot of `settings_plot` for the study's report.html (`fmjax.report.page.table_page`):
  each plotted metric per setting (hover: the setting), or per training step."""
  by_step = all("step" in r for r in rows) and bool(rows)
  xs = [r["step"] for r in rows] if by_step else list(range(len(rows)))
  labels = [(f"{r['group']}: " if "group" in r else "") + r["label"] for r in rows]
  return [{"title": f"{name} study", "x": "training step" if by_step else "setting",
           "y": "percent (mean over categories)", "log_x": False, "log_y": False,
           **({} if by_step else {"x_ticks": [[x, label] for x, label in zip(xs, labels)]}),
           "series": [page.series(title, [(x, percent(r["mean"].get(key)), label)
                                          for x, r, label in zip(xs, rows, labels)])
                      for key, title in plotted_metrics(rows)]}]


def no_errors(config) -> list[str]:
  return []


def no_summary(rows: list[dict]) -> dict:
  return {}


def the_workdir(config, workdir: str, setting: dict) -> str:
  return workdir


@dataclasses.dataclass(frozen=True)
class Study:
  """A study of the paper's ablations.

  `settings(config, workdir, dataset)` lists what to score: dicts of SETTING_KEYS values,
  "step" (a checkpoint) or "model" (the pooling study's kind, with its "checkpoint_step");
  `label(setting)` names a row; `table(name, rows)` and `plot(name, rows)` present the
  finished rows; `summary(rows)` adds entries to results.json; `check(config)` says what is
  wrong with the study's own study.* settings; `run_dir(config, workdir, setting)` is the run
  whose checkpoint a setting scores.
  """
  name: str
  description: str
  settings: Callable[..., list[dict]]
  label: Callable[[dict], str]
  check: Callable[..., list[str]] = no_errors
  table: Callable[[str, list[dict]], str] = mean_table
  plot: Callable = settings_plot
  summary: Callable[[list[dict]], dict] = no_summary
  run_dir: Callable[..., str] = the_workdir


def setting_config(config, setting: dict):
  """A copy of `config` with the setting's SETTING_KEYS (and pooling's "model") applied."""
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


def metric_summary(rows: list[dict]) -> dict:
  """{metric: {mean, std (sample, ddof=1), min, max}} of the mean metrics over the rows."""
  spread = {}
  for key in METRIC_KEYS:
    values = np.array([number(r["mean"].get(key)) for r in rows])
    if values.size and np.all(np.isfinite(values)):
      spread[key] = {"mean": float(values.mean()),
                     "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                     "min": float(values.min()), "max": float(values.max())}
  return spread
