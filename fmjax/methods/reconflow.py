"""ReconFlow (inference-only baseline on a CFM model, paper Appendix C.2).

y_t = (1 - t0) x0 + t0 y from K seeds x0, Euler-integrate the flow from t0 to 1 in
T steps -> y_hat_k; heatmap = min_k ||y - y_hat_k||_2 per pixel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fmjax.model import flow
from fmjax.methods import mismatch
from fmjax.methods.base import Scorer, pixel_norm
from fmjax.methods.settings import SCORER_OPTIONS


def recon_flow(velocity_fn, y: jax.Array, x0: jax.Array, labels: jax.Array, t_init: float,
               num_steps: int, *, max_forward_batch: int = 1024) -> jax.Array:
  """ReconFlow heatmaps [B,H,W] for y [B,H,W,C], seeds x0 [B,K,H,W,C] and labels [B]."""
  if not 0.0 <= t_init < 1.0:
    raise ValueError(f"ReconFlow needs t_init in [0, 1), got {t_init}.")
  k = x0.shape[1]

  def chunk_heatmaps(yc, x0c, lc):
    start = (1.0 - t_init) * x0c + t_init * yc[:, None]  # [bc,K,H,W,C]
    flat = start.reshape((-1,) + start.shape[2:])
    y_hat = flow.euler_integrate(velocity_fn, flat, jnp.repeat(lc, k), t_init, num_steps)
    return jnp.min(pixel_norm(yc[:, None] - y_hat.reshape(start.shape)), axis=1)

  return mismatch.map_image_chunks(chunk_heatmaps, y.astype(jnp.float32), x0.astype(jnp.float32),
                                   jnp.asarray(labels, jnp.int32), chunk=max_forward_batch // k)


def _heatmaps(velocity, y, labels, ids, ctx):
  x0 = ctx.draw_seeds(ids, ctx.num_seeds, y.shape[1:])
  return recon_flow(velocity, y, x0, labels, ctx.options["t_init"], ctx.num_times,
                    max_forward_batch=ctx.max_forward_batch)


def _check(options) -> list[str]:
  t = options["t_init"]
  return [] if 0.0 <= t < 1.0 else [f"evaluate.reconflow.t_init must be in [0, 1), got {t}"]


SCORER = Scorer(
    name="reconflow", title="ReconFlow", objective="cfm",
    description="reconstruction: K noisings of the test image to t_init, T Euler steps back to "
                "t = 1, min over K of the L2 residual",
    heatmaps=_heatmaps, forwards=lambda s: s["num_seeds"] * s["num_times"], uses=("num_seeds", "num_times"), check=_check,
    summary=lambda s: (f"K = {s['num_seeds']} seeds, {s['num_times']} Euler steps from "
                       f"t = {s['t_init']}"),
    options=SCORER_OPTIONS["reconflow"])  # t_init
