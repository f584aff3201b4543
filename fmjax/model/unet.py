"""The velocity U-Net v(x, t, label) of Flow Mismatching (paper Appendix C.1).

A guided-diffusion style attention U-Net on NHWC images: residual blocks with
scale-shift time conditioning, residual up/down-sampling, multi-head self-attention
with a fixed head width at selected down-sampling rates, zero-initialised output
convolutions, and a class-label embedding with an extra "null" row for pooled
(unconditional) models.

Parameters are float32; `dtype` sets the compute precision (bfloat16 on
accelerators). GroupNorm statistics and the attention softmax run in float32.

`layout` is where the channels sit inside the network: "NHWC" (training and evaluation), or
"NCHW" for the ONNX export, whose runtimes (onnxruntime, OpenVINO) convolve channels-first and
otherwise wrap every NHWC convolution in transposes. Both take and give NHWC arrays and have
the same parameters (flax `nn.Conv` / `nn.GroupNorm` names and shapes).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

zeros_init = nn.initializers.zeros


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding of times t[N] in [0, 1] (unscaled) -> [N, dim], [cos, sin]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def _channel_sums(x: jax.Array) -> jax.Array:
  """Sums over the positions of x[N,H,W,C] -> [N,C]: a reduction over the middle axis of
  [N,H*W,C], which XLA:CPU vectorises along the contiguous channels."""
  n, h, w, c = x.shape
  return jnp.sum(x.reshape(n, h * w, c), axis=1)


def _group_means(per_channel: jax.Array, groups: int, count: int) -> jax.Array:
  """[N,C] channel sums -> [N,G]: each group's mean (C/groups channels, `count` elements)."""
  n, c = per_channel.shape
  return per_channel.reshape(n, groups, c // groups).sum(-1) / count


def _to_channels(channels: int, *per_group: jax.Array) -> list[jax.Array]:
  """[N,G] arrays -> [N,1,1,C] each: every channel gets its group's value, by one product
  with the 0/1 group-membership matrix [G,C] (exact: one nonzero term per channel).

  A product rather than a broadcast: XLA:CPU does not fuse a dot into the elementwise loop
  that reads its result, so these per-channel coefficients are computed once per (image,
  channel) instead of again, with their group's index, for every element of [N,H,W,C]
  (benchmarks/README.md, "GroupNorm's coefficients")."""
  n, groups = per_group[0].shape
  membership = np.repeat(np.eye(groups, dtype=np.float32), channels // groups, axis=1)
  stacked = jnp.dot(jnp.concatenate(per_group), membership,
                    precision=jax.lax.Precision.HIGHEST)  # [k*N, C]
  return [stacked[i * n:(i + 1) * n, None, None, :] for i in range(len(per_group))]


def _group_size(shape, groups: int) -> int:
  """Elements per (image, group) of an [N,H,W,C] array: H * W * C / groups."""
  return shape[1] * shape[2] * (shape[3] // groups)


def _group_coefficients(x, groups: int, eps: float):
  """The normalisation of x[N,H,W,C] as x * inv + shift: returns (inv_g [N,G], the inverse
  standard deviation of each group; inv and shift [N,1,1,C], each channel's group's inv_g
  and -mean * inv_g)."""
  count = _group_size(x.shape, groups)
  mean = _group_means(_channel_sums(x), groups, count)
  mean_sq = _group_means(_channel_sums(x * x), groups, count)
  inv_g = jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + eps)
  inv, shift = _to_channels(x.shape[3], inv_g, -mean * inv_g)
  return inv_g, inv, shift


def _normalize_groups_fwd(x, groups, eps):
  inv_g, inv, shift = _group_coefficients(x, groups, eps)
  normed = x * inv + shift
  return normed, (normed, inv_g, inv)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _normalize_groups(x, groups: int, eps: float):
  """x[N,H,W,C] float32, each group of C/groups channels normalised over its positions and
  channels: (x - mean) / sqrt(biased variance + eps), computed as x * inv + (-mean * inv)."""
  return _normalize_groups_fwd(x, groups, eps)[0]


def _normalize_groups_bwd(groups, eps, residuals, d_normed):
  del eps
  normed, inv_g, inv = residuals
  count = _group_size(normed.shape, groups)
  mean_d = _group_means(_channel_sums(d_normed), groups, count)
  mean_d_normed = _group_means(_channel_sums(d_normed * normed), groups, count)
  offset, slope = _to_channels(normed.shape[3], inv_g * mean_d, inv_g * mean_d_normed)
  return (inv * d_normed - offset - normed * slope,)


_normalize_groups.defvjp(_normalize_groups_fwd, _normalize_groups_bwd)


def group_norm(x, scale, bias, groups: int, eps: float):
  """GroupNorm of x[N,H,W,C] (float32) with scale, bias [C]: each group of C/groups channels
  normalised over its positions and channels (biased variance), then scaled and shifted.

  The same function as flax's `nn.GroupNorm` (checked in tests/test_unet.py), with its
  statistics and the normalisation's gradient written as per-channel sums over positions:
  XLA:CPU's reductions over the position and channel axes together were most of a CPU
  training step. Only x passes through the custom gradient; scale and bias are differentiated
  by JAX (so the function also differentiates inside `shard_map`)."""
  return _normalize_groups(x, groups, eps) * scale + bias


def group_norm_direct(x, scale, bias, groups: int, eps: float):
  """`group_norm` as the textbook writes it: x[N,H,W,C] viewed as [N,H,W,G,C/G], mean and
  biased variance over all but N and G, differentiated by JAX (what flax's nn.GroupNorm
  computes). For accelerators, where XLA fuses these reductions itself
  (model.group_norm=direct); XLA:CPU runs `group_norm` faster."""
  n, h, w, c = x.shape
  xg = x.reshape(n, h, w, groups, c // groups)
  mean = jnp.mean(xg, axis=(1, 2, 4), keepdims=True)
  centred = xg - mean
  var = jnp.mean(centred * centred, axis=(1, 2, 4), keepdims=True)
  return (centred * jax.lax.rsqrt(var + eps)).reshape(x.shape) * scale + bias


def _norm_act_coefficients(x, gscale, gbias, cscale, cshift, groups, eps):
  """The coefficients of `group_norm_silu`: inv_g [N,G] and, per (image, channel) [N,1,1,C],
  the normalisation (x * inv + shift = normed), the affine-and-conditioning slope
  a = gscale * (1 + cscale), and u = x * p + q, the SiLU's input."""
  inv_g, inv, shift = _group_coefficients(x, groups, eps)
  a = gscale * (1.0 + cscale)
  b = gbias * (1.0 + cscale) + cshift
  return inv_g, inv, shift, a, inv * a, shift * a + b


def _silu_and_slope(u):
  """(silu(u), d silu / du) elementwise."""
  s = jax.nn.sigmoid(u)
  return u * s, s * (1.0 + u * (1.0 - s))


def _group_norm_silu_fwd(x, gscale, gbias, cscale, cshift, groups, eps, silu):
  inv_g, inv, shift, a, p, q = _norm_act_coefficients(x, gscale, gbias, cscale, cshift, groups,
                                                      eps)
  u = x * p + q
  y = _silu_and_slope(u)[0] if silu else u
  return y, (x, inv_g, inv, shift, a, p, q, gscale, gbias, cscale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def group_norm_silu(x, gscale, gbias, cscale, cshift, groups: int, eps: float, silu: bool):
  """silu(group_norm(x, gscale, gbias) * (1 + cscale) + cshift) (without the SiLU when
  `silu` is False) of x[N,H,W,C] float32, gscale and gbias [C], the conditioning cscale and
  cshift [N,1,1,C]: a residual block's normalisation, time conditioning and activation as one
  function with one gradient (model.group_norm=fused).

  The forward is two passes over x (the statistics, then one multiply-add and the SiLU with
  per-(image, channel) coefficients); it keeps x and [N,1,1,C] coefficients for the backward
  instead of the intermediate tensors. The backward is two passes over x and the incoming
  gradient: the sums over positions of d_u and d_u * normed per (image, channel), from which
  all five parameter gradients and the group means follow, then dx. JAX's differentiation of
  the composition makes about six passes and keeps three tensors of x's size."""
  return _group_norm_silu_fwd(x, gscale, gbias, cscale, cshift, groups, eps, silu)[0]


def _group_norm_silu_bwd(groups, eps, silu, residuals, dy):
  del eps
  x, inv_g, inv, shift, a, p, q, gscale, gbias, cscale = residuals
  d_u = dy * _silu_and_slope(x * p + q)[1] if silu else dy
  normed = x * inv + shift
  n, h, w, c = x.shape
  sum_d = _channel_sums(d_u)  # [N,C]
  sum_dn = _channel_sums(d_u * normed)  # [N,C]
  a_nc = a.reshape(n, c)
  count = _group_size(x.shape, groups)
  mean_d = _group_means(a_nc * sum_d, groups, count)  # the group means of d_normed = a * d_u
  mean_dn = _group_means(a_nc * sum_dn, groups, count)  # ... and of d_normed * normed
  offset, slope = _to_channels(c, inv_g * mean_d, inv_g * mean_dn)
  # dx = inv * d_normed - offset - normed * slope, with normed = x * inv + shift
  dx = p * d_u - x * (inv * slope) - (offset + shift * slope)
  one_plus = (1.0 + cscale).reshape(n, c)
  d_gscale = jnp.sum(one_plus * sum_dn, axis=0)
  d_gbias = jnp.sum(one_plus * sum_d, axis=0)
  d_cscale = (gscale * sum_dn + gbias * sum_d).reshape(cscale.shape)
  d_cshift = sum_d.reshape(cscale.shape)
  return dx, d_gscale, d_gbias, d_cscale, d_cshift


group_norm_silu.defvjp(_group_norm_silu_fwd, _group_norm_silu_bwd)


GROUP_NORMS = {"sums": group_norm, "direct": group_norm_direct,
               "fused": group_norm}  # "fused": group_norm_silu where a SiLU or conditioning follows


def group_norm_channels_first(x, scale, bias, groups: int, eps: float):
  """`group_norm` of x[N,C,H,W]: each channel's mean over (H,W), averaged over its group's
  C/groups channels, then the same for the square of x minus the group's mean.

  The activation is never reshaped: OpenVINO keeps its convolutions' channels-last blocked
  layout through it (reshaping to [N,groups,C/groups*H*W] cost two reorders per GroupNorm,
  0.74 s of the paper model's 5.7 s run in bf16, benchmarks/README.md)."""
  n, c = x.shape[0], x.shape[1]
  per_group = c // groups

  def group_mean(per_channel):  # [N,C] -> each channel's group mean, [N,C,1,1]
    means = jnp.mean(per_channel.reshape(n, groups, per_group), axis=-1)
    return jnp.repeat(means, per_group, axis=1)[:, :, None, None]

  centred = x - group_mean(jnp.mean(x, axis=(2, 3)))
  inverse_std = jax.lax.rsqrt(group_mean(jnp.mean(centred * centred, axis=(2, 3))) + eps)
  return centred * (inverse_std * scale[:, None, None]) + bias[:, None, None]


class _GroupNormParams(nn.Module):
  """The scale and bias of one GroupNorm, under the names flax's `nn.GroupNorm` gives them;
  `impl` names the NHWC function (GROUP_NORMS). With `conditioning` ([N,1,1,C] scale and
  shift) they multiply by (1 + scale) and add shift after the GroupNorm. With impl "fused" in
  NHWC all of it and the SiLU (`silu`) is `group_norm_silu`; otherwise `silu` is not read here
  (GroupNorm32 applies it, in its dtype). float32 in and out."""
  num_groups: int
  layout: str = "NHWC"
  impl: str = "sums"

  @nn.compact
  def __call__(self, x, conditioning=None, silu: bool = False):
    c = x.shape[_channel_axis(self.layout)]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    if self.impl == "fused" and self.layout == "NHWC" and (silu or conditioning is not None):
      cscale, cshift = conditioning if conditioning is not None else (
          jnp.zeros((x.shape[0], 1, 1, c), jnp.float32),) * 2
      return group_norm_silu(x, scale, bias, cscale, cshift, self.num_groups, 1e-5, silu)
    norm = GROUP_NORMS[self.impl] if self.layout == "NHWC" else group_norm_channels_first
    y = norm(x, scale, bias, self.num_groups, 1e-5)
    if conditioning is not None:
      y = y * (1 + conditioning[0]) + conditioning[1]
    return y


class GroupNorm32(nn.Module):
  """GroupNorm computed in float32 (eps 1e-5, as PyTorch), cast back to `dtype`; optionally
  followed by the conditioning (x * (1 + scale) + shift, in float32) and a SiLU (in `dtype`,
  after the cast; in float32 before it with model.group_norm=fused).

  Parameters as flax's `nn.GroupNorm` named "norm" (checkpoints are interchangeable)."""
  num_groups: int = 32
  dtype: jnp.dtype = jnp.float32
  layout: str = "NHWC"
  impl: str = "sums"  # a name in GROUP_NORMS (model.group_norm)

  @nn.compact
  def __call__(self, x, conditioning=None, silu: bool = False):
    params = _GroupNormParams(self.num_groups, self.layout, self.impl, name="norm")
    if self.impl == "fused" and self.layout == "NHWC":
      return params(x.astype(jnp.float32), conditioning, silu).astype(self.dtype)
    y = params(x.astype(jnp.float32), conditioning).astype(self.dtype)
    return nn.silu(y) if silu else y


LAYOUTS = ("NHWC", "NCHW")


def _channel_axis(layout: str) -> int:
  return -1 if layout == "NHWC" else 1


class ChannelsFirstConv(nn.Module):
  """A stride-1 "SAME" convolution of x[N,C,H,W] with `nn.Conv`'s parameters (kernel
  [k,k,C,features], bias [features], float32): the same function as `nn.Conv` on the NHWC
  transpose of x (checked in tests/test_unet.py)."""
  features: int
  kernel_size: int
  dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[1], self.features), jnp.float32)
    bias = self.param("bias", zeros_init, (self.features,), jnp.float32)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), (1, 1), "SAME",
        dimension_numbers=("NCHW", "HWIO", "NCHW"))
    return y + bias.astype(self.dtype)[:, None, None]


