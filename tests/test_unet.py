"""The velocity U-Net: exact parameter counts of the paper configs, shapes, init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax import configlib
from fmjax.data import categories_of
from fmjax.model.unet import UNet, build_unet, count_params, timestep_embedding

from conftest import tiny_config


def _param_count(model, size=128):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)))
  return count_params(shapes["params"])


@pytest.mark.parametrize("num_classes,expected", [(15, 45_289_539), (12, 45_288_771), (0, 45_285_443)])
def test_paper_model_parameter_count(num_classes, expected):
  config = configlib.base_config()
  assert _param_count(build_unet(config.model, num_classes)) == expected


def test_mvtec_config_builds_the_paper_model():
  import importlib.util, pathlib
  path = pathlib.Path(__file__).parents[1] / "configs" / "mvtec.py"
  spec = importlib.util.spec_from_file_location("mvtec_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config()
  n = len(categories_of(config.data))
  assert n == 15
  assert _param_count(build_unet(config.model, n)) == 45_289_539


def test_attention_block_count_and_widths():
  model = UNet(num_classes=15)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)),
                                             jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)))["params"]
  attn = [k for k in shapes if "attn" in k]
  assert len(attn) == 29
  assert shapes["down_2_attn_0"]["qkv"]["kernel"].shape == (128, 384)
  assert shapes["mid_attn"]["qkv"]["kernel"].shape == (256, 768)
  assert shapes["time_embed_0"]["kernel"].shape == (64, 256)
  assert shapes["label_embed"]["embedding"].shape == (16, 256)


def test_forward_shape_and_zero_init_output():
  model = UNet(model_channels=8, num_res_blocks=1, channel_mult=(1, 2), attention_rates=(2,),
               head_channels=8, norm_groups=4, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  t = jnp.array([0.2, 0.7])
  params = model.init(jax.random.key(1), x, t, jnp.array([0, 3]))["params"]
  out = model.apply({"params": params}, x, t, jnp.array([0, 3]))
  assert out.shape == (2, 16, 16, 3) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, 0.0)  # zero-initialised output convolution
  # After perturbing the output conv the labels and times change the output.
  params = jax.tree.map(lambda p: p + 0.05, params)
  a = model.apply({"params": params}, x, t, jnp.array([0, 0]))
  b = model.apply({"params": params}, x, t, jnp.array([1, 1]))
  assert float(jnp.abs(a - b).max()) > 1e-4


def test_bfloat16_compute_keeps_float32_params():
  model = UNet(model_channels=8, num_res_blocks=1, channel_mult=(1, 2), attention_rates=(2,),
               head_channels=8, norm_groups=4, num_classes=2, dtype=jnp.bfloat16)
  x = jnp.ones((1, 16, 16, 3))
  params = model.init(jax.random.key(0), x, jnp.ones((1,)), jnp.zeros((1,), jnp.int32))["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  assert model.apply({"params": params}, x, jnp.ones((1,)), jnp.zeros((1,), jnp.int32)).dtype == jnp.float32


def test_timestep_embedding_is_cos_then_sin_unscaled():
  e = timestep_embedding(jnp.array([0.0, 0.5]), 8)
  freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
  np.testing.assert_allclose(e[1], np.r_[np.cos(0.5 * freqs), np.sin(0.5 * freqs)], rtol=1e-6)
  np.testing.assert_allclose(e[0], np.r_[np.ones(4), np.zeros(4)])


@pytest.mark.parametrize("impl", ["sums", "direct"])
@pytest.mark.parametrize("shape,groups", [((3, 8, 8, 32), 8), ((2, 4, 6, 16), 4), ((2, 3, 3, 8), 8)])
def test_group_norm_and_its_gradients_equal_flax_group_norm(shape, groups, impl):
  """fmjax's GroupNorms (model.group_norm: per-channel sums with a hand-written backward, or the
  direct reductions) against flax's nn.GroupNorm differentiated by JAX: outputs and the
  gradients of x, scale and bias within 2e-5 in float32."""
  import flax.linen as nn
  from fmjax.model.unet import GROUP_NORMS, GroupNorm32
  group_norm = GROUP_NORMS[impl]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape) * 2 + 1, jnp.float32)
  scale, bias = (jnp.asarray(rng.normal(size=shape[-1]), jnp.float32) for _ in range(2))
  cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
  flax_gn = lambda x, s, b: nn.GroupNorm(num_groups=groups, epsilon=1e-5).apply(
      {"params": {"scale": s, "bias": b}}, x)
  ours = lambda x, s, b: group_norm(x, s, b, groups, 1e-5)
  np.testing.assert_allclose(ours(x, scale, bias), flax_gn(x, scale, bias), atol=2e-5)
  grads = lambda fn: jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent), argnums=(0, 1, 2))(
      x, scale, bias)
  for got, want in zip(grads(ours), grads(flax_gn)):
    np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, float(jnp.abs(want).max())))
  # The parameters keep flax's names and shapes, so checkpoints are interchangeable.
  params = GroupNorm32(groups, impl=impl).init(jax.random.key(0), x)["params"]
  assert jax.tree.map(jnp.shape, params) == {"norm": {"scale": (shape[-1],), "bias": (shape[-1],)}}
  np.testing.assert_array_equal(params["norm"]["scale"], np.ones(shape[-1]))


@pytest.mark.parametrize("impl", ["sums", "direct"])
@pytest.mark.parametrize("offset", [0.0, 16.0])
def test_group_norm_and_its_input_gradient_match_a_float64_oracle(offset, impl):
  """GroupNorm as fmjax computes it (sums: x * inv + (-mean * inv), per-channel coefficients
  from group values by a 0/1 product; direct: the centred reductions) against numpy in
  float64, on activations whose mean is 0 or 16 standard deviations: output and input gradient
  within 5e-5 of the largest value (float32 rounding of the mean's cancellation is about
  16 * 2 ** -24 * a few)."""
  from fmjax.model.unet import GROUP_NORMS
  group_norm = GROUP_NORMS[impl]
  rng = np.random.default_rng(3)
  n, h, w, c, groups, eps = 2, 5, 7, 24, 6, 1e-5
  x = rng.normal(size=(n, h, w, c)) + offset
  scale, bias, cotangent = rng.normal(size=c), rng.normal(size=c), rng.normal(size=(n, h, w, c))
  xg = x.reshape(n, h, w, groups, c // groups)
  mean = xg.mean(axis=(1, 2, 4), keepdims=True)
  inv = 1 / np.sqrt(xg.var(axis=(1, 2, 4), keepdims=True) + eps)
  normed = (xg - mean) * inv
  want = normed.reshape(x.shape) * scale + bias
  # d/dx of sum(cotangent * out): the textbook GroupNorm backward, per (image, group).
  d_normed = (cotangent * scale).reshape(xg.shape)
  want_dx = (inv * (d_normed - d_normed.mean(axis=(1, 2, 4), keepdims=True)
                    - normed * (d_normed * normed).mean(axis=(1, 2, 4), keepdims=True)))
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  ours = lambda x: group_norm(x, f32(scale), f32(bias), groups, eps)
  got, vjp = jax.vjp(ours, f32(x))
  np.testing.assert_allclose(got, want, atol=5e-5 * np.abs(want).max())
  got_dx = vjp(f32(cotangent))[0]
  np.testing.assert_allclose(got_dx, want_dx.reshape(x.shape), atol=5e-5 * np.abs(want_dx).max())


def _norm_silu_float64(x, gscale, gbias, cscale, cshift, groups, silu, eps=1e-5):
  """numpy float64: silu((GroupNorm(x) * gscale + gbias) * (1 + cscale) + cshift) (no SiLU
  when `silu` is False), the GroupNorm over each group's positions and channels."""
  n, h, w, c = x.shape
  xg = x.reshape(n, h, w, groups, c // groups)
  mean = xg.mean(axis=(1, 2, 4), keepdims=True)
  normed = ((xg - mean) / np.sqrt(xg.var(axis=(1, 2, 4), keepdims=True) + eps)).reshape(x.shape)
  u = (normed * gscale + gbias) * (1 + cscale) + cshift
  return u / (1 + np.exp(-u)) if silu else u


@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("offset", [0.0, 16.0])
def test_fused_group_norm_silu_and_its_gradients_match_a_float64_oracle(offset, silu):
  """model.group_norm=fused: GroupNorm, the time conditioning and the SiLU as one function with
  one hand-written gradient, against numpy in float64: the output, and the gradients of x,
  the GroupNorm's scale and bias and the conditioning's scale and shift by central
  differences of the float64 function (all elements); within 5e-5 of the largest value, on
  activations with means of 0 and 16 standard deviations."""
  from fmjax.model.unet import group_norm_silu
  rng = np.random.default_rng(5)
  n, h, w, c, groups = 2, 5, 7, 8, 4
  args = [rng.normal(size=(n, h, w, c)) + offset, rng.normal(1, 0.5, c), rng.normal(0, 0.5, c),
          rng.normal(0, 0.5, (n, 1, 1, c)), rng.normal(0, 0.5, (n, 1, 1, c))]
  cotangent = rng.normal(size=(n, h, w, c))
  want = _norm_silu_float64(*args, groups, silu)
  f32 = [jnp.asarray(a, jnp.float32) for a in args]
  got, vjp = jax.vjp(lambda *a: group_norm_silu(*a, groups, 1e-5, silu), *f32)
  np.testing.assert_allclose(got, want, atol=5e-5 * np.abs(want).max())
  step = 1e-6
  for i, got_grad in enumerate(vjp(jnp.asarray(cotangent, jnp.float32))):
    want_grad = np.zeros(args[i].shape)
    for j in np.ndindex(args[i].shape):
      up, down = [a.copy() for a in args], [a.copy() for a in args]
      up[i][j] += step
      down[i][j] -= step
      want_grad[j] = np.sum(cotangent * (_norm_silu_float64(*up, groups, silu)
                                         - _norm_silu_float64(*down, groups, silu))) / (2 * step)
    assert got_grad.shape == want_grad.shape
    np.testing.assert_allclose(got_grad, want_grad, atol=5e-5 * np.abs(want_grad).max(),
                               err_msg=f"gradient of argument {i}")


@pytest.mark.parametrize("impl", ["direct", "fused"])
def test_every_group_norm_gives_one_model_the_same_velocity_and_gradient(impl):
  """model.group_norm changes how the U-Net computes, not its parameters or its function:
  the same parameters give the velocity and parameter gradient of "sums" within 1e-5 relative
  (direct: the textbook reductions; fused: `group_norm_silu` in every residual block)."""
  from fmjax.model.unet import init_params
  config = tiny_config(**{"model.group_norm": "sums"})
  sums = build_unet(config.model, 3)
  config.model.group_norm = impl
  other = build_unet(config.model, 3)
  assert other.group_norm == impl and sums.group_norm == "sums"
  params = init_params(sums, jax.random.key(0), (16, 16, 3))
  assert jax.tree.map(jnp.shape, init_params(other, jax.random.key(0), (16, 16, 3))) == \
      jax.tree.map(jnp.shape, params)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
  t, label = jnp.asarray([0.3, 0.8]), jnp.asarray([0, 2])
  apply = lambda model, p: model.apply({"params": p}, x, t, label)
  want, got = apply(sums, params), apply(other, params)
  np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.abs(want).max()))
  loss = lambda model: jax.grad(lambda p: jnp.sum(apply(model, p) ** 2))(params)
  for a, b in zip(jax.tree.leaves(loss(other)), jax.tree.leaves(loss(sums))):
    np.testing.assert_allclose(a, b, atol=1e-4 * max(1.0, float(jnp.abs(b).max())))


