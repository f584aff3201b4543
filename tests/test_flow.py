"""The affine path and the CFM loss."""

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.model import flow


def test_interpolate_endpoints_and_midpoint():
  x0 = jnp.zeros((2, 4, 4, 3))
  x1 = jnp.ones((2, 4, 4, 3))
  xt = flow.interpolate(x0, x1, jnp.array([0.0, 0.25]))
  np.testing.assert_allclose(xt[0], 0.0)
  np.testing.assert_allclose(xt[1], 0.25)


def test_cfm_loss_of_zero_field_is_mean_squared_target():
  x1 = jax.random.normal(jax.random.key(0), (3, 4, 4, 3))
  key = jax.random.key(1)
  loss = flow.cfm_loss(lambda x, t, lab: jnp.zeros_like(x), x1, jnp.zeros((3,), jnp.int32), key)
  noise_key, _ = jax.random.split(key)
  x0 = jax.random.normal(noise_key, x1.shape)
  np.testing.assert_allclose(loss, jnp.mean((x1 - x0) ** 2), rtol=1e-6)


def test_cfm_loss_is_zero_for_the_conditional_field():
  x1 = jax.random.normal(jax.random.key(0), (3, 4, 4, 3))
  key = jax.random.key(2)
  noise_key, time_key = jax.random.split(key)
  x0 = jax.random.normal(noise_key, x1.shape)
  field = lambda x, t, lab: x1 - x0  # the exact conditional velocity
  assert float(flow.cfm_loss(field, x1, jnp.zeros((3,), jnp.int32), key)) == 0.0
