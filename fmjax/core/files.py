"""Files of a workdir on a local disk or in a Google Cloud Storage bucket (gs://), via etils.epath.

Orbax writes checkpoints through the same library, so `--workdir gs://bucket/run` keeps every
file of a run in the bucket with no mount (`pip install "fmjax[gcs]"` adds gcsfs and
google-cloud-storage, which epath and Orbax use for gs://). What differs on a bucket is handled
here, once:

- an object cannot be appended to (gcsfs silently overwrites instead): `append_text` rewrites
  the object and `LineLog` buffers lines, rewriting the object at most every `flush_secs`;
- an object is replaced whole by one write, so `write_text` needs no temporary file there
  (locally: a temporary file and `os.replace`, so a reader never sees half a file);
- there is no O_EXCL: `create_exclusive` uses the object store's create-only-if-absent write;
- other hosts write the same workdir, so gcsfs is told not to cache directory listings (by
  default it keeps them, never expiring), unless the user's fsspec configuration says so;
- a group of files (an export, an evaluation's eval/) is written into a hidden sibling folder
  and swapped in at the end (`folder_group`): locally one atomic exchange of two folders
  (Linux renameat2), so a crash or a signal leaves the whole old group or the whole new one.

Paths stay strings everywhere else; `os.path.join` joins them (buckets use "/" too).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import json
import os
import re
import shutil
import time

from etils import epath

try:  # only gs:// needs fsspec (fmjax[gcs] brings it with gcsfs); local runs do without
  import fsspec
except ImportError:
  fsspec = None
else:  # a default for the gcsfs filesystem epath creates (fsspec config; the user's own wins)
  fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)

REMOTE_PREFIXES = ("gs://",)  # Orbax writes checkpoints to local paths and gs:// only
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path) -> bool:
  """True for a bucket path (gs://)."""
  return str(path).startswith(REMOTE_PREFIXES)


def unsupported_url(path) -> str | None:
  """The scheme of a URL other than gs:// ("s3", "http", ...), else None."""
  m = _URL.match(str(path))
  return None if m is None or is_remote(path) else m.group(0)[:-3]


def absolute(path: str) -> str:
  """`path` made absolute (a bucket path is already)."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return epath.Path(path).exists()


def isdir(path: str) -> bool:
  return epath.Path(path).is_dir()


def makedirs(path: str) -> None:
  """Creates `path` and its parents (nothing to do on a bucket, where folders are prefixes)."""
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def remove(path: str) -> None:
  """Removes the file `path`, if there is one."""
  epath.Path(path).unlink(missing_ok=True)


def rmtree(path: str) -> None:
  """Removes the folder `path` and all in it, if it exists."""
  if is_remote(path):
    for _ in range(2):  # a second pass for what a folder placeholder object kept (as Orbax does)
      if exists(path):
        epath.Path(path).rmtree(missing_ok=True)
  else:
    shutil.rmtree(path, ignore_errors=True)


def move(src: str, dst: str) -> None:
  """Moves a file or folder within one filesystem (on a bucket: its objects copied, then
  deleted; no folder needs to exist there first)."""
  if is_remote(src) != is_remote(dst):
    raise ValueError(f"move: {src} and {dst} are not on the same filesystem")
  if is_remote(src):
    fs, name = fsspec.core.url_to_fs(src)
    fs.mv(name, fsspec.core.url_to_fs(dst)[1], recursive=True)
  else:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.move(src, dst)


def read_text(path: str) -> str:
  return epath.Path(path).read_text()


def read_json(path: str):
  return json.loads(read_text(path))


def _text_or_empty(path: str) -> str:
  return read_text(path) if exists(path) else ""


def _replace_whole(path: str, fill) -> None:
  """Local `path` replaced whole: `fill(tmp)` writes a temporary file beside it, which is then
  renamed over `path` (removed instead if anything fails)."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    fill(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_bytes(path: str, data: bytes) -> None:
  """`data` at `path`, replacing it whole (a reader sees the old or the new file)."""
  if is_remote(path):
    epath.Path(path).write_bytes(data)
    return

  def fill(tmp):
    with open(tmp, "wb") as f:
      f.write(data)
  _replace_whole(path, fill)


def put_file(local: str, path: str) -> None:
  """Moves the local file `local` to `path` (local or a bucket), streamed rather than read into
  memory, replacing it whole (a reader sees the old or the new file)."""
  if is_remote(path):
    fs, name = fsspec.core.url_to_fs(path)
    fs.put_file(local, name)  # an object appears whole when its upload ends
    os.remove(local)
    return
  _replace_whole(path, lambda tmp: shutil.move(local, tmp))


def write_text(path: str, text: str) -> None:
  """`text` at `path`, replacing it whole (a reader sees the old or the new file)."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj) -> None:
  """`obj` as indented JSON at `path`, replaced whole."""
  write_text(path, json.dumps(obj, indent=1))


def append_text(path: str, text: str) -> None:
  """Adds `text` at the end of `path` (created if absent). On a bucket the object is read and
  rewritten: use it for files written a few times per run, `LineLog` for logs."""
  if is_remote(path):
    write_text(path, _text_or_empty(path) + text)
  else:
    with open(path, "a") as f:
      f.write(text)


def create_exclusive(path: str, text: str) -> bool:
  """Writes `text` to `path` only if nothing is there; False (nothing written) if something is.
  Locally O_EXCL; on a bucket a create-only-if-absent write (gcsfs: ifGenerationMatch=0)."""
  if not is_remote(path):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True
  if exists(path):
    return False
  fs, name = fsspec.core.url_to_fs(path)
  try:
    with fs.open(name, "xb") as f:
      f.write(text.encode("utf-8"))
  except FileExistsError:
    return False
  except OSError:
    if exists(path):  # another writer won (the store refused the write at upload)
      return False
    raise
  return True


def upload_tree(local_dir: str, dst_dir: str) -> None:
  """Copies every file under the local folder `local_dir` to `dst_dir` (local or a bucket)."""
  for root, _, names in os.walk(local_dir):
    rel = os.path.relpath(root, local_dir)
    target = dst_dir if rel == "." else os.path.join(dst_dir, rel)
    makedirs(target)
    for name in names:
      with open(os.path.join(root, name), "rb") as f:
        write_bytes(os.path.join(target, name), f.read())


def csv_text(rows) -> str:
  """Rows (lists of values) as CSV text (the csv module's default dialect, "\\r\\n" lines)."""
  import csv  # pylint: disable=g-import-not-at-top
  buffer = io.StringIO()
  csv.writer(buffer).writerows(rows)
  return buffer.getvalue()


class LineLog:
  """Lines appended to a text file (a JSONL log).

  Locally each `append` goes to the file at once. On a bucket, where an object can only be
  replaced whole (and one object takes about one write per second), the lines are kept and the
  object is rewritten when `flush_secs` have passed since the last write, and on `flush`.
  """

  def __init__(self, path: str, flush_secs: float = 5.0):
    self.path, self.flush_secs = path, flush_secs
    self.remote = is_remote(path)
    self._text: str | None = None  # on a bucket: the whole content, read on first use
    self._dirty, self._last = False, float("-inf")

  def append(self, line: str) -> None:
    if not self.remote:
      append_text(self.path, line)
      return
    if self._text is None:
      self._text = _text_or_empty(self.path)
    self._text += line
    self._dirty = True
    if time.monotonic() - self._last >= self.flush_secs:
      self.flush()

  def replace(self, text: str) -> None:
    """The file's whole content becomes `text` (written at once)."""
    write_text(self.path, text)
    if self.remote:
      self._text, self._dirty, self._last = text, False, time.monotonic()

  def flush(self) -> None:
    if self.remote and self._dirty:
      write_text(self.path, self._text)
      self._dirty, self._last = False, time.monotonic()


# ---- groups of files written as one ---------------------------------------------------------

_RENAME_EXCHANGE = 2  # linux/fs.h


def _renameat2():
  """libc's renameat2 (Linux, glibc >= 2.28), or None."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fn = libc.renameat2
  except (OSError, AttributeError):
    return None
  fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
  return fn


_EXCHANGE = _renameat2()
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
  """Swaps the folders `a` and `b` in one atomic step; False where the system cannot."""
  if _EXCHANGE is None:
    return False
  if _EXCHANGE(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  err = ctypes.get_errno()
  if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot exchange
    return False
  raise OSError(err, os.strerror(err), b)


def _siblings(path: str, kind: str) -> list[str]:
  """The hidden siblings `.<name>.<kind>-*` of `path` (partial or replaced groups)."""
  parent, name = os.path.split(path.rstrip("/"))
  if is_remote(path):
    return [p for p in (str(q) for q in epath.Path(parent).glob(f".{name}.{kind}-*"))]
  if not os.path.isdir(parent):
    return []
  return [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(f".{name}.{kind}-")]


def settle_group(path: str) -> None:
  """Finishes what an interrupted `folder_group` left next to `path`: a group moved aside
  with no new one in its place goes back; partial groups are removed."""
  old = _siblings(path, "old")
  if old and not exists(path):
    move(sorted(old)[-1], path)
  for leftover in _siblings(path, "old") + _siblings(path, "partial"):
    rmtree(leftover)


@contextlib.contextmanager
def folder_group(path: str):
  """Writes the folder `path` as one group: yields an empty hidden sibling folder to write
  into; when the block ends, that folder replaces `path` whole. On an error or a signal
  (KeyboardInterrupt) inside the block, `path` is left as it was and the sibling removed.

  Locally the replacement is one atomic exchange (renameat2), else, and on a bucket, `path`
  is moved aside, the new group moved in, the old one deleted (`settle_group`, run at the
  next write, puts an old group back if a crash came between the two moves).
  """
  path = path.rstrip("/")
  settle_group(path)
  parent, name = os.path.split(path)
  tmp = os.path.join(parent, f".{name}.partial-{os.getpid()}")
  rmtree(tmp)
  makedirs(tmp)
  try:
    yield tmp
  except BaseException:
    rmtree(tmp)
    raise
  if not is_remote(path) and os.path.isdir(path) and _exchange(tmp, path):
    rmtree(tmp)  # now the old group
    return
  if exists(path):
    old = os.path.join(parent, f".{name}.old-{os.getpid()}")
    move(path, old)
    move(tmp, path)
    rmtree(old)
  else:
    move(tmp, path)