@pytest.mark.parametrize("shape", [(2, 64, 2, 16), (3, 16, 4, 8), (1, 9, 1, 32)])
def test_attention_and_its_gradients_equal_jax_attention(shape):
  """fmjax's CPU attention (a hand-written backward) against jax.nn.dot_product_attention
  differentiated by JAX: the same output bit for bit, gradients of q, k, v within 1e-5; and a
  float64 numpy oracle of the forward."""
  from fmjax.model.unet import xla_attention
  rng = np.random.default_rng(1)
  q, k, v, cotangent = (jnp.asarray(rng.normal(size=shape) * 1.5, jnp.float32) for _ in range(4))
  np.testing.assert_array_equal(xla_attention(q, k, v), jax.nn.dot_product_attention(q, k, v))
  q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum("ntkd,nskd->nkts", q64, k64) / np.sqrt(shape[-1])
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(xla_attention(q, k, v), np.einsum("nkts,nskd->ntkd", p, v64),
                             atol=1e-5)
  grads = lambda fn: jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent), argnums=(0, 1, 2))(q, k, v)
  for got, want in zip(grads(xla_attention), grads(jax.nn.dot_product_attention)):
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, float(jnp.abs(want).max())))
  # bfloat16 compute (model.dtype=bfloat16): gradients in the inputs' dtype, near JAX's.
  bf = jnp.asarray(q, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16), jnp.asarray(v, jnp.bfloat16)
  for got, want in zip(jax.grad(lambda *a: jnp.sum(xla_attention(*a).astype(jnp.float32)),
                                argnums=(0, 1, 2))(*bf),
                       jax.grad(lambda *a: jnp.sum(jax.nn.dot_product_attention(*a).astype(
                           jnp.float32)), argnums=(0, 1, 2))(*bf)):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               atol=0.05 * max(1.0, float(jnp.abs(want.astype(jnp.float32)).max())))


