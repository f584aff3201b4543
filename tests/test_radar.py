"""RADAR on the flow U-Net: naive per-image loop, closed forms, Isolation Forest image scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from fmjax.methods import radar

from test_methods import _labelled


def _naive(y, x0, labels, t, edges):
  """One forward per image; noise prediction x_t - t v; Sobel magnitude by scipy."""
  out = []
  for i in range(len(y)):
    xt = (1 - t) * np.asarray(x0[i]) + t * np.asarray(y[i])
    v = np.asarray(_labelled(jnp.asarray(xt[None]), jnp.full((1,), t), labels[i:i + 1]))[0]
    heat = np.sqrt(((xt - t * v - np.asarray(x0[i])) ** 2).sum(-1))
    if edges:
      heat = np.hypot(ndimage.sobel(heat, axis=0, mode="nearest"),
                      ndimage.sobel(heat, axis=1, mode="nearest"))
    out.append(heat)
  return np.stack(out)


@pytest.mark.parametrize("edges", [False, True])
@pytest.mark.parametrize("max_forward_batch", [1024, 2])
def test_radar_equals_naive_loop(edges, max_forward_batch):
  y = jax.random.normal(jax.random.key(0), (5, 7, 6, 3))
  x0 = jax.random.normal(jax.random.key(1), (5, 7, 6, 3))
  labels = jnp.array([0, 2, 1, 1, 0])
  heat = radar.radar_heatmaps(_labelled, y, x0, labels, 0.3, edges,
                              max_forward_batch=max_forward_batch)
  np.testing.assert_allclose(heat, _naive(y, x0, labels, 0.3, edges), rtol=1e-5, atol=1e-5)


def test_radar_closed_forms():
  y = jax.random.normal(jax.random.key(2), (3, 6, 6, 3))
  x0 = jax.random.normal(jax.random.key(3), (3, 6, 6, 3))
  lab = jnp.zeros((3,), jnp.int32)
  t = 0.4
  # The field that flows every point to y predicts the true noise exactly: no discrepancy.
  to_y = lambda x, tt, l: (y - x) / (1 - tt[:, None, None, None])
  assert float(jnp.max(radar.radar_heatmaps(to_y, y, x0, lab, t, False))) < 1e-5
  # The zero field predicts x_t itself: the discrepancy is t (y - x0).
  zero = lambda x, tt, l: jnp.zeros_like(x)
  expected = t * np.sqrt(((np.asarray(y) - np.asarray(x0)) ** 2).sum(-1))
  np.testing.assert_allclose(radar.radar_heatmaps(zero, y, x0, lab, t, False), expected, rtol=1e-5)
  # Sobel of a map that is linear in the column index: |gx| = 8 * slope inside, 0 for gy.
  ramp = jnp.broadcast_to(2.0 * jnp.arange(6.0), (1, 5, 6))
  sob = np.asarray(radar.sobel_magnitude(ramp))
  np.testing.assert_allclose(sob[:, :, 1:-1], 16.0, rtol=1e-6)
  with pytest.raises(ValueError, match=r"t in \(0, 1\)"):
    radar.radar_heatmaps(zero, y, x0, lab, 1.0, False)


def test_isolation_forest_ranks_a_hot_spot_above_normal_maps():
  rng = np.random.default_rng(0)
  normal = rng.uniform(0.0, 1.0, (60, 16, 16))
  test_normal = rng.uniform(0.0, 1.0, (10, 16, 16))
  anomalous = rng.uniform(0.0, 1.0, (10, 16, 16))
  anomalous[:, 4:8, 4:8] += 6.0  # a defect: a bright blob
  score = radar.isolation_forest_scores(normal, seed=0)
  s_normal, s_anomalous = score(test_normal), score(anomalous)
  assert s_anomalous.min() > s_normal.max()
  features = radar.map_features(anomalous[:1])
  flat = anomalous[0].ravel()
  top = np.sort(flat)[::-1][:3]  # ceil(1% of 256) = 3 pixels
  np.testing.assert_allclose(features[0], [flat.max(), top.mean(), flat.mean(), flat.std(),
                                           np.percentile(flat, 99), np.percentile(flat, 90)])
