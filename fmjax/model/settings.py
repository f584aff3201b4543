"""The model section of the config (model.*): a U-Net that can be built for data.image_size."""

from __future__ import annotations

from fmjax.core.settings import rule_errors

ATTENTION_IMPLS = ("auto", "xla", "cudnn")
GROUP_NORM_IMPLS = ("sums", "direct", "fused")  # fmjax.model.unet.GROUP_NORMS


def config_errors(config) -> list[str]:
  """What is wrong with model.*: ranges, the compute dtype, and widths and the image size that
  the U-Net's levels, group norms and attention heads must divide."""
  mc, size = config.model, config.data.image_size
  errors = rule_errors([
      ("model.channels", mc.channels, mc.channels >= 1, ">= 1"),
      ("model.num_res_blocks", mc.num_res_blocks, mc.num_res_blocks >= 1, ">= 1"),
      ("model.norm_groups", mc.norm_groups, mc.norm_groups >= 1, ">= 1"),
      ("model.head_channels", mc.head_channels, mc.head_channels >= 1, ">= 1"),
      ("model.dropout", mc.dropout, 0 <= mc.dropout < 1, "in [0, 1)")])
  levels = len(mc.channel_mult)
  if levels == 0:
    return errors + ["model.channel_mult must list at least one level's width multiplier "
                     "(e.g. (1, 2, 2)), got ()"]
  if any(not isinstance(m, int) or m < 1 for m in mc.channel_mult):
    errors.append(f"model.channel_mult must be whole numbers >= 1, got {tuple(mc.channel_mult)}")
  rates = [2 ** i for i in range(levels)]
  unused = [r for r in mc.attention_rates if r not in rates]
  if unused:
    errors.append(f"model.attention_rates {unused} are not down-sampling rates of this U-Net "
                  f"({levels} levels: {', '.join(map(str, rates))}); no level would get attention "
                  "there")
  if size % (2 ** (levels - 1)):
    errors.append(f"data.image_size {size} must be divisible by 2^{levels - 1} "
                  f"for {levels} U-Net levels")
  has_attention = any(r in mc.attention_rates for r in [2 ** i for i in range(levels)])
  for width in sorted({mc.channels * m for m in mc.channel_mult}):
    if mc.norm_groups >= 1 and width % mc.norm_groups:
      errors.append(f"channel width {width} is not divisible by model.norm_groups={mc.norm_groups}")
    if mc.head_channels >= 1 and width % mc.head_channels and has_attention:
      errors.append(f"channel width {width} is not divisible by model.head_channels={mc.head_channels}")
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top  (the rest of this module is JAX-free)
  try:
    jnp.dtype(mc.dtype)
  except TypeError:
    errors.append(f"model.dtype {mc.dtype!r} is not a dtype (use bfloat16 or float32)")
  if mc.attention_impl not in ATTENTION_IMPLS:
    errors.append(f"model.attention_impl must be auto, xla or cudnn, got {mc.attention_impl!r}")
  if mc.get("group_norm", "sums") not in GROUP_NORM_IMPLS:
    errors.append(f"model.group_norm must be sums, direct or fused, got {mc.group_norm!r}")
  return errors


def model_stride(model_config) -> int:
  """The U-Net's total down-sampling factor: 2^(levels - 1)."""
  return 2 ** (len(model_config.channel_mult) - 1)


def nearest_multiples(size: int, stride: int) -> str:
  """The multiples of `stride` either side of `size`, for error messages: "96 or 128"."""
  below, above = (size // stride) * stride, -(-size // stride) * stride
  if below == above:
    return str(size)
  return f"{above}" if below < stride else f"{below} or {above}"