def test_channels_first_layout_is_the_same_function_with_the_same_parameters():
  """layout="NCHW" (the ONNX export's) against the NHWC U-Net: the same parameter tree from the
  same key, and on perturbed parameters (so every convolution, norm and attention matters) the
  same velocities within 1e-5 of their largest; a float64 numpy oracle for one channels-first
  convolution and one GroupNorm; an unknown layout refused."""
  from fmjax.model.unet import ChannelsFirstConv, group_norm_channels_first
  kw = dict(model_channels=16, num_res_blocks=1, channel_mult=(1, 2), attention_rates=(2,),
            head_channels=8, norm_groups=4, num_classes=2, dropout=0.0)
  nhwc, nchw = UNet(**kw), UNet(**kw, layout="NCHW")
  x = jax.random.normal(jax.random.key(0), (3, 16, 12, 3))
  t, labels = jnp.array([0.1, 0.5, 0.9]), jnp.array([0, 1, 2])
  init = lambda m: m.init(jax.random.key(1), x, t, labels)["params"]
  params = init(nhwc)
  assert jax.tree.structure(init(nchw)) == jax.tree.structure(params)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                                          init(nchw), params)))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape)
                                     for p, k in zip(leaves, keys)])
  want = nhwc.apply({"params": params}, x, t, labels)
  got = nchw.apply({"params": params}, x, t, labels)
  assert got.shape == want.shape == x.shape
  assert float(jnp.abs(want).max()) > 0.1
  np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.abs(want).max()))

  rng = np.random.default_rng(3)
  image = rng.normal(size=(2, 4, 5, 6))                                  # [N,C,H,W]
  conv = ChannelsFirstConv(3, 3)
  conv_params = conv.init(jax.random.key(4), jnp.asarray(image, jnp.float32))["params"]
  kernel = np.asarray(conv_params["kernel"], np.float64)                 # [3,3,C,3]
  bias = rng.normal(size=3)
  padded = np.pad(image, ((0, 0), (0, 0), (1, 1), (1, 1)))
  oracle = np.zeros((2, 3, 5, 6))
  for i in range(5):
    for j in range(6):
      oracle[:, :, i, j] = np.einsum("ncab,abco->no", padded[:, :, i:i + 3, j:j + 3], kernel) + bias
  out = conv.apply({"params": {"kernel": conv_params["kernel"], "bias": jnp.asarray(bias, jnp.float32)}},
                   jnp.asarray(image, jnp.float32))
  np.testing.assert_allclose(out, oracle, atol=1e-5)

  scale, shift = rng.normal(size=4), rng.normal(size=4)
  groups = (image.reshape(2, 2, -1) - image.reshape(2, 2, -1).mean(-1, keepdims=True))
  groups /= np.sqrt((groups ** 2).mean(-1, keepdims=True) + 1e-5)
  oracle = groups.reshape(image.shape) * scale[:, None, None] + shift[:, None, None]
  np.testing.assert_allclose(group_norm_channels_first(
      *(jnp.asarray(a, jnp.float32) for a in (image, scale, shift)), 2, 1e-5), oracle, atol=1e-5)
  with pytest.raises(ValueError, match="layout"):
    UNet(**kw, layout="CHWN").init(jax.random.key(1), x, t, labels)
