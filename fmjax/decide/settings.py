"""The decision sections of the config: calibrate.*, export.*, evaluate.cascade.* and
evaluate.sensitivity."""

from __future__ import annotations

from fmjax import methods
from fmjax.core.settings import parse_errors, parse_list, rule_errors
from fmjax.decide.calibration import parse_rates
from fmjax.decide.normalize import sensitivity_errors

EXPORT_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
EXPORT_FORMATS = ("stablehlo", "onnx")


def export_platforms(spec) -> list[str]:
  """"cpu,cuda" -> ["cpu", "cuda"]: the platforms --mode=export lowers for (ConfigError if unknown)."""
  return parse_list(spec, "export.platforms", _platform,
                    rule=f"a comma-separated subset of {EXPORT_PLATFORMS}")


def _platform(text) -> str:
  platform = str(text).lower()
  if platform not in EXPORT_PLATFORMS:
    raise ValueError(f"unknown platform {text!r}")
  return platform


def config_errors(config) -> list[str]:
  """What is wrong with the false-alarm rates, the export platforms, the cascade and the
  sensitivity."""
  cc, method = config.evaluate.cascade, config.evaluate.method
  errors = parse_errors(lambda: parse_rates(config.calibrate.false_alarm_rates),
                        lambda: export_platforms(config.export.platforms))
  errors += rule_errors([
      ("evaluate.cascade.num_seeds", cc.num_seeds, cc.num_seeds >= 1, ">= 1"),
      ("evaluate.cascade.num_times", cc.num_times, cc.num_times >= 1, ">= 1"),
      ("evaluate.cascade.margin", cc.margin, cc.margin >= 0, ">= 0"),
      ("export.format", config.export.format, config.export.format in EXPORT_FORMATS,
       f"one of {', '.join(EXPORT_FORMATS)}")])
  errors += sensitivity_errors(config.evaluate.sensitivity)
  if cc.enabled and not errors and float(config.evaluate.sensitivity) != 0.5:
    errors.append("evaluate.cascade's band is calibrated around the unmoved threshold: use "
                  "evaluate.sensitivity=0.5 with it")
  if cc.enabled and method in methods.SCORERS and not methods.scorer(method).uses:
    errors.append(f"evaluate.cascade needs a method with K or T to make cheaper; {method} has "
                  "neither")
  return errors
