"""Flow Mismatching (the paper's method, Section 3): the kernel is `fmjax.methods.mismatch.flow_mismatch`.

K seeds x0^k per image, T interior times t_j = j / (T + 1); heatmap
H = (1/T) sum_t t^2 aggregate_k ||v(x_t^k, t) - (y - x0^k)||^2.
"""

from __future__ import annotations

from fmjax.methods import mismatch
from fmjax.methods.base import Scorer
from fmjax.methods.settings import SCORER_OPTIONS


def _heatmaps(velocity, y, labels, ids, ctx):
  x0 = ctx.draw_seeds(ids, ctx.num_seeds, y.shape[1:])
  heat, _ = mismatch.flow_mismatch(velocity, y, x0, mismatch.interior_times(ctx.num_times), labels,
                                   ctx.options["aggregator"], ctx.options["quantile"],
                                   max_forward_batch=ctx.max_forward_batch)
  return heat


def _check(options) -> list[str]:
  try:
    mismatch.validate_aggregator(options["aggregator"], options["quantile"])
  except ValueError as e:
    return [f"evaluate.flow_mismatch.aggregator: {e}"]
  return []


def _summary(s: dict) -> str:
  q = f" (q = {s['quantile']})" if s.get("aggregator") == "quantile" else ""
  return f"K = {s['num_seeds']} seeds, T = {s['num_times']} times, aggregator {s['aggregator']}{q}"


SCORER = Scorer(
    name="flow_mismatch", title="Flow Mismatching", objective="cfm",
    description="velocity mismatch along straight paths from K noise seeds to the test image, "
                "t^2-weighted over T times",
    heatmaps=_heatmaps, summary=_summary, forwards=lambda s: s["num_seeds"] * s["num_times"], uses=("num_seeds", "num_times"), check=_check,
    options=SCORER_OPTIONS["flow_mismatch"])  # aggregator (min | mean | quantile), quantile