def _conv(layout: str, features: int, k: int, dtype, name: str,
          init=nn.initializers.lecun_normal()) -> nn.Module:
  """A k x k "SAME" convolution for `layout`: flax's `nn.Conv` in NHWC."""
  if layout == "NHWC":
    return nn.Conv(features, (k, k), padding="SAME", dtype=dtype, kernel_init=init, name=name)
  return ChannelsFirstConv(features, k, dtype, init, name=name)


def _downsample(x, layout: str = "NHWC"):
  """2x2 average pool, stride 2: [N,H,W,C] -> [N,H/2,W/2,C] (NCHW: [N,C,H,W] -> [N,C,H/2,W/2]).

  Channels-first it is the quarter of four strided slices (`lax.slice`: jnp's indexing of a
  symbolic batch gathers): OpenVINO runs a mean over the pairs' axes of [N,C,H/2,2,W/2,2] in
  its reference kernel (9% of a paper-model run)."""
  if layout == "NHWC":
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  rows = [jax.lax.slice_in_dim(x, i, None, stride=2, axis=2) for i in (0, 1)]
  corners = [jax.lax.slice_in_dim(r, j, None, stride=2, axis=3) for r in rows for j in (0, 1)]
  return 0.25 * (corners[0] + corners[1] + corners[2] + corners[3])


