"""Table 8: class-conditional vs pooled (one unconditional model) training. The model the
workdir lacks is trained with the same recipe in <workdir>/studies/pooling-runs/<kind>/ (beside,
not inside, the study's results folder, which is replaced whole on each write)."""

from __future__ import annotations

import os

import jax
import numpy as np

from fmjax.core import console, files, plots
from fmjax.report.writer import format_percent
from fmjax.studies.ablations.base import (Study, percent, plotted_metrics, present_columns,
                                          setting_config)

KINDS = ("conditional", "pooled")


def _own_kind(config) -> str:
  return "conditional" if config.data.class_conditional else "pooled"


def run_dir(config, workdir: str, setting: dict) -> str:
  """The workdir, or the run of the kind the workdir was not trained as."""
  kind = setting.get("model")
  if kind is None or kind == _own_kind(config):
    return workdir
  return os.path.join(workdir, "studies", "pooling-runs", kind)


def _move_old_run(workdir: str, directory: str, kind: str) -> None:
  """A run trained where earlier versions put it (studies/pooling/<kind>/) moves to `directory`."""
  old = os.path.join(workdir, "studies", "pooling", kind)
  if files.isdir(os.path.join(old, "checkpoints")) and not files.exists(directory):
    files.move(old, directory)
    console.say(f"study pooling: moved the {kind} model from {old} to {directory}")


def train_pooling_runs(config, workdir: str, dataset) -> list[dict]:
  """Trains (or resumes, or finds finished) the conditional and the pooled model; returns the
  settings [{model, checkpoint_step}] to evaluate."""
  from fmjax.train import loop  # pylint: disable=g-import-not-at-top
  settings = []
  for kind in KINDS:
    directory = run_dir(config, workdir, {"model": kind})
    if directory != workdir:
      _move_old_run(workdir, directory, kind)
    console.say(f"study pooling: the {kind} model in {directory}")
    state = loop.train(setting_config(config, {"model": kind}), directory, dataset)
    settings.append({"model": kind, "checkpoint_step": int(jax.device_get(state.step))})
  return settings


def pooling_table(name: str, rows: list[dict]) -> str:
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
    label = "**Mean**" if category == "Mean" else category
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def pooling_plot(name: str, rows: list[dict]):
  """Bars per category (and Mean) and kind of model, one panel per plotted metric."""
  metric_names = plotted_metrics(rows)
  categories = list(rows[0]["per_category"]) + ["Mean"]
  fig = plots.figure(max(4.0, 0.7 * len(categories) + 1.5) * max(len(metric_names), 1), 3.8)
  axes = fig.subplots(1, max(len(metric_names), 1), squeeze=False)[0]
  width = 0.8 / len(rows)
  for ax, (key, title) in zip(axes, metric_names):
    for j, (r, colour) in enumerate(zip(rows, plots.PALETTE)):
      values = [percent((r["mean"] if c == "Mean" else r["per_category"][c]).get(key))
                for c in categories]
      ax.bar(np.arange(len(categories)) - 0.4 + (j + 0.5) * width, values, width, color=colour,
             label=r["model"])
    ax.set_xticks(np.arange(len(categories)), categories, rotation=30, ha="right", fontsize=8)
    finite = [v for r in rows for v in [percent(r["mean"].get(key))] if np.isfinite(v)]
    if finite:
      ax.set_ylim(max(0.0, min(finite) - 15), 100.5)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("percent", fontsize=9)
  fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=len(rows),
             fontsize=8)
  return fig


STUDY = Study(
    name="pooling", description="class-conditional vs pooled training (Table 8)",
    settings=train_pooling_runs, label=lambda s: s["model"], table=pooling_table,
    plot=pooling_plot, run_dir=run_dir)
