"""A workdir in a bucket (gs://): every file of a run goes through etils.epath and Orbax.

The bucket is `fake_bucket.local_bucket`: gs:// objects kept in a local folder, with no
appends allowed (as on GCS). A run there must write the same files and numbers as a run in a
local folder, resume from its own checkpoints, and leave nothing on the local disk.
"""

import json
import os
import pathlib
import shutil
import socket

import fsspec
import numpy as np
import pytest
from PIL import Image

from conftest import check_eval_report, tiny_config
from fake_bucket import LocalBucketFS, local_bucket, local_path
from fmjax import deploy
from fmjax.core import files
from fmjax.data import load_dataset
from fmjax.report.evaluate import score_dir_name
from fmjax import main as fm_main
from fmjax.core.errors import WorkdirError
from fmjax.core.workdir import LOCK_NAME, WorkdirLock, prepare_workdir
from fmjax.train.restore import CORRUPT_DIR


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a path mistaken for a local one would appear here, as "gs:"
  with local_bucket(str(tmp_path / "bucket")):
    yield "gs://fmjax-test"
  assert not (tmp_path / "gs:").exists(), "a gs:// path was written to the local disk"


def _records(root, name):
  text = pathlib.Path(root, f"{name}_metrics.jsonl").read_text()
  return [json.loads(l) for l in text.splitlines() if l.strip()]


def _files(root):
  """Relative paths of a run's files, without checkpoint internals and event file names."""
  out = set()
  for path in pathlib.Path(root).rglob("*"):
    rel = path.relative_to(root).as_posix()
    if path.is_file() and not rel.startswith(("checkpoints/", "profile/")):
      out.add(rel.rsplit("/", 1)[0] + "/<events>" if "tfevents" in rel else rel)
  return out


def test_a_bucket_workdir_run_equals_a_local_one_and_resumes(bucket, tmp_path):
  local = str(tmp_path / "local")
  remote = f"{bucket}/run"
  for workdir in (local, remote):
    fm_main.run(tiny_config(**{"train.profile_steps": "2,2"}), workdir, "train_and_evaluate")
  stored = local_path(remote)

  # The same files, the same losses and metrics.
  assert _files(stored) == _files(local)
  assert {"config.json", "environment.json", "run_history.jsonl", "data_stats.json",
          "train_metrics.jsonl", "eval_metrics.jsonl", "calibration.json", "eval/metrics.json",
          "eval/scores.csv", "tensorboard/train/<events>"} <= _files(stored)
  assert not os.path.exists(os.path.join(stored, LOCK_NAME))  # released
  assert [r["step"] for r in _records(stored, "train")] == [1, 2, 3, 4]
  np.testing.assert_allclose([r["loss"] for r in _records(stored, "train")],
                             [r["loss"] for r in _records(local, "train")], rtol=1e-6)
  metrics = [json.loads(pathlib.Path(d, "eval", "metrics.json").read_text())
             for d in (stored, local)]
  nan = lambda m: {k: float("nan") if v is None else v for k, v in m.items()}  # null: undefined
  assert nan(metrics[0]["mean"]) == pytest.approx(nan(metrics[1]["mean"]), rel=1e-6, nan_ok=True)
  check_eval_report(os.path.join(stored, "eval"), metrics[0]["per_category"])
  assert sorted(os.listdir(os.path.join(stored, "checkpoints"))) == ["2", "4"]
  assert any(p.is_file() for p in pathlib.Path(stored, "profile", "train").rglob("*"))

  # Unlabeled images scored into the bucket (scores.csv, heatmaps) as into the local folder, and
  # the scorer exported there: loaded from the bucket's copy, it gives the same scores.
  dataset = load_dataset(tiny_config().data)
  images = tmp_path / "new_images"
  images.mkdir()
  for i in range(3):
    Image.fromarray(dataset.test_images[i]).save(images / f"{i}.png")
  scoring = tiny_config(**{"data.score_dir": str(images), "data.score_category": "weave"})
  scored = [fm_main.run(scoring, w, "score")["images"] for w in (local, remote)]
  assert [r["score"] for r in scored[0]] == pytest.approx([r["score"] for r in scored[1]], rel=1e-6)
  out = f"scores/{score_dir_name(str(images))}"
  assert pathlib.Path(stored, out, "scores.csv").read_text() == \
      pathlib.Path(local, out, "scores.csv").read_text().replace(local, remote)
  assert len(os.listdir(os.path.join(stored, out, "heatmaps"))) == 3
  fm_main.run(tiny_config(**{"export.platforms": "cpu"}), remote, "export")
  shipped = deploy.load(os.path.join(stored, "export"))(dataset.test_images[:3], "weave")
  np.testing.assert_allclose(shipped.scores, [r["score"] for r in scored[1]], rtol=1e-5)

  # Resumed from the bucket's step-4 checkpoint: the same as the local run resumed; with
  # keep_checkpoints=2 Orbax deletes step 2 from the bucket.
  longer = {"train.num_steps": 6, "train.keep_checkpoints": 2}
  for workdir in (local, remote):
    fm_main.run(tiny_config(**longer), workdir, "train")
  assert [r["step"] for r in _records(stored, "train")] == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([r["loss"] for r in _records(stored, "train")],
                             [r["loss"] for r in _records(local, "train")], rtol=1e-6)
  assert sorted(os.listdir(os.path.join(stored, "checkpoints"))) == ["4", "6"]
  history = pathlib.Path(stored, "run_history.jsonl").read_text().splitlines()
  assert [json.loads(l)["mode"] for l in history] == ["train_and_evaluate", "score", "export", "train"]
  final = _records(stored, "train")[-1]

  # A step that no longer restores is moved aside inside the bucket (never deleted), and the
  # run resumes from step 4 to the same step-6 loss.
  shutil.rmtree(os.path.join(stored, "checkpoints", "6", "state"))
  fm_main.run(tiny_config(**longer), remote, "train")
  (aside,) = os.listdir(os.path.join(stored, CORRUPT_DIR))
  assert aside.startswith("6-")
  assert sorted(os.listdir(os.path.join(stored, "checkpoints"))) == ["4", "6"]
  assert [r["step"] for r in _records(stored, "train")] == [1, 2, 3, 4, 5, 6]
  assert _records(stored, "train")[-1]["loss"] == pytest.approx(final["loss"], rel=1e-6)