def _upsample(x, layout: str = "NHWC"):
  """Nearest-neighbour x2 of the two spatial axes: [N,H,W,C] -> [N,2H,2W,C] (or NCHW).

  Channels-first it is one product with a 0/1 matrix [W,4W] (exact): each row times it is the
  row doubled, twice, [N,C,H,4W], which is [N,C,2H,2W] as it lies in memory. Repeats become
  broadcasts into pairs, which onnxruntime and OpenVINO copy element by element in reference
  kernels (a quarter of the quickstart's exported scorer; 0.75 s of the paper model's 6.9)."""
  if layout == "NHWC":
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  n, c, h, w = x.shape
  doubled = np.repeat(np.eye(w, dtype=np.float32), 2, axis=1)
  doubling = np.concatenate([doubled, doubled], axis=1).astype(x.dtype)
  return jnp.dot(x, doubling).reshape(n, c, 2 * h, 2 * w)


class ResBlock(nn.Module):
  """Residual block with scale-shift conditioning on `emb` and optional up/down."""
  out_channels: int
  dropout: float = 0.0
  up: bool = False
  down: bool = False
  norm_groups: int = 32
  dtype: jnp.dtype = jnp.float32
  layout: str = "NHWC"
  group_norm: str = "sums"

  @nn.compact
  def __call__(self, x, emb, deterministic: bool = True):
    layout, axis = self.layout, _channel_axis(self.layout)
    conv = functools.partial(_conv, layout, dtype=self.dtype)
    h = GroupNorm32(self.norm_groups, self.dtype, layout, self.group_norm,
                    name="in_norm")(x, silu=True)
    if self.up:
      h, x = _upsample(h, layout), _upsample(x, layout)
    elif self.down:
      h, x = _downsample(h, layout), _downsample(x, layout)
    h = conv(self.out_channels, 3, name="in_conv")(h)

    scale_shift = nn.Dense(2 * self.out_channels, dtype=self.dtype, name="emb_proj")(nn.silu(emb))
    scale_shift = scale_shift[:, None, None, :] if layout == "NHWC" else scale_shift[:, :, None, None]
    scale, shift = jnp.split(scale_shift.astype(jnp.float32), 2, axis=axis)
    h = GroupNorm32(self.norm_groups, self.dtype, layout, self.group_norm,
                    name="out_norm")(h, (scale, shift), silu=True)
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h = conv(self.out_channels, 3, name="out_conv", init=zeros_init)(h)

    if x.shape[axis] != self.out_channels:
      x = conv(self.out_channels, 1, name="skip")(x)
    return x.astype(self.dtype) + h


