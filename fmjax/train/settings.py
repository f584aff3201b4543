"""The train section of the config (train.*; the objective and its options are the methods'
check, train.profile_steps core's)."""

from __future__ import annotations

from fmjax.core.settings import rule_errors
from fmjax.model.settings import model_stride, nearest_multiples


def config_errors(config) -> list[str]:
  """What is wrong with the batch, its crops, the length, the optimiser, logging and checkpoints."""
  tc = config.train
  errors = [] if tc.num_steps > 0 or tc.num_epochs > 0 else [
      "set train.num_epochs > 0 or train.num_steps > 0"]
  crop, stride = int(config.data.crop_size), model_stride(config.model)
  if crop < 0 or crop % stride:
    errors.append(f"data.crop_size {crop} must be a multiple of the model's stride {stride} "
                  f"(nearest valid: {nearest_multiples(max(crop, 1), stride)}; 0: whole images)")
  return errors + rule_errors([
      ("train.batch_size", tc.batch_size, tc.batch_size >= 1, ">= 1"),
      ("train.log_every_steps", tc.log_every_steps, tc.log_every_steps >= 1, ">= 1"),
      ("train.checkpoint_every_steps", tc.checkpoint_every_steps, tc.checkpoint_every_steps >= 1,
       ">= 1"),
      ("train.learning_rate", tc.learning_rate, tc.learning_rate > 0, "> 0"),
      ("train.weight_decay", tc.weight_decay, tc.weight_decay >= 0, ">= 0"),
      ("train.b1", tc.b1, 0 <= tc.b1 < 1, "in [0, 1)"),
      ("train.b2", tc.b2, 0 <= tc.b2 < 1, "in [0, 1)"),
      ("train.eps", tc.eps, tc.eps > 0, "> 0"),
      ("train.update_rms_clip", tc.update_rms_clip, tc.update_rms_clip >= 0, ">= 0 (0: off)"),
      ("train.grad_clip_norm", tc.grad_clip_norm, tc.grad_clip_norm >= 0, ">= 0 (0: off)"),
      ("train.keep_checkpoints", tc.keep_checkpoints, tc.keep_checkpoints >= 1, ">= 1"),
      ("train.warmup_steps", tc.warmup_steps, tc.warmup_steps >= 0, ">= 0 (0: off)"),
      ("train.log_every_seconds", tc.log_every_seconds, tc.log_every_seconds >= 0, ">= 0"),
      ("train.max_seconds", tc.max_seconds, tc.max_seconds >= 0, ">= 0 (0: no limit)"),
      ("train.ema_decay", tc.ema_decay, 0.0 <= tc.ema_decay < 1.0, "in [0, 1)")])
