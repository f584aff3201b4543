"""Reading the JSON records a workdir holds (calibration.json, eval/metrics.json) into typed
records, with one-line errors.

`read_json_file(path, fix)` parses a file; `Fields(obj, source, fix)` reads one JSON object
entry by entry, checking each entry's type. A file that is not JSON, or a missing or wrongly
typed entry, raises `CorruptFileError` naming the file, the entry (as a path such as
`categories["weave"]["image"]["0.01"]["threshold"]`), what is wrong with it, and `fix` (how to
write the file again). Numbers are kept as read (an int stays an int), so a record read and
written back gives the same JSON. `json_safe` turns NaN and inf into null for strict JSON.
"""

from __future__ import annotations

import json
import math

from fmjax.core import files
from fmjax.core.errors import CorruptFileError


def json_safe(obj):
  """NaN/inf -> None in nested dicts and lists (tuples become lists), so the JSON is strict."""
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def _message(source: str, problem: str, fix: str) -> str:
  return f"{source} {problem}" + (f"; {fix}" if fix else "")


def read_json_file(path: str, fix: str = ""):
  """The parsed JSON of `path`; CorruptFileError (one line, ending with `fix`) if it is not JSON."""
  try:
    text = files.read_text(path)
  except UnicodeDecodeError as e:
    raise CorruptFileError(_message(path, f"is not UTF-8 text ({e.reason})", fix)) from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise CorruptFileError(_message(
        path, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", fix)) from None


def _show(value) -> str:
  """A JSON value as it appears in the file, shortened."""
  text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
  return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


class Fields:
  """One JSON object of a record file, read entry by entry with each entry's type checked.

  `source` names the file in messages, `fix` says how to write it again, `where` is this
  object's path inside the file ("" at the top level).
  """

  def __init__(self, obj, source: str, fix: str = "", where: str = ""):
    self.source, self.fix, self.where = source, fix, where
    if not isinstance(obj, dict):
      raise CorruptFileError(_message(
          source, f"{'has ' + where if where else 'holds'} {_show(obj)}, not a JSON object", fix))
    self.obj = obj

  def path(self, key: str) -> str:
    """The path of `key` in the file: categories["weave"]["image"]."""
    return f'{self.where}["{key}"]' if self.where else str(key)

  def fail(self, key: str, problem: str):
    """Raises CorruptFileError: `key` of this object `problem` (e.g. "is 2, not in (0, 1)")."""
    raise CorruptFileError(_message(self.source, f"has {self.path(key)} {problem}", self.fix))

  def has(self, key: str) -> bool:
    return key in self.obj

  def keys(self) -> list[str]:
    return list(self.obj)

  def value(self, key: str):
    """The raw JSON value of a required entry."""
    if key not in self.obj:
      raise CorruptFileError(_message(self.source, f"has no {self.path(key)}", self.fix))
    return self.obj[key]

  def _typed(self, key: str, ok, what: str):
    value = self.value(key)
    if not ok(value):
      self.fail(key, f"= {_show(value)}, not {what}")
    return value

  def fields(self, key: str) -> "Fields":
    """A nested JSON object."""
    return Fields(self._typed(key, lambda v: isinstance(v, dict), "a JSON object"),
                  self.source, self.fix, self.path(key))

  def each(self, key: str) -> dict[str, "Fields"]:
    """A JSON object of JSON objects: {name: Fields}, in the file's order."""
    inner = self.fields(key)
    return {name: inner.fields(name) for name in inner.keys()}

  def list_of(self, key: str) -> list["Fields"]:
    """A JSON list of JSON objects."""
    items = self._typed(key, lambda v: isinstance(v, list), "a list")
    return [Fields(item, self.source, self.fix, f"{self.path(key)}[{i}]")
            for i, item in enumerate(items)]

  def number(self, key: str, nullable: bool = False):
    """An int or float as written (null -> NaN when `nullable`: an undefined metric)."""
    value = self.value(key)
    if value is None and nullable:
      return float("nan")
    if not _is_number(value):
      self.fail(key, f"= {_show(value)}, not a number")
    return value

  def optional_number(self, key: str):
    """None when absent (not measured), else `number(key, nullable=True)`."""
    return self.number(key, nullable=True) if key in self.obj else None

  def integer(self, key: str) -> int:
    return self._typed(key, lambda v: isinstance(v, int) and not isinstance(v, bool),
                       "a whole number")

  def boolean(self, key: str) -> bool:
    return self._typed(key, lambda v: isinstance(v, bool), "true or false")

  def string(self, key: str) -> str:
    return self._typed(key, lambda v: isinstance(v, str), "a string")

  def strings(self, key: str) -> list[str]:
    return self._typed(key, lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
                       "a list of strings")

  def numbers(self, key: str) -> list:
    return self._typed(key, lambda v: isinstance(v, list) and all(_is_number(x) for x in v),
                       "a list of numbers")
