"""D-Flow (inference-only baseline on a CFM model, paper Appendix C.2).

Optimise the initial noise x0 so that the flow's endpoint Phi(x0) (Euler, T steps
from t = 0) matches y in MSE, with Adam for `iterations` steps; heatmap =
||y - Phi(x0*)||_2 per pixel. Gradients go through the unrolled integration by
autodiff (each step rematerialised), exact where the paper's FlowGrad approximates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fmjax.model import flow
from fmjax.methods import mismatch
from fmjax.methods.base import Scorer, pixel_norm
from fmjax.methods.settings import SCORER_OPTIONS


def d_flow(velocity_fn, y: jax.Array, x0: jax.Array, labels: jax.Array, num_steps: int,
           iterations: int, learning_rate: float, *,
           max_forward_batch: int = 1024) -> jax.Array:
  """D-Flow heatmaps [B,H,W] for y [B,H,W,C] from initial noise x0 [B,H,W,C], labels [B].

  Each image's x0 is optimised on its own loss (the batch loss is a sum over images).
  """
  if iterations < 0:
    raise ValueError(f"D-Flow needs iterations >= 0, got {iterations}.")
  optimizer = optax.adam(learning_rate)

  def chunk_heatmaps(yc, x0c, lc):
    endpoint = lambda x: flow.euler_integrate(velocity_fn, x, lc, 0.0, num_steps, remat=True)

    def loss(x):  # sum over images of each image's MSE: per-image gradients
      return jnp.sum(jnp.mean(jnp.square(endpoint(x) - yc), axis=(1, 2, 3)))

    def opt_step(carry, _):
      x, state = carry
      updates, state = optimizer.update(jax.grad(loss)(x), state, x)
      return (optax.apply_updates(x, updates), state), None

    (x_opt, _), _ = jax.lax.scan(opt_step, (x0c, optimizer.init(x0c)), None, length=iterations)
    return pixel_norm(yc - endpoint(x_opt))

  return mismatch.map_image_chunks(chunk_heatmaps, y.astype(jnp.float32), x0.astype(jnp.float32),
                                   jnp.asarray(labels, jnp.int32), chunk=max_forward_batch)


def _heatmaps(velocity, y, labels, ids, ctx):
  x0 = ctx.draw_seeds(ids, 1, y.shape[1:])[:, 0]
  o = ctx.options
  return d_flow(velocity, y, x0, labels, ctx.num_times, o["iterations"], o["learning_rate"],
                max_forward_batch=ctx.max_forward_batch)


def _check(options) -> list[str]:
  if options["iterations"] < 0 or options["learning_rate"] <= 0:
    return ["evaluate.dflow.iterations must be >= 0 and evaluate.dflow.learning_rate > 0"]
  return []


SCORER = Scorer(
    name="dflow", title="D-Flow", objective="cfm",
    description="Adam on the initial noise through T unrolled Euler steps; L2 residual of the "
                "endpoint",
    heatmaps=_heatmaps, uses=("num_times",), check=_check,
    summary=lambda s: (f"{s['num_times']} Euler steps, {s['iterations']} Adam steps on the "
                       f"noise (learning rate {s['learning_rate']})"),
    # Each Adam step runs the T steps forward and back (about 3 forwards), then one last pass.
    forwards=lambda s: s["num_times"] * (3 * s["iterations"] + 1),
    options=SCORER_OPTIONS["dflow"])  # iterations, learning_rate
