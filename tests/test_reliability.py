"""A workdir is never corrupted or lost, and every bad input gets one line (issue: reliability)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from fmjax.score.session import ScoringSession
from fmjax.train import checkpoint
from fmjax.report import evaluate
from fmjax import main as fm_main
from fmjax.core import workdir as wd
from fmjax.train import restore
from fmjax.core.errors import ConfigError, MissingCheckpointError, WorkdirError

from conftest import tiny_config
from test_main import _cli


@pytest.mark.parametrize("override,match", [
    ({"train.learning_rate": -1e-3}, r"train.learning_rate must be > 0, got -0.001"),
    ({"train.learning_rate": 0.0}, r"train.learning_rate must be > 0"),
    ({"train.b2": 1.0}, r"train.b2 must be in \[0, 1\)"),
    ({"train.weight_decay": -1.0}, r"train.weight_decay must be >= 0"),
    ({"train.keep_checkpoints": 0}, r"train.keep_checkpoints must be >= 1"),
    ({"model.dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
    ({"evaluate.batch_size": 3, "mesh.num_devices": 2},
     r"evaluate.batch_size=3 must be divisible by the 2 devices"),
])
def test_out_of_range_values_are_refused_before_anything_is_created(override, match, tmp_path):
  run = tmp_path / "run"
  with pytest.raises(ConfigError, match=match):
    fm_main.run(tiny_config(**override), str(run), "train")
  assert not run.exists()


# ---- checkpoints that no longer restore ----------------------------------------------------


def _corrupt(step_dir, how):
  state = step_dir / "state"
  if how == "metadata":
    (state / "_METADATA").unlink()
  elif how == "state":
    shutil.rmtree(state)
  else:  # every data file cut to half its size
    for root, _, files in os.walk(state):
      for name in files:
        path = os.path.join(root, name)
        if not name.startswith("_") and os.path.getsize(path) > 16:
          with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  run = tmp_path_factory.mktemp("full")
  fm_main.run(tiny_config(), str(run), "train")
  return run


@pytest.mark.parametrize("how", ["metadata", "state", "truncated"])
def test_training_falls_back_past_a_corrupt_checkpoint(tmp_path, uninterrupted, how, capsys):
  run = tmp_path / "run"
  fm_main.run(tiny_config(), str(run), "train")  # checkpoints at steps 2 and 4
  _corrupt(run / "checkpoints" / "4", how)
  capsys.readouterr()
  # Evaluation uses the newest step whose parameters restore (a lost _METADATA file leaves the
  # parameter arrays readable), with a warning for a skipped one, and moves nothing.
  result = fm_main.run(tiny_config(), str(run), "evaluate")
  err = capsys.readouterr().err
  if how == "metadata":
    assert result.settings.checkpoint_step == 4 and "does not restore" not in err
  else:
    assert result.settings.checkpoint_step == 2
    assert "checkpoint step 4 in" in err and "does not restore" in err and "using step 2" in err
  assert (run / "checkpoints" / "4").exists()
  # Training resumes from step 2, keeps the bad step aside, and ends where an uninterrupted
  # run ends, bit for bit.
  state = fm_main.run(tiny_config(), str(run), "train")
  err = capsys.readouterr().err
  aside = list((run / restore.CORRUPT_DIR).iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("4-") and "moved the unrestorable step 4" in err
  assert int(state.step) == 4
  manager = checkpoint.make_manager(str(run), read_only=True)
  assert manager.all_steps() == [2, 4]
  params = restore.load_params_for_eval(tiny_config(), str(uninterrupted), use_ema=False).params
  for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(jax.device_get(params))):
    np.testing.assert_array_equal(a, b)
  steps = [json.loads(l)["step"] for l in (run / "train_metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4]  # the log is cut back to the resumed step, not repeated


def test_no_restorable_checkpoint_is_one_error_and_nothing_moves(tmp_path):
  run = tmp_path / "run"
  fm_main.run(tiny_config(**{"train.num_steps": 2}), str(run), "train")
  _corrupt(run / "checkpoints" / "2", "state")
  with pytest.raises(MissingCheckpointError, match="No checkpoint in .* restores: step 2"):
    fm_main.run(tiny_config(), str(run), "train")
  assert (run / "checkpoints" / "2").exists() and not (run / restore.CORRUPT_DIR).exists()


# ---- one run per workdir --------------------------------------------------------------------


def test_a_second_run_on_a_workdir_in_use_is_refused(tmp_path, capsys):
  run = tmp_path / "run"
  run.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    lock = {"pid": holder.pid, "host": socket.gethostname(), "mode": "train",
            "started": "2026-11-24T20:00:00"}
    (run / wd.LOCK_NAME).write_text(json.dumps(lock))
    with pytest.raises(WorkdirError, match=f"in use by pid {holder.pid} on host "
                                           f"{socket.gethostname()}"):
      fm_main.run(tiny_config(), str(run), "train")
    assert not (run / "checkpoints").exists()
  finally:
    holder.kill()
    holder.wait()
  # The holder is gone: its lock is stale and taken over with a warning.
  fm_main.run(tiny_config(**{"train.num_steps": 2}), str(run), "train")
  assert f"stale lock {run / wd.LOCK_NAME} of pid {holder.pid}" in capsys.readouterr().err
  assert not (run / wd.LOCK_NAME).exists()  # released at the end
  with pytest.raises(ConfigError):  # and released when a run fails
    fm_main.run(tiny_config(**{"train.num_steps": 2, "data.name": "nope"}), str(run), "train")
  assert not (run / wd.LOCK_NAME).exists()


def test_two_real_processes_cannot_share_a_workdir(tmp_path):
  run = tmp_path / "run"
  args = ("--config", "configs/quickstart.py", "--workdir", str(run), "--mode=train",
          "--config.train.num_steps=100000", "--config.train.checkpoint_every_steps=100000")
  env = dict(os.environ, PYTHONPATH=str(fm_main.__file__).rsplit("/fmjax/", 1)[0])
  first = subprocess.Popen([sys.executable, "-m", "fmjax.main", *args], env=env,
                           cwd=env["PYTHONPATH"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    import time
    deadline = time.time() + 120
    while not (run / wd.LOCK_NAME).exists() and time.time() < deadline and first.poll() is None:
      time.sleep(0.2)
    second = _cli(*args)
    assert second.returncode == 1
    assert f"in use by pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
  finally:
    first.kill()
    first.wait()


# ---- outputs: written where they can be, never mixed or overwritten --------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  run = tmp_path_factory.mktemp("trained")
  fm_main.run(tiny_config(), str(run), "train_and_evaluate")
  return run


def test_unwritable_outputs_stop_before_scoring(trained, tmp_path, monkeypatch):
  run = tmp_path / "run"
  shutil.copytree(trained, run)
  shutil.rmtree(run / "eval")
  (run / "eval").write_text("in the way")
  monkeypatch.setattr(ScoringSession, "score", lambda *a, **k: pytest.fail("scored anyway"))
  with pytest.raises(WorkdirError, match="eval' is a file"):
    fm_main.run(tiny_config(), str(run), "evaluate")
  out = _cli("--config", "configs/quickstart.py", "--workdir", "/proc/fmjax-run", "--mode=evaluate")
  assert out.returncode == 1 and out.stderr.startswith("fmjax: error: Cannot create '/proc/fmjax-run'")
  assert len(out.stderr.strip().splitlines()) == 1


def _folder(path, images):
  path.mkdir(parents=True)
  for i, im in enumerate(images):
    Image.fromarray(im).save(path / f"{i:03d}.png")
  return path


def test_score_outputs_of_folders_are_separate_and_reruns_replace(trained, tmp_path, capsys):
  from fmjax.data import load_dataset
  test_images = load_dataset(tiny_config().data).test_images
  day1 = _folder(tmp_path / "day1" / "batch", test_images[:4])
  day2 = _folder(tmp_path / "day2" / "batch", test_images[4:6])
  score = lambda folder, **o: fm_main.run(tiny_config(**{"data.score_dir": str(folder),
                                                         "data.score_category": "weave", **o}),
                                          str(trained), "score")
  first = score(day1)
  score(day2)
  out1 = trained / "scores" / evaluate.score_dir_name(str(day1))
  out2 = trained / "scores" / evaluate.score_dir_name(str(day2))
  assert out1 != out2
  assert len((out1 / "scores.csv").read_text().splitlines()) == 5  # header + 4, not overwritten
  assert len(os.listdir(out1 / "heatmaps")) == 4 and len(os.listdir(out2 / "heatmaps")) == 2
  # Seeds come from each image's pixels: a new file sorting first leaves the others' scores.
  Image.fromarray(test_images[7]).save(day1 / "-new.png")  # "-" sorts before "0"
  again = score(day1)
  assert [r["score"] for r in again["images"][1:]] == pytest.approx(
      [r["score"] for r in first["images"]], rel=1e-6)
  # A rerun replaces its own outputs completely.
  for name in os.listdir(day1)[:3]:
    os.remove(day1 / name)
  score(day1)
  assert len(os.listdir(out1 / "heatmaps")) == 2
  # A threshold from an evaluation with other settings is not used, and it says so.
  capsys.readouterr()
  other = score(day1, **{"evaluate.num_seeds": 3})
  assert np.isnan(other["threshold"])
  assert "num_seeds" in capsys.readouterr().err
  with open(out1 / "scores.csv") as f:
    assert all(line.rstrip().endswith(",,") for line in list(f)[1:])  # no threshold, no decision
  with pytest.raises(ConfigError, match="got 'wevae'"):
    score(day1, **{"data.score_category": "wevae"})


def test_evaluate_rerun_replaces_heatmaps_and_one_batch_has_a_rate(trained):
  result = fm_main.run(tiny_config(**{"evaluate.num_heatmaps": 1, "evaluate.batch_size": 16}),
                       str(trained), "evaluate")
  assert len(os.listdir(trained / "eval" / "heatmaps")) == 1
  assert np.isfinite(result.settings.images_per_s) and result.settings.images_per_s > 0


def test_cli_bad_key_and_missing_config_are_one_line(tmp_path):
  out = _cli("--config", "configs/quickstart.py", "--workdir", str(tmp_path / "r"),
             "--config.train.nmu_steps=5")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip() == ("fmjax: error: unknown config key 'nmu_steps' (Did you mean "
                                "\"num_steps\" instead of \"nmu_steps\"?)")
  out = _cli("--config", "configs/nope.py", "--workdir", str(tmp_path / "r"))
  assert out.returncode == 1 and out.stderr.strip().startswith(
      "fmjax: error: config file 'configs/nope.py' not found")
  assert not (tmp_path / "r").exists()
