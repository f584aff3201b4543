"""The baselines' kernels against plain per-image loops written here, and exact cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fmjax.model import flow
from fmjax.methods import mismatch
from fmjax.methods import dflow, reconflow, reflect, tccm, wtflow

from test_mismatch import _velocity

LAB = jnp.zeros((8,), jnp.int32)  # class labels of fields that ignore them


def _labelled(x, t, lab):
  """A label-dependent field: the label shifts the output, so wrong labels would show."""
  return _velocity(x, t) + 0.3 * lab[:, None, None, None].astype(jnp.float32)


def _euler(field, x, t0, steps):
  dt = (1 - t0) / steps
  for i in range(steps):
    x = x + dt * np.asarray(field(jnp.asarray(x, jnp.float32), jnp.full((x.shape[0],), t0 + i * dt)))
  return x


@pytest.mark.parametrize("max_forward_batch", [1024, 5, 1])
def test_reconflow_equals_naive_loop(max_forward_batch):
  b, k, h, w, steps, t0 = 3, 4, 6, 5, 3, 0.5
  y = jax.random.normal(jax.random.key(0), (b, h, w, 3))
  x0 = jax.random.normal(jax.random.key(1), (b, k, h, w, 3))
  labels = jnp.array([0, 2, 1])
  heat = reconflow.recon_flow(_labelled, y, x0, labels, t0, steps,
                             max_forward_batch=max_forward_batch)
  score = mismatch.image_score(heat)
  ref = np.zeros((b, h, w))
  for i in range(b):
    field = lambda x, t: _labelled(x, t, jnp.full((x.shape[0],), labels[i]))
    recon = _euler(field, (1 - t0) * np.asarray(x0[i]) + t0 * np.asarray(y[i])[None], t0, steps)
    ref[i] = np.sqrt(((np.asarray(y[i])[None] - recon) ** 2).sum(-1)).min(0)
  np.testing.assert_allclose(heat, ref, rtol=1e-5, atol=1e-6)
  top = -np.sort(-ref.reshape(b, -1), axis=1)[:, :1]  # 30 pixels: the top 1% is one pixel
  np.testing.assert_allclose(score, 2 * top[:, 0], rtol=1e-5)


def test_reconflow_with_the_straight_field_reconstructs_exactly():
  y = jax.random.normal(jax.random.key(2), (2, 4, 4, 3))
  x0 = jax.random.normal(jax.random.key(3), (2, 3, 4, 4, 3))
  yk = jnp.repeat(y, 3, axis=0)  # the folded batch is image-major: [b * K]
  straight = lambda x, t, lab: (yk - x) / (1 - t[:, None, None, None])
  heat = reconflow.recon_flow(straight, y, x0, LAB[:2], 0.5, 4)
  assert float(jnp.max(heat)) < 1e-5


def test_dflow_equals_per_image_adam_loop():
  b, h, w, steps, iters, lr = 3, 5, 4, 2, 6, 0.05
  y = jax.random.normal(jax.random.key(4), (b, h, w, 3))
  x0 = jax.random.normal(jax.random.key(5), (b, h, w, 3))
  heat = dflow.d_flow(_velocity, y, x0, LAB[:b], steps, iters, lr, max_forward_batch=2)  # padded chunk
  opt = optax.adam(lr)
  for i in range(b):
    loss = lambda x: jnp.mean(jnp.square(flow.euler_integrate(_velocity, x, LAB[:1], 0.0, steps) - y[i:i + 1]))
    x, state = x0[i:i + 1], opt.init(x0[i:i + 1])
    for _ in range(iters):
      updates, state = opt.update(jax.grad(loss)(x), state, x)
      x = optax.apply_updates(x, updates)
    recon = np.asarray(flow.euler_integrate(_velocity, x, LAB[:1], 0.0, steps))[0]
    np.testing.assert_allclose(heat[i], np.sqrt(((np.asarray(y[i]) - recon) ** 2).sum(-1)),
                               rtol=1e-4, atol=1e-5)


def test_dflow_optimisation_reduces_the_residual():
  y = jax.random.normal(jax.random.key(6), (2, 6, 6, 3))
  x0 = jax.random.normal(jax.random.key(7), (2, 6, 6, 3))
  shift = lambda x, t, lab: 0.5 * jnp.tanh(x)  # invertible flow: y is reachable
  before = dflow.d_flow(shift, y, x0, LAB[:2], 4, iterations=0, learning_rate=0.05)
  after = dflow.d_flow(shift, y, x0, LAB[:2], 4, iterations=200, learning_rate=0.05)
  assert float(jnp.mean(after)) < 0.05 * float(jnp.mean(before))


def test_bad_arguments_are_refused():
  y = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="t_init in"):
    reconflow.recon_flow(_velocity, y, jnp.zeros((1, 2, 4, 4, 3)), LAB[:1], t_init=1.0, num_steps=2)
  with pytest.raises(ValueError, match="integration steps must be >= 1"):
    reconflow.recon_flow(_velocity, y, jnp.zeros((1, 2, 4, 4, 3)), LAB[:1], t_init=0.5, num_steps=0)


# ---- training-modified baselines -----------------------------------------------------


def test_random_walk_masks_are_few_connected_regions():
  from scipy import ndimage
  masks = np.asarray(reflect.random_walk_masks(jax.random.key(0), 16, 20, 24, max_regions=3,
                                                 max_steps=30))
  assert masks.shape == (16, 20, 24) and set(np.unique(masks)) <= {0.0, 1.0}
  for m in masks:
    regions = ndimage.label(m, structure=np.ones((3, 3)))[1]
    assert 1 <= regions <= 3 and 1 <= m.sum() <= 3 * 31
  assert len({int(m.sum()) for m in masks}) > 4  # sizes vary
  again = reflect.random_walk_masks(jax.random.key(0), 16, 20, 24, max_regions=3, max_steps=30)
  np.testing.assert_array_equal(masks, again)


def test_reflect_corruption_only_inside_the_mask_and_its_loss():
  y1 = jax.random.normal(jax.random.key(1), (4, 12, 12, 3))
  key = jax.random.key(2)
  y0, m = reflect.reflect_corrupt(key, y1, 3, 20)
  outside = np.asarray(m)[..., None] == 0
  np.testing.assert_array_equal(np.where(outside, y0, 0), np.where(outside, y1, 0))
  assert np.all(np.abs(np.asarray(y0 - y1))[np.broadcast_to(~outside, y1.shape)] > 0)
  k_corrupt, _ = jax.random.split(key)
  y0_same, _ = reflect.reflect_corrupt(k_corrupt, y1, 3, 20)
  exact = lambda x, t, lab: y1 - y0_same  # the rectified-flow velocity of every pair
  assert float(reflect.reflect_loss(exact, y1, LAB[:4], key, 3, 20)) == pytest.approx(0.0, abs=1e-10)


def test_tccm_loss_and_heatmap():
  x = jax.random.normal(jax.random.key(3), (3, 5, 5, 3))
  contract = lambda x, t, lab: -x
  zero = lambda x, t, lab: jnp.zeros_like(x)
  lab = LAB[:3]
  assert float(tccm.tccm_loss(contract, x, lab, jax.random.key(0))) < 1e-5
  norms = np.sqrt((np.asarray(x) ** 2).sum(axis=(1, 2, 3)))
  assert float(tccm.tccm_loss(zero, x, lab, jax.random.key(0))) == pytest.approx(norms.mean(), rel=1e-5)
  heat = tccm.tccm_heatmaps(zero, x, lab)
  np.testing.assert_allclose(heat, np.sqrt((np.asarray(x) ** 2).sum(-1)), rtol=1e-6)
  assert float(jnp.max(tccm.tccm_heatmaps(contract, x, lab))) == 0.0


def test_wtflow_standardisation_loss_and_energy():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(4), (3, 6, 6, 3))
  wt = np.asarray(wtflow.wt_standardize(x))
  lab = LAB[:3]
  np.testing.assert_allclose(wt.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
  np.testing.assert_allclose(wt.var(axis=(1, 2, 3)), 1.0, rtol=1e-4)
  key = jax.random.key(5)
  noise = jax.random.normal(jax.random.split(key)[0], x.shape)
  exact = lambda xt, t, lab: noise - wtflow.wt_standardize(x)
  assert float(wtflow.wtflow_loss(exact, x, lab, key)) == pytest.approx(0.0, abs=1e-10)
  heat = wtflow.wtflow_heatmaps(lambda xt, t, lab: jnp.zeros_like(xt), x, lab, num_steps=3)
  np.testing.assert_allclose(heat, 0.5 * (wt ** 2).sum(-1), rtol=1e-5)
  heat_reflect = reflect.reflect_heatmaps(lambda xt, t, lab: 2 * xt, x, lab)
  np.testing.assert_allclose(heat_reflect, 2 * np.sqrt((np.asarray(x) ** 2).sum(-1)), rtol=1e-5)


@pytest.mark.parametrize("name,title", [("reflect", "Reflect"), ("tccm", "TCCM"), ("wtflow", "WT-Flow")])
def test_training_modified_methods_train_and_evaluate_end_to_end(tmp_path, name, title):
  import json
  from fmjax import main as fm_main
  from fmjax import methods
  from conftest import tiny_config
  config = tiny_config(**{"train.objective": name, "evaluate.method": name, "train.num_steps": 2})
  result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  assert result.settings.method == name and 0 <= result.pooled.pixel_auroc <= 1
  assert (tmp_path / "eval" / "metrics.md").read_text().startswith(f"# {title} evaluation")
  saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())["settings"]
  assert set(saved["method_options"]) == set(methods.scorer(name).uses)  # and nothing else
  with pytest.raises(ValueError, match="needs a model trained with train.objective=cfm"):
    fm_main.run(tiny_config(**{"train.objective": name}), str(tmp_path), "evaluate")
  from fmjax.train.checkpoint import CheckpointMismatchError
  with pytest.raises(CheckpointMismatchError, match=f"objective: checkpoint has '{name}'"):
    fm_main.run(tiny_config(**{"train.num_steps": 2}), str(tmp_path), "evaluate")


def test_one_pass_scorers_chunk_with_labels():
  y = jax.random.normal(jax.random.key(8), (5, 4, 4, 3))
  labels = jnp.array([0, 1, 2, 0, 1])
  whole = np.asarray(tccm.tccm_heatmaps(_labelled, y, labels))
  chunked = np.asarray(tccm.tccm_heatmaps(_labelled, y, labels, max_forward_batch=2))
  for i in range(5):
    v = np.asarray(_labelled(y[i:i + 1], jnp.ones((1,)), labels[i:i + 1]))[0]
    np.testing.assert_allclose(chunked[i], np.sqrt(((v + np.asarray(y[i])) ** 2).sum(-1)), rtol=1e-5)
  np.testing.assert_allclose(chunked, whole, rtol=1e-6)
  wt = lambda *args, **kw: wtflow.wtflow_heatmaps(*args, num_steps=3, **kw)
  for scorer in (reflect.reflect_heatmaps, wt):
    np.testing.assert_allclose(scorer(_labelled, y, labels, max_forward_batch=2),
                               scorer(_labelled, y, labels), rtol=1e-5)