def _attention_probs(q, k):
  """softmax over keys of q.k / sqrt(D), in float32: q[N,T,K,D], k[N,S,K,D] -> [N,K,T,S]."""
  logits = jnp.einsum("ntkd,nskd->nkts", q, k, preferred_element_type=jnp.float32)
  return jax.nn.softmax(logits * (1.0 / math.sqrt(q.shape[-1])), axis=-1)


@jax.custom_vjp
def xla_attention(q, k, v):
  """Softmax attention, q[N,T,K,D], k and v [N,S,K,D] -> [N,T,K,D] (K heads of width D):
  exactly `jax.nn.dot_product_attention` with XLA's implementation, with a hand-written
  backward. JAX's own backward sums dP * P over the S keys, and XLA:CPU fuses that
  [N,K,T,S] reduction with the dot producing dP into one YNNPACK call that ran at about
  2 GFLOP/s (the paper model's 32x32 attention: about 40% of a CPU training step). This
  one sums dO * O over the D channels instead (the same number: sum_s P dP = dO . O), so
  the only reductions left are the softmax's, recomputed from q and k as the forward does
  them. Checked against JAX's gradient of `jax.nn.dot_product_attention` in
  tests/test_unet.py."""
  return jax.nn.dot_product_attention(q, k, v)


