"""StableAdamW with AMSGrad against a plain numpy implementation written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.model.optim import global_norm, per_tensor_means, stable_adamw


def _numpy_stable_adamw(params, grads_seq, lr, b1, b2, eps, wd, amsgrad, clip):
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  vmax = {k: np.zeros_like(x) for k, x in p.items()}
  for step, grads in enumerate(grads_seq, start=1):
    for k in p:
      g = grads[k].astype(np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      m_hat = m[k] / (1 - b1 ** step)
      v_hat = v[k] / (1 - b2 ** step)
      if amsgrad:
        vmax[k] = np.maximum(vmax[k], v_hat)
        v_hat = vmax[k]
      rms = np.sqrt(np.mean(g * g / np.maximum(v_hat, eps * eps)))
      factor = 1.0 / max(1.0, rms / clip)
      p[k] = p[k] - lr * factor * (m_hat / (np.sqrt(v_hat) + eps) + wd * p[k])
  return p


@pytest.mark.parametrize("amsgrad", [True, False])
def test_matches_reference(amsgrad):
  rng = np.random.default_rng(0)
  # Tensors of one shape (a, c; b, d) share the per-shape reductions: their clipping must
  # still be per tensor.
  shapes = {"a": (4, 3), "b": (5,), "c": (4, 3), "d": (5,)}
  params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  # Spiky gradients so the update-RMS clipping is active on some steps (a and b only).
  grads_seq = [{k: (rng.normal(size=v.shape) * (10.0 if s == 3 and k in "ab" else 1.0)
                    ).astype(np.float32) for k, v in params.items()} for s in range(6)]
  opt = stable_adamw(1e-2, 0.9, 0.99, 1e-6, 1e-2, amsgrad=amsgrad, update_rms_clip=1.0)
  state = opt.init(params)
  p = jax.tree.map(jnp.asarray, params)
  for grads in grads_seq:
    updates, state = opt.update(jax.tree.map(jnp.asarray, grads), state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)
  ref = _numpy_stable_adamw(params, grads_seq, 1e-2, 0.9, 0.99, 1e-6, 1e-2, amsgrad, 1.0)
  for k in params:
    np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)


def test_clipping_changes_the_update_when_gradients_spike():
  params = {"w": jnp.ones((8,))}
  opt_clip = stable_adamw(1.0, weight_decay=0.0, update_rms_clip=1.0)
  opt_free = stable_adamw(1.0, weight_decay=0.0, update_rms_clip=None)
  s1, s2 = opt_clip.init(params), opt_free.init(params)
  g = {"w": jnp.full((8,), 0.01)}
  for _ in range(3):
    _, s1 = opt_clip.update(g, s1, params)
    _, s2 = opt_free.update(g, s2, params)
  spike = {"w": jnp.full((8,), 100.0)}
  u1, s1 = opt_clip.update(spike, s1, params)
  u2, _ = opt_free.update(spike, s2, params)
  v_hat = s1[0].inner[0].nu_max["w"]  # AMSGrad's running max of the bias-corrected moment
  rms = float(jnp.sqrt(jnp.mean(spike["w"] ** 2 / v_hat)))
  assert rms > 1.5  # the spike makes the clipping bite
  np.testing.assert_allclose(u1["w"], u2["w"] / rms, rtol=1e-5)


def test_norms_and_per_tensor_means_equal_a_loop_over_the_tensors():
  """global_norm (one reduction over all tensors) and per_tensor_means (one per shape) against
  float64 numpy, tensor by tensor."""
  rng = np.random.default_rng(1)
  shapes = [(3, 3, 4, 4), (4,), (3, 3, 4, 4), (7,), (4,), (2, 5)]
  a = {f"t{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
  b = {k: rng.uniform(0.5, 2.0, size=v.shape).astype(np.float32) for k, v in a.items()}
  want = np.sqrt(sum(np.sum(np.float64(v) ** 2) for v in a.values()))
  assert float(global_norm(a)) == pytest.approx(want, rel=1e-6)
  means = per_tensor_means(lambda x, y: x * x / y, a, b)
  for (k, x), got in zip(sorted(a.items()), means):
    assert float(got) == pytest.approx(np.mean(np.float64(x) ** 2 / b[k]), rel=1e-6), k
  assert float(global_norm({})) == 0.0