def test_a_bucket_lock_refuses_a_second_run(bucket):
  workdir = f"{bucket}/locked"
  prepare_workdir(workdir)
  holder = {"pid": 1, "host": "another-host", "mode": "train", "started": "2026-01-01T00:00:00"}
  assert files.create_exclusive(f"{workdir}/{LOCK_NAME}", json.dumps(holder))
  assert not files.create_exclusive(f"{workdir}/{LOCK_NAME}", "{}")  # already there
  with pytest.raises(WorkdirError, match="in use by pid 1 on host another-host"):
    fm_main.run(tiny_config(), workdir, "train")
  assert json.loads(files.read_text(f"{workdir}/{LOCK_NAME}")) == holder  # untouched
  files.remove(f"{workdir}/{LOCK_NAME}")
  with WorkdirLock(workdir, "train") as lock:
    assert lock.held
    assert json.loads(files.read_text(f"{workdir}/{LOCK_NAME}"))["host"] == socket.gethostname()
  assert not files.exists(f"{workdir}/{LOCK_NAME}")


def test_bucket_logs_are_rewritten_whole_and_buffered(bucket):
  path = f"{bucket}/logs/train_metrics.jsonl"
  files.makedirs(f"{bucket}/logs")
  files.append_text(path, "a\n")
  files.append_text(path, "b\n")  # no append on a bucket: read, then rewritten
  assert files.read_text(path) == "a\nb\n"
  log = files.LineLog(path, flush_secs=3600)
  log.append("c\n")  # the first append after a flush interval writes
  log.append("d\n")  # buffered
  assert files.read_text(path) == "a\nb\nc\n"
  log.flush()
  assert files.read_text(path) == "a\nb\nc\nd\n"
  log.replace("x\n")
  log.append("y\n")
  log.flush()
  assert files.read_text(path) == "x\ny\n"
  # epath made the filesystem with no listing cache (another host's writes stay visible).
  assert LocalBucketFS.options == {"finalize_on_close": True, "use_listings_cache": False}
  with pytest.raises(NotImplementedError, match="appended"):  # the fake refuses like GCS
    fsspec.filesystem("gcs").open(path, "a")


