"""Table 6 and Figure 2: K and T swept (fix K=5 vary T; fix T=5 vary K; K=T), mean metrics
and images/s against K*T."""

from __future__ import annotations

import numpy as np

from fmjax.core import plots
from fmjax.core.errors import ConfigError
from fmjax.core.settings import parse_errors, parse_list
from fmjax.studies.ablations.base import Study, number, percent, plotted_metrics

PAPER_VALUES = (2, 4, 6, 8, 10, 12, 14, 16, 18, 20)


def compute_settings(spec: str) -> list[dict]:
  """"paper" (Table 6's 30 settings) or "KxT,KxT,..." -> [{group, num_seeds, num_times}]."""
  if str(spec).strip() == "paper":
    rows = [{"group": "fix K=5", "num_seeds": 5, "num_times": t} for t in PAPER_VALUES]
    rows += [{"group": "fix T=5", "num_seeds": k, "num_times": 5} for k in PAPER_VALUES]
    rows += [{"group": "K=T", "num_seeds": v, "num_times": v} for v in PAPER_VALUES]
    return rows
  pairs = parse_list(spec, "study.compute", _k_by_t,
                     rule="'paper' or comma-separated KxT settings (e.g. '5x10,10x10')")
  return [{"group": "K=T" if k == t else "grid", "num_seeds": k, "num_times": t} for k, t in pairs]


def _k_by_t(item: str) -> tuple[int, int]:
  try:
    k, t = (int(v) for v in item.lower().split("x"))
  except ValueError:
    k = t = 0
  if k < 1 or t < 1:
    raise ConfigError(f"study.compute: {item!r} is not KxT with K, T >= 1 (e.g. 5x10); use "
                      "'paper' or a list.")
  return k, t


def compute_plot(name: str, rows: list[dict]):
  """Each metric against images/s (log axis), one line per group of settings, points
  labelled KxT (the paper's Figure 2)."""
  metric_names = plotted_metrics(rows)
  groups = list(dict.fromkeys(r["group"] for r in rows))
  fig = plots.figure(4.2 * max(len(metric_names), 1), 3.8)
  axes = fig.subplots(1, max(len(metric_names), 1), squeeze=False)[0]
  for ax, (key, title) in zip(axes, metric_names):
    for g, colour in zip(groups, plots.PALETTE * 3):
      mine = sorted((r for r in rows if r["group"] == g), key=lambda r: number(r["images_per_s"]))
      points = [(number(r["images_per_s"]), percent(r["mean"].get(key)),
                 f"{r['num_seeds']}x{r['num_times']}") for r in mine]
      points = [p for p in points if np.isfinite(p[1]) and np.isfinite(p[0]) and p[0] > 0]
      ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=colour, markersize=4,
              label=g)
      for x, y, label in points:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6,
                    color=colour)
    ax.set_xscale("log")
    ax.margins(x=0.12)  # room for the KxT labels of the end points
    ax.set_title(f"{title} vs speed", fontsize=10)
    ax.set_xlabel("images/s (log scale)", fontsize=9)
    ax.set_ylabel(f"{title} (%)", fontsize=9)
    ax.grid(alpha=0.3)
    plots.legend(ax, loc="best")
  fig.suptitle("Accuracy-speed trade-off over K paths x T times (labels KxT)", fontsize=10)
  return fig


STUDY = Study(
    name="compute", description="K and T swept as in Table 6; accuracy against images/s (Figure 2)",
    settings=lambda config, workdir, dataset: compute_settings(config.study.compute),
    label=lambda s: f"K={s['num_seeds']} T={s['num_times']}",
    check=lambda config: parse_errors(lambda: compute_settings(config.study.compute)),
    plot=compute_plot)
