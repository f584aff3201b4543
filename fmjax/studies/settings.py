"""The studies' sections of the config: study.* (--mode=study; each study of
fmjax/studies/ablations/ checks its own) and scaling.* (--mode=scaling, fmjax/studies/scaling.py),
checked whatever the mode, like every section."""

from __future__ import annotations

from fmjax.core.errors import ConfigError
from fmjax.core.settings import parse_list, positive_int, rule_errors
from fmjax.model.optim import LR_RULES

BUDGET_UNITS = ("examples", "epochs", "steps")


def scaling_batch_sizes(spec: str) -> list[int]:
  """"32,64,128" -> [32, 64, 128] (ascending, distinct, >= 1; ConfigError otherwise)."""
  return sorted(parse_list(spec, "scaling.batch_sizes", positive_int, distinct=True,
                           rule="comma-separated distinct integers >= 1"))


def config_errors(config) -> list[str]:
  """What is wrong with study.* (each study checks its own settings, fmjax.studies.ablations)
  and scaling.*."""
  from fmjax.studies import ablations  # pylint: disable=g-import-not-at-top  (the registry)
  return ablations.config_errors(config) + scaling_errors(config.scaling)


def scaling_errors(sc) -> list[str]:
  """What is wrong with the config's `scaling` subtree."""
  errors = []
  try:
    sizes = scaling_batch_sizes(sc.batch_sizes)
  except ConfigError as e:
    errors.append(str(e))
    sizes = []
  if sc.noise_scale_groups < 2:
    errors.append(f"scaling.noise_scale_groups must be >= 2, got {sc.noise_scale_groups}")
  elif sc.noise_scale_every > 0:
    bad = [b for b in sizes if b % sc.noise_scale_groups]
    if bad:
      errors.append(f"scaling.batch_sizes {bad} are not divisible by scaling.noise_scale_groups="
                    f"{sc.noise_scale_groups}")
  return errors + rule_errors([
      ("scaling.base_batch_size", sc.base_batch_size, sc.base_batch_size >= 1, ">= 1"),
      ("scaling.lr_rule", sc.lr_rule, sc.lr_rule in LR_RULES, f"one of {LR_RULES}"),
      ("scaling.warmup_examples", sc.warmup_examples, sc.warmup_examples >= 0, ">= 0"),
      ("scaling.budget_unit", sc.budget_unit, sc.budget_unit in BUDGET_UNITS,
       "examples, epochs or steps"),
      ("scaling.budget", sc.budget, sc.budget > 0, "> 0"),
      ("scaling.val_every_examples", sc.val_every_examples, sc.val_every_examples >= 0, ">= 0"),
      ("scaling.val_times", sc.val_times, sc.val_times >= 1, ">= 1"),
      ("scaling.noise_scale_every", sc.noise_scale_every, sc.noise_scale_every >= 0,
       ">= 0 (0: off)"),
      ("scaling.target_val_loss", sc.target_val_loss, sc.target_val_loss >= 0, ">= 0 (0: auto)")])
