"""A gs:// bucket for tests, kept in a local folder: <root>/<bucket>/<object name>.

It stands in for Google Cloud Storage at the three places a run reaches it: etils.epath
(through fsspec's "gcs" protocol, which gcsfs provides in real use), Orbax's TensorStore
arrays (its GCS key-value store spec becomes a file one) and the bucket's layout query
(no hierarchical namespace), and tensorboardX's gs:// event writer (replaced by one that
rewrites the object whole, as tensorboardX's own does). It keeps the object store's rules
that code must respect, where gcsfs differs from a local filesystem:
- an object cannot be appended to (gcsfs would silently overwrite it; here it is an error);
- there are no folders: making one does nothing (a prefix exists once an object is under it);
- a move copies each object, then deletes it (no rename);
- a create-only write ("xb") is refused when the object is uploaded, at close.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import fsspec
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

PREFIX = "gs://"


def _strip(path):
  if isinstance(path, (list, tuple)):
    return type(path)(_strip(p) for p in path)
  path = os.fspath(path)
  return path[len(PREFIX):] if path.startswith(PREFIX) else path


class LocalBucketFS(DirFileSystem):
  """fsspec "gcs"/"gs" filesystem over the folder `LocalBucketFS.root` (set by `local_bucket`)."""

  protocol = ("gcs", "gs")
  root: str | None = None
  cachable = False
  options: dict = {}  # the gcsfs options the newest instance was created with

  def __init__(self, *args, **kwargs):  # gcsfs options (finalize_on_close, ...) do not apply
    LocalBucketFS.options = dict(kwargs)
    super().__init__(path=self.root, fs=LocalFileSystem(auto_mkdir=True))

  @property
  def path(self):
    return LocalBucketFS.root

  @path.setter
  def path(self, value):  # the root is the class's, so a cached instance follows a new bucket
    pass

  def _join(self, path):
    return super()._join(_strip(path))

  def open(self, path, mode="rb", *args, **kwargs):
    if "a" in mode:
      raise NotImplementedError(f"{path}: an object in a bucket cannot be appended to")
    if "x" in mode:
      return _CreateOnly(self, path)
    return super().open(path, mode, *args, **kwargs)

  def mkdir(self, path, create_parents=True, **kwargs):
    pass  # folders are prefixes

  def makedirs(self, path, exist_ok=False):
    pass

  def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
    self.copy(path1, path2, recursive=recursive, maxdepth=maxdepth, on_error="raise")
    self.rm(path1, recursive=recursive)


class _CreateOnly(io.BytesIO):
  """An "xb" upload: refused at close when the object exists by then (GCS answers 412)."""

  def __init__(self, fs, path):
    super().__init__()
    self.fs, self.target = fs, path

  def close(self):
    if self.closed:
      return
    data = self.getvalue()
    super().close()
    if self.fs.exists(self.target):
      raise FileExistsError(self.target)
    with self.fs.open(self.target, "wb") as f:
      f.write(data)


class _EventFile:
  """tensorboardX record writer for gs://: the whole file rewritten on every flush."""

  def __init__(self, path):
    self.path, self.data = path, b""

  def write(self, data):
    self.data += data

  def flush(self):
    with fsspec.filesystem("gcs").open(self.path, "wb") as f:
      f.write(self.data)

  def close(self):
    self.flush()


class _EventFactory:
  def open(self, path):
    return _EventFile(path)

  def directory_check(self, path):
    pass


def local_path(gs_path: str) -> str:
  """Where the object `gs_path` lies in the local folder."""
  return os.path.join(LocalBucketFS.root, _strip(gs_path))


@contextlib.contextmanager
def local_bucket(root: str):
  """gs:// paths are served from `root` while inside."""
  from etils.epath import backend as epath_backend
  from orbax.checkpoint._src.path import gcs_utils
  from tensorboardX import record_writer

  saved = (gcs_utils.get_kvstore_for_gcs, gcs_utils.is_hierarchical_namespace_enabled,
           record_writer.REGISTERED_FACTORIES.get("gs"))
  LocalBucketFS.root = os.path.abspath(root)
  for name in LocalBucketFS.protocol:
    fsspec.register_implementation(name, LocalBucketFS, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  gcs_utils.get_kvstore_for_gcs = lambda path: {"driver": "file", "path": local_path(path)}
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False
  record_writer.register_writer_factory("gs", _EventFactory())
  try:
    yield root
  finally:
    gcs_utils.get_kvstore_for_gcs, gcs_utils.is_hierarchical_namespace_enabled, factory = saved
    if factory is None:
      record_writer.REGISTERED_FACTORIES.pop("gs", None)
    else:
      record_writer.register_writer_factory("gs", factory)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    for name in LocalBucketFS.protocol:
      sys.modules["fsspec.registry"]._registry.pop(name, None)  # back to fsspec's (gcsfs)
    LocalBucketFS.root = None