def _xla_attention_fwd(q, k, v):
  out = jax.nn.dot_product_attention(q, k, v)
  return out, (q, k, v, out)


def _xla_attention_bwd(residuals, d_out):
  q, k, v, out = residuals
  p = _attention_probs(q, k)                                              # [N,K,T,S]
  d_out32 = d_out.astype(jnp.float32)
  d_v = jnp.einsum("nkts,ntkd->nskd", p, d_out32)
  d_p = jnp.einsum("ntkd,nskd->nkts", d_out32, v.astype(jnp.float32))
  row = jnp.sum(d_out32 * out.astype(jnp.float32), axis=-1)               # [N,T,K]
  d_logits = p * (d_p - jnp.transpose(row, (0, 2, 1))[..., None])
  d_logits = d_logits * (1.0 / math.sqrt(q.shape[-1]))
  d_q = jnp.einsum("nkts,nskd->ntkd", d_logits, k.astype(jnp.float32))
  d_k = jnp.einsum("nkts,ntkd->nskd", d_logits, q.astype(jnp.float32))
  return d_q.astype(q.dtype), d_k.astype(k.dtype), d_v.astype(v.dtype)


xla_attention.defvjp(_xla_attention_fwd, _xla_attention_bwd)


class AttentionBlock(nn.Module):
  """Multi-head self-attention over the H*W positions, fixed head width, residual.

  The "new order" QKV split: a 1x1 conv gives [q | k | v] along channels, each
  then split into heads of `head_channels`.
  """
  head_channels: int = 32
  norm_groups: int = 32
  attention_impl: str | None = None  # None (XLA) or "cudnn"
  dtype: jnp.dtype = jnp.float32
  layout: str = "NHWC"
  group_norm: str = "sums"

  @nn.compact
  def __call__(self, x):
    nhwc = self.layout == "NHWC"
    n, hgt, wid, c = x.shape if nhwc else (x.shape[0],) + x.shape[2:] + x.shape[1:2]
    heads = c // self.head_channels
    h = GroupNorm32(self.norm_groups, self.dtype, self.layout, self.group_norm, name="norm")(x)
    tokens = h.reshape(n, hgt * wid, c) if nhwc else h.reshape(n, c, hgt * wid).transpose(0, 2, 1)
    qkv = nn.Dense(3 * c, dtype=self.dtype, name="qkv")(tokens)
    q, k, v = (a.reshape(n, hgt * wid, heads, self.head_channels)
               for a in jnp.split(qkv, 3, axis=-1))
    if self.attention_impl is None:
      a = xla_attention(q, k, v)
    else:
      a = jax.nn.dot_product_attention(q, k, v, implementation=self.attention_impl)
    a = a.reshape(n, hgt * wid, c)
    out = nn.Dense(c, dtype=self.dtype, kernel_init=zeros_init, name="proj")(a)
    out = out.reshape(n, hgt, wid, c) if nhwc else out.transpose(0, 2, 1).reshape(n, c, hgt, wid)
    return x + out.astype(x.dtype)


