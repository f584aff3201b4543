"""The workdir itself: created and checked writable before any work, locked by one run at a time.

A bucket (gs://) is written through etils.epath (see fmjax.core.files); other URLs are refused.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time

from fmjax.core import console, files
from fmjax.core.errors import WorkdirError

LOCK_NAME = ".fmjax.lock"
# A lock file that cannot be parsed is another run's being written, unless it is this old:
# then it is a damaged leftover and taken over.
UNREADABLE_LOCK_SECONDS = 60.0


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` (or an output folder in it); refuses a file or a place that cannot be
  created or written, with the reason, before any expensive work. A bucket (gs://) is
  written through etils.epath (see fmjax.core.files); other URLs are refused."""
  scheme = files.unsupported_url(workdir)
  if scheme:
    raise WorkdirError(f"--workdir {workdir!r}: {scheme}:// is not supported; use a local or "
                       "shared folder, or a gs:// bucket (pip install 'fmjax[gcs]').")
  try:
    if files.exists(workdir) and not files.isdir(workdir):
      raise WorkdirError(f"--workdir {workdir!r} is a file, not a directory; choose a directory.")
    files.makedirs(workdir)
  except ImportError as e:
    raise WorkdirError(f"--workdir {workdir!r} needs a filesystem library that is not "
                       f"installed ({e}). For gs:// install them with: pip install "
                       "'fmjax[gcs]'.") from e
  except OSError as e:
    raise WorkdirError(f"Cannot create {workdir!r}: {e.strerror or e}.") from e
  probe = os.path.join(workdir, f".fmjax-write-test-{socket.gethostname()}-{os.getpid()}")
  try:
    files.write_text(probe, "ok")
    files.remove(probe)
  except OSError as e:
    raise WorkdirError(f"Cannot write into {workdir!r}: {e.strerror or e}. Use a writable "
                       "--workdir (copy the run there to evaluate it).") from e


def check_output_folder(path: str) -> None:
  """Refuses, before any work, an output folder (eval/, export/, scores/<folder>/) that is a
  file. Creates nothing: the folder is written whole at the end (`files.folder_group`)."""
  if files.exists(path) and not files.isdir(path):
    raise WorkdirError(f"{path!r} is a file, not a directory; move it out of the way.")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """<workdir>/.fmjax.lock, held for one run: a second run on the same workdir is refused.

  The file holds the holder's pid, host, mode and start time. A lock left by a process
  that is gone (same host, pid not running) is stale and taken over with a warning;
  a lock from another host cannot be checked and is always respected. Only process 0
  of a multi-process run takes the lock.
  """

  def __init__(self, workdir: str, mode: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self.workdir, self.mode, self.held = workdir, mode, False

  def _holder(self) -> dict | None:
    for _ in range(3):  # a holder may be between creating the file and writing it
      try:
        return json.loads(files.read_text(self.path))
      except FileNotFoundError:
        return None
      except (OSError, ValueError):
        time.sleep(0.2)
    return {}

  def _age(self) -> float:
    """Seconds since the lock file was last written (0 when that cannot be read)."""
    try:
      if files.is_remote(self.path):  # written whole by one request: unreadable means damaged
        return float("inf")
      return time.time() - os.path.getmtime(self.path)
    except OSError:
      return 0.0

  def __enter__(self):
    if not console.is_main_process():
      return self
    me = {"pid": os.getpid(), "host": socket.gethostname(), "mode": self.mode,
          "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for _ in range(3):
      try:
        if files.create_exclusive(self.path, json.dumps(me)):
          self.held = True
          return self
      except OSError as e:
        raise WorkdirError(f"Cannot write into {self.workdir!r}: {e.strerror or e}.") from e
      holder = self._holder()
      if holder is None:
        continue  # released meanwhile
      pid, host = holder.get("pid"), holder.get("host")
      if holder == {} and self._age() < UNREADABLE_LOCK_SECONDS:
        raise WorkdirError(f"workdir {self.workdir} is being locked by another run "
                           f"({self.path} is not readable yet); try again in a minute.")
      stale = (host == me["host"] and isinstance(pid, int) and
               (pid == me["pid"] or not _pid_alive(pid))) or holder == {}
      if not stale:
        raise WorkdirError(
            f"workdir {self.workdir} in use by pid {pid} on host {host} (--mode="
            f"{holder.get('mode')}, since {holder.get('started')}). Wait for that run, or "
            f"remove {self.path} if it is gone.")
      console.warn(f"taking over the stale lock {self.path} of pid {pid} on host {host} "
                   "(that process is gone).")
      files.remove(self.path)
    raise WorkdirError(f"Could not take the lock {self.path}; try again.")

  def __exit__(self, *exc):
    if self.held:
      self.held = False
      files.remove(self.path)
    return False