def test_bucket_moves_and_exclusive_creates_follow_object_store_rules(bucket, monkeypatch):
  from etils import epath
  files.write_text(f"{bucket}/a/step/x.bin", "1")
  files.write_text(f"{bucket}/a/step/sub/y.bin", "2")
  assert not files.exists(f"{bucket}/aside")  # a prefix without objects is not there
  with pytest.raises(FileNotFoundError):  # what a rename into it does (so files.move copies)
    epath.Path(f"{bucket}/a/step").rename(f"{bucket}/aside/step-1")
  files.move(f"{bucket}/a/step", f"{bucket}/aside/step-1")
  assert not files.exists(f"{bucket}/a/step")
  assert files.read_text(f"{bucket}/aside/step-1/x.bin") == "1"
  assert files.read_text(f"{bucket}/aside/step-1/sub/y.bin") == "2"
  with pytest.raises(ValueError, match="not on the same filesystem"):
    files.move(f"{bucket}/aside", "/tmp/elsewhere")
  # Another writer creates the lock between the check and the upload: refused at upload.
  files.write_text(f"{bucket}/lock", "theirs")
  monkeypatch.setattr(files, "exists", lambda path: False)
  assert not files.create_exclusive(f"{bucket}/lock", "mine")
  assert files.read_text(f"{bucket}/lock") == "theirs"


def test_local_writes_replace_whole_files(tmp_path):
  path = str(tmp_path / "a.json")
  files.write_json(path, {"x": [1, 2]})
  files.write_json(path, {"x": [3]})
  assert json.loads(pathlib.Path(path).read_text()) == {"x": [3]}
  assert os.listdir(tmp_path) == ["a.json"]  # no temporary file left
  log = files.LineLog(str(tmp_path / "l.jsonl"), flush_secs=3600)
  log.append("1\n")
  assert (tmp_path / "l.jsonl").read_text() == "1\n"  # locally: at once
  with pytest.raises(TypeError):  # a failed write leaves the old file and no temporary one
    files.write_bytes(path, "not bytes")
  assert json.loads(pathlib.Path(path).read_text()) == {"x": [3]}
  assert sorted(os.listdir(tmp_path)) == ["a.json", "l.jsonl"]
  assert files.create_exclusive(str(tmp_path / "lock"), "me")
  assert not files.create_exclusive(str(tmp_path / "lock"), "you")
  assert (tmp_path / "lock").read_text() == "me"


def test_a_gs_workdir_without_gcsfs_names_the_package():
  try:
    import gcsfs  # noqa: F401
    pytest.skip("gcsfs is installed: a gs:// path would reach the real bucket")
  except ImportError:
    pass
  with pytest.raises(WorkdirError, match=r"fmjax\[gcs\]"):
    prepare_workdir("gs://no-such-bucket-fmjax/run")


@pytest.mark.parametrize("url", ["s3://bucket/run", "https://example.com/run", "hdfs://n/run"])
def test_other_urls_are_refused_before_anything_is_written(url, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  scheme = url.split(":")[0]
  with pytest.raises(WorkdirError, match=rf"{scheme}:// is not supported; use a local or shared "
                                         r"folder, or a gs:// bucket"):
    fm_main.run(tiny_config(), url, "train")
  assert os.listdir(tmp_path) == []  # no "s3:" folder made on the local disk


def test_hooks_flush_their_logs_after_every_checkpoint(bucket):
  from fmjax.train import loop as train

  class Recorder(train.TrainHook):
    def __init__(self):
      self.calls = []

    def after_step(self, step, state):
      self.calls.append(("step", step))

    def flush(self):
      self.calls.append(("flush", None))

    def close(self):
      self.calls.append(("close", None))

  hook = Recorder()
  train.train(tiny_config(), f"{bucket}/hooked", hooks=(hook,))  # checkpoints at steps 2 and 4
  assert hook.calls == [("step", 1), ("step", 2), ("flush", None), ("step", 3), ("step", 4),
                        ("flush", None), ("close", None)]


def test_put_file_moves_a_local_file_whole_to_a_folder_or_a_bucket(bucket, tmp_path):
  data = os.urandom(3 * 1024 * 1024)
  for target in (str(tmp_path / "out" / "a.bin"), f"{bucket}/out/a.bin"):
    files.makedirs(os.path.dirname(target))
    files.write_bytes(target, b"old")
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    files.put_file(str(source), target)
    stored = target if not target.startswith("gs://") else local_path(target)
    assert pathlib.Path(stored).read_bytes() == data and not source.exists()
    assert sorted(os.listdir(os.path.dirname(stored))) == ["a.bin"]  # no temporary left