class UNet(nn.Module):
  """Velocity field v(x, t, label): x[N,H,W,C], t[N] in [0,1], label[N] int -> [N,H,W,C].

  `num_classes` = 0 builds a model without label embedding; otherwise the
  embedding has `num_classes + 1` rows and label `num_classes` is the null label.
  `attention_rates` are down-sampling rates (1 = input resolution). `layout` (module
  docstring) changes where the channels sit inside, not the function or its parameters.
  """
  out_channels: int = 3
  model_channels: int = 64
  num_res_blocks: int = 3
  channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4)
  attention_rates: Sequence[int] = (4, 8, 16, 32)
  head_channels: int = 32
  dropout: float = 0.05
  num_classes: int = 0
  norm_groups: int = 32
  attention_impl: str | None = None
  dtype: jnp.dtype = jnp.float32
  layout: str = "NHWC"
  group_norm: str = "sums"  # a name in GROUP_NORMS: how NHWC GroupNorms compute (same function)

  @nn.compact
  def __call__(self, x, t, label=None, train: bool = False):
    if self.layout not in LAYOUTS:
      raise ValueError(f"UNet layout must be one of {LAYOUTS}; got {self.layout!r}")
    det, layout, axis = not train, self.layout, _channel_axis(self.layout)
    emb_dim = 4 * self.model_channels
    emb = timestep_embedding(t, self.model_channels)
    emb = nn.Dense(emb_dim, dtype=self.dtype, name="time_embed_0")(emb)
    emb = nn.Dense(emb_dim, dtype=self.dtype, name="time_embed_1")(nn.silu(emb))
    if self.num_classes > 0:
      if label is None:
        label = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
      emb = emb + nn.Embed(self.num_classes + 1, emb_dim, name="label_embed")(label).astype(self.dtype)

    res = lambda ch, name, **kw: ResBlock(ch, self.dropout, norm_groups=self.norm_groups,
                                          dtype=self.dtype, layout=layout,
                                          group_norm=self.group_norm, name=name, **kw)
    attn = lambda name: AttentionBlock(self.head_channels, self.norm_groups,
                                       self.attention_impl, self.dtype, layout, self.group_norm,
                                       name=name)

    if layout == "NCHW":
      x = x.transpose(0, 3, 1, 2)
    h = _conv(layout, self.model_channels, 3, self.dtype, "input_conv")(x.astype(self.dtype))
    skips = [h]
    rate = 1
    for level, mult in enumerate(self.channel_mult):
      for i in range(self.num_res_blocks):
        h = res(mult * self.model_channels, f"down_{level}_res_{i}")(h, emb, det)
        if rate in self.attention_rates:
          h = attn(f"down_{level}_attn_{i}")(h)
        skips.append(h)
      if level != len(self.channel_mult) - 1:
        h = res(h.shape[axis], f"down_{level}_downsample", down=True)(h, emb, det)
        skips.append(h)
        rate *= 2

    h = res(h.shape[axis], "mid_res_0")(h, emb, det)
    h = attn("mid_attn")(h)
    h = res(h.shape[axis], "mid_res_1")(h, emb, det)

    for level, mult in reversed(list(enumerate(self.channel_mult))):
      for i in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=axis)
        h = res(mult * self.model_channels, f"up_{level}_res_{i}")(h, emb, det)
        if rate in self.attention_rates:
          h = attn(f"up_{level}_attn_{i}")(h)
      if level:
        h = res(h.shape[axis], f"up_{level}_upsample", up=True)(h, emb, det)
        rate //= 2

    h = GroupNorm32(self.norm_groups, self.dtype, layout, self.group_norm,
                    name="out_norm")(h, silu=True)
    h = _conv(layout, self.out_channels, 3, self.dtype, "out_conv", zeros_init)(h)
    if layout == "NCHW":
      h = h.transpose(0, 2, 3, 1)
    return h.astype(jnp.float32)


