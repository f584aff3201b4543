"""The scoring batches of the config (evaluate.batch_size, evaluate.max_forward_batch; the
method and K, T are the methods' check, evaluate.cascade.* the decisions')."""

from __future__ import annotations

from fmjax.core.settings import rule_errors


def config_errors(config) -> list[str]:
  """What is wrong with how test images are batched for scoring."""
  ec = config.evaluate
  return rule_errors([
      ("evaluate.batch_size", ec.batch_size, ec.batch_size >= 1, ">= 1"),
      ("evaluate.max_forward_batch", ec.max_forward_batch, ec.max_forward_batch >= 1, ">= 1")])
