"""The core section of the config (mode, mesh, profile windows) and what every section's
checks share: the one parser of comma-separated list settings and the wording of a broken rule.

Each package that owns a section of the config has a `settings.py` whose
`config_errors(config) -> list[str]` says what is wrong with that section;
`fmjax.configlib.validate` runs them all and raises one ConfigError listing every problem.
This module imports the standard library and fmjax.core.errors only.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, TypeVar

from fmjax.core.errors import ConfigError

T = TypeVar("T")

# What --mode (or the config's `mode`; "" there: train_and_evaluate) may be.
MODES = ("train", "evaluate", "train_and_evaluate", "calibrate", "export", "describe", "score",
         "study", "scaling")


def parse_list(spec, key: str, item: Callable[[Any], T] = str, *, rule: str, min_items: int = 1,
               distinct: bool = False,
               valid: Callable[[list[T]], bool] | None = None) -> list[T]:
  """The parser of every comma-separated list setting: "a, b,,c" -> [item("a"), item("b"), item("c")].

  Items are stripped and blank ones skipped; `spec` may also be a list or tuple (a value set
  from Python). Raises ConfigError "<key> must be <rule>, got <spec>" when an item does not
  parse (`item` raises ValueError or TypeError), when fewer than `min_items` are given, when
  `distinct` items repeat, or when `valid(values)` is false. An `item` that raises ConfigError
  itself names what is wrong (e.g. the one item that is not KxT).
  """
  raw = list(spec) if isinstance(spec, (list, tuple)) else str(spec).split(",")
  items = [v.strip() if isinstance(v, str) else v for v in raw]
  items = [v for v in items if v != ""]
  problem = ConfigError(f"{key} must be {rule}, got {spec!r}")
  values = []
  for text in items:
    try:
      values.append(item(text))
    except ConfigError:
      raise
    except (ValueError, TypeError):
      raise problem from None
  if (len(values) < min_items or (distinct and len(set(values)) != len(values))
      or (valid is not None and not valid(values))):
    raise problem
  return values


def positive_int(text) -> int:
  """An item parser: an integer >= 1 (ValueError otherwise)."""
  value = int(text)
  if value < 1:
    raise ValueError(f"{value} < 1")
  return value


def one_of(choices: Iterable[str]) -> Callable[[str], str]:
  """An item parser accepting the names in `choices` (ValueError for any other)."""
  choices = tuple(choices)

  def parse(text):
    if text not in choices:
      raise ValueError(f"{text!r} not in {choices}")
    return text
  return parse


def rule_errors(rules: Iterable[tuple[str, Any, bool, str]]) -> list[str]:
  """"<name> must be <rule>, got <value>" for each (name, value, ok, rule) that is not ok."""
  return [f"{name} must be {rule}, got {value!r}" for name, value, ok, rule in rules if not ok]


def parse_errors(*parses: Callable[[], Any]) -> list[str]:
  """The messages of the ConfigErrors that the calls `parses` (no arguments each) raise."""
  errors = []
  for parse in parses:
    try:
      parse()
    except ConfigError as e:
      errors.append(str(e))
  return errors


def trace_window(spec: str, key: str) -> tuple[int, int] | None:
  """"a,b" -> (a, b), the 1-based inclusive steps to trace; "" -> None; ConfigError otherwise."""
  window = parse_list(spec, key, int, rule="'first,last' with 1 <= first <= last (e.g. '10,12')",
                      min_items=0, valid=lambda w: not w or (len(w) == 2 and 1 <= w[0] <= w[1]))
  return (window[0], window[1]) if window else None


def config_errors(config) -> list[str]:
  """What is wrong with `mode`, `mesh` and the profile windows (train.profile_steps,
  evaluate.profile_batches)."""
  errors = []
  if config.mode not in ("",) + MODES:
    errors.append(f"mode must be one of {MODES} (or empty), got {config.mode!r}")
  n = config.mesh.num_devices
  if n not in (-1, None) and n < 1:
    errors.append(f"mesh.num_devices must be >= 1 (or -1: all devices), got {n!r}")
  return errors + parse_errors(
      lambda: trace_window(config.train.profile_steps, "train.profile_steps"),
      lambda: trace_window(config.evaluate.profile_batches, "evaluate.profile_batches"))