def init_params(model: UNet, key: jax.Array, image_shape) -> dict:
  """Float32 parameters of `model` for images [H,W,C], from one dummy forward pass."""
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  return model.init(key, x, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))["params"]


def build_unet(model_config, num_classes: int, layout: str = "NHWC") -> UNet:
  """The U-Net for `config.model` (a ConfigDict) and a dataset with `num_classes`.

  The label embedding always has a null row; pooled models feed it for every image.
  """
  dtype = jnp.dtype(model_config.dtype)
  impl = model_config.attention_impl
  if impl == "auto":
    impl = "cudnn" if (jax.default_backend() == "gpu" and dtype in (jnp.bfloat16, jnp.float16)) else None
  elif impl == "xla":
    impl = None
  return UNet(
      out_channels=3,
      model_channels=model_config.channels,
      num_res_blocks=model_config.num_res_blocks,
      channel_mult=tuple(model_config.channel_mult),
      attention_rates=tuple(model_config.attention_rates),
      head_channels=model_config.head_channels,
      dropout=model_config.dropout,
      num_classes=num_classes,
      norm_groups=model_config.norm_groups,
      attention_impl=impl,
      dtype=dtype,
      layout=layout,
      group_norm=model_config.get("group_norm", "sums"),
  )


def count_params(params) -> int:
  """Total number of scalars in a parameter pytree (or its ShapeDtypeStructs)."""
  return int(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))
