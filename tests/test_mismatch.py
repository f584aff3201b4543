"""flow_mismatch against a naive per-seed, per-time loop written independently here."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.methods import mismatch


def _velocity(x, t, labels=None):
  """A nonlinear, time-dependent toy field with per-pixel structure (labels ignored)."""
  return jnp.tanh(1.3 * x[..., ::-1]) * (1.0 + t[:, None, None, None]) - 0.5 * x + 0.1


def _naive(y, x0, times, aggregator, q):
  y, x0 = np.asarray(y, np.float64), np.asarray(x0, np.float64)
  b, k, h, w, _ = x0.shape
  heat = np.zeros((b, h, w))
  for i in range(b):
    for t in np.asarray(times, np.float64):
      per_seed = []
      for s in range(k):
        xt = (1 - t) * x0[i, s] + t * y[i]
        v = np.asarray(_velocity(jnp.asarray(xt[None], jnp.float32), jnp.full((1,), t, jnp.float32)))[0]
        per_seed.append(((v - (y[i] - x0[i, s])) ** 2).sum(-1))
      z = np.stack(per_seed)
      if aggregator == "min":
        d = z.min(0)
      elif aggregator == "mean":
        d = z.mean(0)
      else:
        d = np.sort(z, axis=0)[max(1, math.ceil(q * k)) - 1]
      heat[i] += t * t * d / len(times)
  flat = heat.reshape(b, -1)
  n_top = math.ceil(0.01 * flat.shape[1])
  top = -np.sort(-flat, axis=1)[:, :n_top]
  return heat, top[:, 0] + top.mean(1)


@pytest.mark.parametrize("aggregator,q", [("min", None), ("mean", None), ("quantile", 0.1),
                                          ("quantile", 0.3), ("quantile", 0.5), ("quantile", 1.0)])
@pytest.mark.parametrize("max_forward_batch", [1024, 7, 1])
def test_flow_mismatch_equals_naive_loop(aggregator, q, max_forward_batch):
  key_y, key_x = jax.random.split(jax.random.key(0))
  b, k, t_count, h, w = 3, 5, 4, 12, 10
  y = jax.random.normal(key_y, (b, h, w, 3))
  x0 = jax.random.normal(key_x, (b, k, h, w, 3))
  times = mismatch.interior_times(t_count)
  heat, score = mismatch.flow_mismatch(_velocity, y, x0, times, jnp.zeros((b,), jnp.int32),
                                       aggregator, q, max_forward_batch=max_forward_batch)
  ref_heat, ref_score = _naive(y, x0, times, aggregator, q)
  assert heat.shape == (b, h, w) and score.shape == (b,)
  np.testing.assert_allclose(heat, ref_heat, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(score, ref_score, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("aggregator,q", [("min", None), ("quantile", 0.5)])
@pytest.mark.parametrize("max_forward_batch", [1024, 10, 7, 1])
def test_unrolled_flow_mismatch_equals_naive_loop_and_traces_no_loops(aggregator, q,
                                                                      max_forward_batch):
  """unrolled=True (the ONNX export's graph): the same heatmaps with all images in every
  velocity call and the time chunks (4 / 2 / 1 times here) unrolled: no loop primitive."""
  key_y, key_x = jax.random.split(jax.random.key(4))
  b, k, t_count, h, w = 3, 5, 4, 6, 8
  y = jax.random.normal(key_y, (b, h, w, 3))
  x0 = jax.random.normal(key_x, (b, k, h, w, 3))
  times = mismatch.interior_times(t_count)
  calls = []

  def velocity(x, t, labels):
    calls.append(x.shape[0])
    return _velocity(x, t, labels)

  f = lambda y, x0: mismatch.flow_mismatch(velocity, y, x0, times, jnp.zeros((b,), jnp.int32),
                                           aggregator, q, max_forward_batch=max_forward_batch,
                                           unrolled=True)
  jaxpr = str(jax.make_jaxpr(f)(y, x0))
  assert not any(loop in jaxpr for loop in ("scan", "while", "cond")), jaxpr
  per_call = min(t_count, max(1, max_forward_batch // k))  # times per call
  assert calls == [b * k * min(per_call, t_count - start)
                   for start in range(0, t_count, per_call)]
  heat, score = f(y, x0)
  ref_heat, ref_score = _naive(y, x0, times, aggregator, q)
  np.testing.assert_allclose(heat, ref_heat, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(score, ref_score, rtol=2e-5, atol=1e-6)


def test_flow_mismatch_is_one_jittable_function():
  y = jnp.ones((2, 8, 8, 3))
  x0 = jax.random.normal(jax.random.key(1), (2, 3, 8, 8, 3))
  lab = jnp.zeros((2,), jnp.int32)
  f = jax.jit(lambda y, x0: mismatch.flow_mismatch(_velocity, y, x0, mismatch.interior_times(3), lab,
                                                   max_forward_batch=4))
  heat, score = f(y, x0)
  ref, _ = mismatch.flow_mismatch(_velocity, y, x0, mismatch.interior_times(3), lab)
  np.testing.assert_allclose(heat, ref, rtol=1e-5)


def test_interior_times_and_score_definition():
  np.testing.assert_allclose(mismatch.interior_times(4), [0.2, 0.4, 0.6, 0.8], rtol=1e-6)
  heat = jnp.zeros((1, 20, 10)).at[0, 0, :3].set(jnp.array([5.0, 3.0, 1.0]))
  # 200 pixels -> top ceil(2) = 2 pixels: max 5 + mean(5, 3) = 9
  np.testing.assert_allclose(mismatch.image_score(heat), [9.0])


def test_perfect_field_gives_zero_mismatch():
  y = jax.random.normal(jax.random.key(2), (2, 6, 6, 3))
  x0 = jax.random.normal(jax.random.key(3), (2, 4, 6, 6, 3))
  # v(x_t, t) = (y - x_t) / (1 - t) equals y - x0 exactly on the path towards y.
  yk = jnp.repeat(y, 4, axis=0)
  oracle = lambda x, t, lab: (jnp.tile(yk, (x.shape[0] // yk.shape[0], 1, 1, 1)) - x) / (1 - t[:, None, None, None])
  heat, score = mismatch.flow_mismatch(oracle, y, x0, mismatch.interior_times(3),
                                       jnp.zeros((2,), jnp.int32), max_forward_batch=8)
  assert float(jnp.max(heat)) < 1e-8 and float(jnp.max(score)) < 1e-8


@pytest.mark.parametrize("kwargs,match", [
    (dict(aggregator="median"), "Unknown aggregator"),
    (dict(aggregator="quantile", quantile=None), "quantile in"),
    (dict(aggregator="quantile", quantile=1.5), "quantile in"),
])
def test_bad_aggregator_is_refused(kwargs, match):
  y = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match=match):
    mismatch.flow_mismatch(_velocity, y, jnp.zeros((1, 2, 4, 4, 3)), mismatch.interior_times(2),
                           jnp.zeros((1,), jnp.int32), **kwargs)


def test_k_or_t_below_one_is_refused():
  with pytest.raises(ValueError, match="T must be >= 1"):
    mismatch.interior_times(0)
  with pytest.raises(ValueError, match="K must be >= 1"):
    mismatch.score_images(_velocity, jnp.zeros((1, 4, 4, 3)), jnp.zeros((1,), jnp.int32),
                          jax.random.key(0), num_seeds=0)


def test_seeds_depend_only_on_image_id():
  key = jax.random.key(7)
  a = mismatch.draw_seeds(key, jnp.arange(4), 3, (5, 5, 3))
  b = mismatch.draw_seeds(key, jnp.arange(2, 4), 3, (5, 5, 3))
  np.testing.assert_array_equal(a[2:], b)
