"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al., 2018, "An
Empirical Model of Large-Batch Training", Appendix A.1).

G is the true gradient and Sigma the per-example gradient covariance. A batch of B examples
is split into m groups of b = B / m (group g: rows g, g + m, g + 2m, ...; with a batch
sharded over devices every group spans every device, so the estimate does not depend on
the device count). With g_i the mean gradient of group i and G_B the batch's,
E|g_i|^2 = |G|^2 + tr(Sigma) / b and E|G_B|^2 = |G|^2 + tr(Sigma) / B, so

  |G|^2     ~ (B |G_B|^2 - b mean_i |g_i|^2) / (B - b)
  tr(Sigma) ~ (mean_i |g_i|^2 - |G_B|^2) / (1 / b - 1 / B)

are unbiased. Their ratio is not: B_simple is the ratio of their means over many
measurements. With m = the number of devices, b is the per-device batch of data
parallelism (the two batch sizes of the paper's estimator).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmjax import methods
from fmjax.core import sharding
from fmjax.data import NormStats
from fmjax.core.runlog import MetricWriter, read_metrics
from fmjax.train.hooks import LoggingHook


def group_gradient_sq_norms(loss_fn, params, batch, groups: int):
  """(mean_i |g_i|^2, |G_B|^2) as float32 scalars.

  `loss_fn(params, group_batch, i) -> scalar` is the mean loss over one group's rows
  (`group_batch` has `batch`'s structure with B / groups rows; `i` the group index, int32);
  `batch` is a pytree of arrays [B, ...] with B divisible by `groups`. Groups are computed one
  after another (memory: two gradients; unrolled on the CPU); G_B is the mean of the group
  gradients.
  """
  def split(a):  # [B, ...] -> [m, B/m, ...], group g = rows g, g + m, ...
    a = a.reshape((a.shape[0] // groups, groups) + a.shape[1:])
    return jnp.moveaxis(a, 1, 0)

  grouped = jax.tree.map(split, batch)
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

  def body(carry, i):
    total, sq = carry
    g = jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[i], grouped), i)
    g = jax.tree.map(lambda x: x.astype(jnp.float32), g)
    sq = sq + optax.tree.norm(g, squared=True)
    return (jax.tree.map(jnp.add, total, g), sq), None

  # XLA:CPU runs convolutions inside loops several times slower (4 groups of 16 images of the
  # quickstart U-Net: 5.9 s in a loop, 0.5 s unrolled), so on the CPU the loop is unrolled.
  unroll = groups if jax.default_backend() == "cpu" else 1
  (total, sq), _ = jax.lax.scan(body, (zeros, jnp.float32(0.0)), jnp.arange(groups, dtype=jnp.int32),
                                unroll=unroll)
  mean = jax.tree.map(lambda t: t / groups, total)
  return sq / groups, optax.tree.norm(mean, squared=True)


def estimate(small_sq, big_sq, b_small: float, b_big: float) -> tuple[float, float]:
  """(tr(Sigma), |G|^2): the unbiased estimates from the mean squared gradient norm at batch
  `b_small` and the squared norm at `b_big` (> b_small)."""
  small_sq, big_sq = float(small_sq), float(big_sq)
  grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
  trace_sigma = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
  return trace_sigma, grad_sq


def b_simple(trace_sigmas, grad_sqs) -> float:
  """mean tr(Sigma) / mean |G|^2 over measurements; NaN when the mean |G|^2 is not positive
  (the gradient is still lost in its noise)."""
  trace_sigmas, grad_sqs = np.asarray(trace_sigmas, np.float64), np.asarray(grad_sqs, np.float64)
  if not len(grad_sqs) or np.mean(grad_sqs) <= 0:
    return float("nan")
  return float(np.mean(trace_sigmas) / np.mean(grad_sqs))


def make_measure_fn(model, norm: NormStats, objective: str, objective_options: dict, seed: int,
                    groups: int, mesh):
  """(params, images uint8 [B,H,W,3], labels [B], step) -> (mean |g_i|^2, |G_B|^2) for the
  training objective (dropout on, as in training), jitted over the mesh. Noise and times
  come from (seed, step, group), apart from the training step's."""
  loss_of = methods.objective(objective)
  base = jax.random.fold_in(jax.random.key(seed), 0x6E6F6973)  # not the training step's keys

  def measure(params, images, labels, step):
    key = jax.random.fold_in(base, step)

    def loss_fn(p, group, i):
      x, lab = group
      loss_key, dropout_key = jax.random.split(jax.random.fold_in(key, i))
      velocity = lambda xt, t, l: model.apply({"params": p}, xt, t, l, train=True,
                                              rngs={"dropout": dropout_key})
      return loss_of.loss(velocity, norm.normalize(x), lab, loss_key, **objective_options)

    return group_gradient_sq_norms(loss_fn, params, (images, labels), groups)

  data, rep = sharding.data_sharding(mesh), sharding.replicated(mesh)
  jitted = jax.jit(measure, in_shardings=(rep, data, data, rep), out_shardings=(rep, rep))
  # The step as a replicated array: one compilation for every step, on one host or many.
  return lambda params, images, labels, step: jitted(
      params, images, labels, jax.device_put(np.int32(step), rep))


class NoiseScale(LoggingHook):
  """Measures the gradient noise scale before every `every`-th update, on that update's batch
  and parameters, and logs to <workdir>/noise_metrics.jsonl: {step, examples, trace_sigma,
  grad_sq, gradient_noise_scale} where the last is `b_simple` over the last `window`
  measurements (earlier runs' included when resumed)."""

  def __init__(self, workdir: str, measure_fn, *, batch_size: int, groups: int, every: int,
               window: int = 10):
    self._workdir, self._fn = workdir, measure_fn
    self._batch, self._groups, self.every, self._window = batch_size, groups, every, window

    self._recent: list[tuple[float, float]] = []

  def start(self, step, state):
    self.writer = MetricWriter(self._workdir, "noise", resume_from=step)
    if step:  # the window continues from the records the resumed run kept
      self._recent = [(r["trace_sigma"], r["grad_sq"]) for r in read_metrics(self._workdir, "noise")
                      if "trace_sigma" in r and "grad_sq" in r][-self._window:]

  def before_step(self, step, state, images, labels):  # before updates 1, every + 1, ...
    small_sq, big_sq = jax.device_get(self._fn(state.params, images, labels, step))
    trace_sigma, grad_sq = estimate(small_sq, big_sq, self._batch / self._groups, self._batch)
    self._recent = (self._recent + [(trace_sigma, grad_sq)])[-self._window:]
    running = b_simple(*zip(*self._recent))
    self.writer.write(step, examples=(step - 1) * self._batch, trace_sigma=trace_sigma,
                       grad_sq=grad_sq, gradient_noise_scale=running)
