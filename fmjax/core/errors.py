"""The errors that describe a user's mistake, not a bug.

`fmjax.main` prints a `UserError` as one line (`fmjax: error: ...`) and exits 1;
any other exception keeps its traceback, so an internal bug never reads like a
wrong setting. Each class also derives from the builtin error it refines, so
`except ValueError` still catches a bad config value.
"""

from __future__ import annotations


class UserError(Exception):
  """Something the user can fix: a setting, a path, a file, a run that diverged."""


class ConfigError(UserError, ValueError):
  """A config value the code cannot run with (unknown key, out of range, wrong combination)."""


class WorkdirError(UserError, NotADirectoryError):
  """The workdir cannot be used (a file, not writable)."""


class DataLayoutError(UserError, FileNotFoundError):
  """The data folder does not have the expected layout."""


class CorruptDataError(UserError, ValueError):
  """An image or mask file that cannot be decoded."""


class CorruptFileError(UserError, ValueError):
  """A record the workdir holds (calibration.json, eval/metrics.json) that cannot be read: not
  JSON, or an entry missing or of the wrong type (a hand edit, a truncated copy)."""


class CheckpointMismatchError(UserError, ValueError):
  """The checkpoint in the workdir was written for a different model or dataset."""


class MissingCheckpointError(UserError, FileNotFoundError):
  """The workdir holds no checkpoint (or not the asked step)."""


class NonFiniteError(UserError, FloatingPointError, ValueError):
  """Training produced a NaN or infinite loss or parameters, or scores are not finite."""
