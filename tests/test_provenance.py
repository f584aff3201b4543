"""Results are never stale and never half-written; corrupt files and bad inputs get one line.

Provenance (a checkpoint is its content, not its step; data identity in the checkpoint), groups
of files written as one (kill tests with real signals in a subprocess), every file read back
checked, and the bad inputs of the deploy command.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_tiny import config
from conftest import REPO, TESTS
from fmjax import deploy
from fmjax import main as fm_main
from fmjax.core import console, files
from fmjax.core.errors import (CheckpointMismatchError, ConfigError, CorruptFileError,
                               DataLayoutError, UserError)
from fmjax.data import load_dataset
from fmjax.report import evaluate

CLI_CONFIG = str(TESTS / "cli_tiny.py")


def _images_folder(path, images):
  path.mkdir(parents=True)
  for i, im in enumerate(images):
    Image.fromarray(im).save(path / f"{i:03d}.png")
  return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """A tiny run with every group of files: checkpoints, calibration.json, eval/, export/ and
  the scores of a folder."""
  root = tmp_path_factory.mktemp("made")
  run = root / "run"
  fm_main.run(config(), str(run), "train_and_evaluate")
  fm_main.run(config(), str(run), "export")
  folder = _images_folder(root / "new", load_dataset(config().data).test_images[:3])
  fm_main.run(config(**{"data.score_dir": str(folder), "data.score_category": "weave"}),
              str(run), "score")
  return run, folder


def _copy(made, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(made[0], run)
  return run


# ---- provenance ----------------------------------------------------------------------------


def test_a_retrained_model_at_the_same_step_is_another_model(made, tmp_path, capsys):
  """Calibration and the F1 thresholds belong to a checkpoint's content: after retraining
  to the same step with another seed, they are not used, and the message says why."""
  run = _copy(made, tmp_path)
  folder = made[1]
  score = dict(**{"data.score_dir": str(folder), "data.score_category": "weave"})
  first = fm_main.run(config(**score), str(run), "score")
  assert np.isfinite(first["threshold"]) and first["threshold_kind"].startswith("calibrated")
  shutil.rmtree(run / "checkpoints")
  fm_main.run(config(seed=7), str(run), "train")  # the same step, another model
  capsys.readouterr()
  again = fm_main.run(config(seed=7, **score), str(run), "score")
  err = capsys.readouterr().err
  assert np.isnan(again["threshold"]) and again["decisions"] is None
  assert "checkpoint=" in err or "older than this workdir's checkpoint" in err
  # The export still holds the first model: --mode=score says so.
  assert "export again" in err
  provenance = json.loads((run / "scores" / evaluate.score_dir_name(str(folder)) /
                           "provenance.json").read_text())
  assert provenance["checkpoint_step"] == 4 and provenance["checkpoint"] != first_fingerprint(made)


def first_fingerprint(made):
  return json.loads((made[0] / "export" / "manifest.json").read_text())["checkpoint"]


def test_the_fingerprint_is_the_parameters(made):
  """The fingerprint saved with a checkpoint is the content hash of its parameters, EMA
  parameters and normalisation, recomputed here independently from the restored arrays."""
  import jax
  from fmjax.score.session import ScoringSession
  from fmjax.train import checkpoint, restore
  meta = json.loads((made[0] / "checkpoints" / "4" / "meta" / "metadata").read_text())
  raw = restore.load_params_for_eval(config(), str(made[0]), use_ema=False).params
  arrays = [np.asarray(a) for a in jax.tree.leaves(raw)]
  if meta["state"]["ema"]:
    ema = restore.load_params_for_eval(config(), str(made[0]), use_ema=True).params
    arrays += [np.asarray(a) for a in jax.tree.leaves(ema)]
  h = hashlib.blake2b(digest_size=16)
  for a in arrays + [np.asarray(meta["norm"]["mean"], np.float64),
                     np.asarray(meta["norm"]["std"], np.float64)]:
    h.update(f"{a.dtype.str}{a.shape};".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  assert h.hexdigest() == meta["fingerprint"] == first_fingerprint(made)
  assert ScoringSession.load(config(), str(made[0])).fingerprint == meta["fingerprint"]
  # A checkpoint saved before fingerprints: the same value, computed from its arrays.
  old = made[0].parent / "old"
  shutil.copytree(made[0] / "checkpoints", old / "checkpoints")
  for step in os.listdir(old / "checkpoints"):
    path = old / "checkpoints" / step / "meta" / "metadata"
    if path.exists():
      _edit_json(path, lambda o: o.pop("fingerprint"))
  assert restore.checkpoint_fingerprint(config(), str(old), 4) == meta["fingerprint"]
  # Another parameter value is another fingerprint.
  changed = jax.tree.map(lambda a: a + 1e-3, raw)
  assert checkpoint.params_fingerprint(changed, None, meta["norm"]) != meta["fingerprint"]


def test_resuming_on_other_data_is_refused_with_the_difference(made, tmp_path):
  run = _copy(made, tmp_path)
  with pytest.raises(CheckpointMismatchError,
                     match=r"trained on other data: 'synthetic', 36 training images \(fingerprint "
                           r"[0-9a-f]{12}\) there; 'synthetic', 36 \(fingerprint [0-9a-f]{12}\) now"):
    fm_main.run(config(**{"data.synthetic.seed": 5, "train.num_steps": 6}), str(run), "train")
  with pytest.raises(CheckpointMismatchError, match="36 training images .* there; 'synthetic', 45"):
    fm_main.run(config(**{"data.synthetic.num_train": 20, "train.num_steps": 6}), str(run), "train")
  assert sorted(os.listdir(run / "checkpoints")) == sorted(os.listdir(made[0] / "checkpoints"))
  assert (run / "data_stats.json").read_bytes() == (made[0] / "data_stats.json").read_bytes()


def test_normalisation_statistics_follow_the_data(tmp_path):
  """data_stats.json computed on other data is not reused for a new model."""
  run = tmp_path / "run"
  fm_main.run(config(), str(run), "train")
  stats = json.loads((run / "data_stats.json").read_text())
  shutil.rmtree(run / "checkpoints")
  fm_main.run(config(**{"data.synthetic.seed": 5}), str(run), "train")
  other = json.loads((run / "data_stats.json").read_text())
  assert other["data"] != stats["data"] and other["mean"] != stats["mean"]
  expected = load_dataset(config(**{"data.synthetic.seed": 5}).data)
  x = expected.train_images.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(other["mean"], x.mean(0), rtol=1e-9)


def test_study_rows_follow_the_checkpoint_content_and_the_test_data(made, tmp_path, capsys):
  run = _copy(made, tmp_path)
  study = {"study.name": "compute", "study.compute": "1x1"}

  def scored(**overrides):
    capsys.readouterr()
    fm_main.run(config(**study, **overrides), str(run), "study")
    return [l for l in capsys.readouterr().out.splitlines() if l.startswith("study compute:")]

  assert scored() == ["study compute: 1/1 K=1 T=1"]
  assert scored() == []
  shutil.rmtree(run / "checkpoints")
  fm_main.run(config(seed=3), str(run), "train")  # step 4 again, another model
  assert scored(seed=3) == ["study compute: 1/1 K=1 T=1"]
  assert scored(seed=3, **{"data.synthetic.num_test_normal": 3}) == ["study compute: 1/1 K=1 T=1"]
  saved = json.loads((run / "studies" / "compute" / "results.json").read_text())
  assert saved["rows"][0]["test_data"] == load_dataset(
      config(**{"data.synthetic.num_test_normal": 3}).data).test_fingerprint()
  assert not (run / "studies" / ".compute.rows.json").exists()


def test_export_names_its_checkpoint_and_deploy_warns_when_it_is_old(made, tmp_path, capsys):
  run = _copy(made, tmp_path)
  manifest = json.loads((run / "export" / "manifest.json").read_text())
  assert manifest["checkpoint"] == first_fingerprint(made) and manifest["checkpoint_step"] == 4
  images = made[1]
  capsys.readouterr()
  assert deploy.main([str(run / "export"), str(images), "--category", "weave",
                      "--out", str(tmp_path / "o1")]) == 0
  out, err = capsys.readouterr()
  assert f"checkpoint {manifest['checkpoint'][:12]} at step 4" in out
  assert "older than" not in err
  fm_main.run(config(**{"train.num_steps": 6}), str(run), "train")
  capsys.readouterr()
  assert deploy.main([str(run / "export"), str(images), "--category", "weave",
                      "--out", str(tmp_path / "o2")]) == 0
  err = capsys.readouterr().err
  assert "is older than its workdir's newest checkpoint" in err and "(step 6)" in err
  assert len([l for l in err.splitlines() if "older than" in l]) == 1


# ---- groups of files written as one --------------------------------------------------------


def test_folder_group_keeps_the_old_group_on_failure_and_settles_a_crash(tmp_path, monkeypatch):
  path = str(tmp_path / "group")
  with files.folder_group(path) as g:
    (tmp_path / "group_a").write_text("")  # outside the group: untouched
    open(os.path.join(g, "a"), "w").write("old")
  with pytest.raises(KeyboardInterrupt):
    with files.folder_group(path) as g:
      open(os.path.join(g, "a"), "w").write("new")
      raise KeyboardInterrupt
  assert os.listdir(path) == ["a"] and open(os.path.join(path, "a")).read() == "old"
  assert sorted(os.listdir(tmp_path)) == ["group", "group_a"]
  for exchange in (files._EXCHANGE, None):  # the atomic exchange, and the two-move fallback
    monkeypatch.setattr(files, "_EXCHANGE", exchange)
    with files.folder_group(path) as g:
      open(os.path.join(g, "b"), "w").write(str(exchange))
    assert os.listdir(path) == ["b"]
  # A crash between the fallback's two moves: the old group is put back at the next write.
  os.rename(path, str(tmp_path / ".group.old-123"))
  os.makedirs(tmp_path / ".group.partial-456")
  files.settle_group(path)
  assert os.listdir(path) == ["b"] and sorted(os.listdir(tmp_path)) == ["group", "group_a"]


def _snapshot(path):
  """{relative path: content hash} of a folder, or of one file."""
  if os.path.isfile(path):
    return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
  out = {}
  for root, _, names in os.walk(path):
    for n in names:
      p = os.path.join(root, n)
      out[os.path.relpath(p, path)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
  return out


def _cli(run, mode, *extra, env=None):
  env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
  return subprocess.run([sys.executable, str(TESTS / "kill_main.py"), "--config", CLI_CONFIG,
                         "--workdir", str(run), f"--mode={mode}", *extra], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


GROUPS = {  # mode -> the group it writes, relative to the workdir
    "evaluate": lambda folder: "eval",
    "calibrate": lambda folder: "calibration.json",
    "export": lambda folder: "export",
    "score": lambda folder: os.path.join("scores", evaluate.score_dir_name(str(folder))),
}


@pytest.mark.parametrize("mode", list(GROUPS))
def test_a_killed_run_leaves_the_whole_old_group(made, tmp_path, mode):
  """SIGKILL at the first and last file of the group, SIGINT (Ctrl-C) in the middle (and
  SIGTERM for evaluation): the group is byte for byte the old one; SIGINT and SIGTERM end
  with one line and exit 130 / 143. An uninterrupted run writes the whole new group."""
  extra = (f"--config.data.score_dir={made[1]}", "--config.data.score_category=weave")
  # Another scoring seed, so that the new group differs from the old one in every mode.
  extra = (extra if mode == "score" else ()) + ("--config.evaluate.seed=1",)
  group = GROUPS[mode](made[1])
  traced = _cli(_copy(made, tmp_path / "trace"), mode, *extra, env={"FMJAX_TRACE_WRITES": "1"})
  assert traced.returncode == 0, traced.stderr[-2000:]
  writes = [line.split(" ", 2) for line in traced.stderr.splitlines() if line.startswith("write ")]
  name = os.path.basename(group)
  inside = [int(n) for _, n, p in writes
            if f"/.{name}.partial-" in p or os.path.basename(p) == name]
  assert inside, writes
  new = _snapshot(tmp_path / "trace" / "run" / group)
  old = _snapshot(made[0] / group)
  assert new != old and all(new[k] != old[k] for k in new if k.endswith(".json") and k in old)
  points = [("SIGKILL", inside[0]), ("SIGKILL", inside[-1]),
            ("SIGINT", inside[len(inside) // 2])]
  if mode == "evaluate":
    points.append(("SIGTERM", inside[len(inside) // 2]))
  for i, (sig, at) in enumerate(points):
    run = _copy(made, tmp_path / f"{sig}-{i}")
    out = _cli(run, mode, *extra, env={"FMJAX_KILL_AT_WRITE": str(at), "FMJAX_KILL_SIGNAL": sig})
    assert _snapshot(run / group) == old, (sig, at)
    if sig == "SIGKILL":
      assert out.returncode == -signal.SIGKILL
    else:
      assert out.returncode == (130 if sig == "SIGINT" else 143), out.stderr[-2000:]
      last = out.stderr.strip().splitlines()[-1]
      assert last.startswith(f"fmjax: error: interrupted by {'Ctrl-C' if sig == 'SIGINT' else sig}")
      assert "Traceback" not in out.stderr
      leftovers = [n for n in os.listdir(os.path.dirname(run / group)) if ".partial-" in n]
      assert leftovers == []


# ---- every file read back is checked -------------------------------------------------------


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _edit_json(path, edit):
  obj = json.loads(path.read_text())
  edit(obj)
  path.write_text(json.dumps(obj))


def _first_category_threshold(obj):
  cat = next(iter(obj["categories"].values()))
  rate = next(iter(cat["image"]))
  cat["image"][rate]["threshold"] = "abc"


CORRUPTIONS = [  # (file, how, mode that reads it, what the message says)
    ("calibration.json", _truncate, "evaluate", "is not valid JSON"),
    ("calibration.json", lambda p: _edit_json(p, _first_category_threshold), "evaluate",
     '"threshold"] = "abc", not a number'),
    ("calibration.json", lambda p: _edit_json(p, lambda o: o.update(rates="0.01")), "evaluate",
     'rates = "0.01", not a list'),
    ("calibration.json", _truncate, "export", "is not valid JSON"),
    ("data_stats.json", _truncate, "train", "is not valid JSON"),
    ("data_stats.json", lambda p: _edit_json(p, lambda o: o.update(std=[0, 1, 1])), "train",
     "std = [0, 1, 1], not 3 finite numbers > 0"),
    ("eval/metrics.json", lambda p: (_truncate(p), os.remove(p.parent.parent / "calibration.json")),
     "export", "is not valid JSON"),  # read for the F1 thresholds when nothing is calibrated
    ("studies/compute/results.json", _truncate, "study", "is not valid JSON"),
    ("studies/compute/results.json", lambda p: _edit_json(p, lambda o: o.update(rows={})),
     "study", "rows = {}, not a list"),
]


@pytest.mark.parametrize("name,corrupt,mode,says", CORRUPTIONS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CORRUPTIONS)])
def test_a_corrupt_file_is_one_line_naming_it(made, tmp_path, name, corrupt, mode, says,
                                              monkeypatch):
  run = _copy(made, tmp_path)
  overrides = {"train.num_steps": 6} if mode == "train" else {}
  if mode == "study":
    overrides = {"study.name": "compute", "study.compute": "1x1"}
    fm_main.run(config(**overrides), str(run), "study")
  path = run / name
  corrupt(path)
  from fmjax.score.session import ScoringSession
  monkeypatch.setattr(ScoringSession, "score_split",
                      lambda *a, **k: pytest.fail("scored before reading the file"))
  export = _snapshot(run / "export")
  with pytest.raises(CorruptFileError) as e:
    fm_main.run(config(**overrides), str(run), mode)
  assert _snapshot(run / "export") == export  # an export refused replaces nothing
  message = str(e.value)
  assert str(path) in message and says in message and "\n" not in message
  assert any(w in message for w in ("delete", "run --mode", "again", "export")), message


def test_a_corrupt_file_on_the_command_line_is_one_line_and_exit_1(made, tmp_path):
  run = _copy(made, tmp_path)
  _truncate(run / "calibration.json")
  out = _cli(run, "evaluate")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith("fmjax: error:")]
  assert len(lines) == 1 and "calibration.json is not valid JSON" in lines[0]


@pytest.mark.parametrize("damage,says", [
    ("manifest-not-json", "manifest.json is not valid JSON"),
    ("manifest-no-key", 'has no class_names'),
    ("manifest-bad-type", "image_size = \"16\", not a whole number"),
    ("params-truncated", "Cannot read"),
    ("params-other", "holds 1 arrays, manifest.json says"),
])
def test_a_damaged_export_is_one_line(made, tmp_path, capsys, damage, says):
  run = _copy(made, tmp_path)
  export = run / "export"
  if damage == "manifest-not-json":
    _truncate(export / "manifest.json")
  elif damage == "manifest-no-key":
    _edit_json(export / "manifest.json", lambda o: o.pop("class_names"))
  elif damage == "manifest-bad-type":
    _edit_json(export / "manifest.json", lambda o: o.update(image_size="16"))
  elif damage == "params-truncated":
    _truncate(export / "params.npz")
  else:
    np.savez(export / "params.npz", leaf_00000=np.zeros(3, np.float32))
  capsys.readouterr()
  assert deploy.main([str(export), str(made[1]), "--category", "weave",
                      "--out", str(tmp_path / "o")]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("fmjax.deploy: error:") and says in err[0], err


def test_arm_records_are_checked(tmp_path):
  from fmjax.studies import scaling
  path = tmp_path / "arm.json"
  path.write_text(json.dumps({k: 1 for k in scaling.ARM_KEYS} |
                             {"val_steps": [1], "image_auroc": "high"}))
  with pytest.raises(CorruptFileError, match=r'arm.json has image_auroc = "high", not a number; '
                                             r"delete .* to evaluate the arm again"):
    scaling._read_record(str(path))


# ---- bad inputs: one line each, and a refused run writes nothing ---------------------------


def test_deploy_bad_inputs(made, tmp_path, capsys):
  export = str(made[0] / "export")
  images = tmp_path / "images"
  _images_folder(images, load_dataset(config().data).test_images[:2])
  Image.open(images / "000.png").save(images / "000.jpg")  # the same stem as 000.png
  (images / "folder.png").mkdir()  # a folder named like an image
  for batch in ("0", "-1", "x"):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
      deploy.main([export, str(images), "--batch", batch])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--batch: must be a whole number >= 1" in err[0]
  out = tmp_path / "out"
  assert deploy.main([export, str(images), "--category", "weave", "--out", str(out)]) == 0
  heatmaps = sorted(n for n in os.listdir(out) if n.endswith("_heatmap.png"))
  assert heatmaps == ["000_jpg_heatmap.png", "000_png_heatmap.png", "001_heatmap.png"]
  # A file that cannot be decoded: one line naming it, or skipped and counted when asked.
  data = (images / "001.png").read_bytes()
  (images / "001.png").write_bytes(data[:60])
  capsys.readouterr()
  assert deploy.main([export, str(images), "--category", "weave", "--out", str(out)]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "001.png" in err[0] and "--skip-corrupt" in err[0]
  assert deploy.main([export, str(images), "--category", "weave", "--out", str(out),
                      "--skip-corrupt"]) == 0
  err = capsys.readouterr().err
  assert "skipped 1 of 3 images that cannot be decoded" in err


@pytest.mark.parametrize("override,says", [
    ({"model.channel_mult": ()}, "model.channel_mult must list at least one level"),
    ({"model.attention_rates": (64,)}, "model.attention_rates [64] are not down-sampling rates"),
    ({"evaluate.num_heatmaps": -1}, "evaluate.num_heatmaps must be >= 0"),
    ({"evaluate.grid_columns": 0}, "evaluate.grid_columns must be >= 1"),
])
def test_settings_that_were_accepted_are_refused(override, says, tmp_path):
  with pytest.raises(ConfigError) as e:
    fm_main.run(config(**override), str(tmp_path / "run"), "train")
  assert says in str(e.value)
  assert not (tmp_path / "run").exists()


def test_a_refused_data_configuration_writes_nothing(tmp_path):
  not_a_folder = tmp_path / "data.txt"
  not_a_folder.write_text("")
  run = tmp_path / "run"
  with pytest.raises(DataLayoutError, match="is a file, not a folder of images"):
    fm_main.run(config(**{"data.name": "folder", "data.root": str(not_a_folder)}), str(run),
                "train")
  assert not run.exists()
  with pytest.raises(DataLayoutError, match="does not exist"):
    fm_main.run(config(**{"data.score_dir": str(tmp_path / "none")}), str(run), "score")
  assert not run.exists()


def test_scoring_a_workdirs_own_outputs_leaves_them_out(made, tmp_path):
  run = _copy(made, tmp_path)
  _images_folder(run / "line", load_dataset(config().data).test_images[:2])
  result = fm_main.run(config(**{"data.score_dir": str(run), "data.score_category": "weave"}),
                       str(run), "score")
  assert [os.path.relpath(r["path"], run) for r in result["images"]] == ["line/000.png",
                                                                         "line/001.png"]
  with pytest.raises(DataLayoutError, match="own output folders left out"):
    fm_main.run(config(**{"data.score_dir": str(run / "scores"), "data.score_category": "weave"}),
                str(run), "score")


def test_tilde_workdir_and_warnings_once(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("HOME", str(tmp_path))
  console.new_run()
  for _ in range(3):
    console.warn("the same thing")
  assert capsys.readouterr().err.count("the same thing") == 1
  fm_main.run(config(**{"train.num_steps": 2}), "~/run", "train")
  assert (tmp_path / "run" / "checkpoints").is_dir()
  assert not (REPO / "~").exists()


def test_an_unreadable_lock_is_respected_while_young_and_taken_over_when_old(tmp_path, capsys):
  from fmjax.core import workdir as wd
  from fmjax.core.errors import WorkdirError
  lock = tmp_path / wd.LOCK_NAME
  lock.write_text('{"pid": 12')  # another run between creating its lock and writing it
  with pytest.raises(WorkdirError, match="is being locked by another run"):
    with wd.WorkdirLock(str(tmp_path), "train"):
      pass
  assert lock.read_text() == '{"pid": 12'
  old = os.path.getmtime(lock) - 2 * wd.UNREADABLE_LOCK_SECONDS
  os.utime(lock, (old, old))  # a damaged leftover
  with wd.WorkdirLock(str(tmp_path), "train") as held:
    assert held.held and json.loads(lock.read_text())["pid"] == os.getpid()
  assert "taking over the stale lock" in capsys.readouterr().err


def test_a_fitted_image_score_is_never_borrowed_from_another_category(tmp_path):
  """RADAR's Isolation Forest of a pooled model is fitted per category: scoring images of no
  named category is refused, not scored with the first category's forest."""
  radar = {"data.class_conditional": False, "evaluate.method": "radar",
           "evaluate.radar.image_score": "isolation_forest", "data.val_fraction": 0.0}
  run = tmp_path / "run"
  fm_main.run(config(**radar), str(run), "train")
  folder = _images_folder(tmp_path / "new", load_dataset(config().data).test_images[:2])
  with pytest.raises(ConfigError, match=r"fitted on the normal images of \['brushed', 'tiles', "
                                        r"'weave'\], none of category ''"):
    fm_main.run(config(**radar, **{"data.score_dir": str(folder)}), str(run), "score")
  scored = fm_main.run(config(**radar, **{"data.score_dir": str(folder),
                                          "data.score_category": "tiles"}), str(run), "score")
  assert len(scored["images"]) == 2 and all(np.isfinite(r["score"]) for r in scored["images"])


def test_the_cascade_never_pairs_unfitted_with_fitted_scores():
  """Where the cheap and full scores meet (calibration, evaluation, scoring), a fitted image
  score is refused even when the config check is bypassed."""
  from fmjax.decide import decisions
  radar = config(**{"evaluate.method": "radar", "evaluate.radar.image_score": "isolation_forest",
                    "evaluate.cascade.enabled": True})
  with pytest.raises(ConfigError, match="on-device image scores, not a fitted one"):
    decisions.check_cascade_scores(radar)
  decisions.check_cascade_scores(config(**{"evaluate.cascade.enabled": True}))  # no error


# Settings of config.evaluate that do not change a score or a heatmap, and why. Every other
# key must be in the scorer settings that reused results are compared on: a new setting that
# changes scores and is not recorded fails this test.
NOT_SCORE_KEYS = {
    "batch_size": "how many tiles per call (scores are independent of it, tests/test_session.py)",
    "max_forward_batch": "a memory bound (tests/test_tiling.py: the same scores)",
    "max_image_pixels": "refuses images, changes no score",
    "num_heatmaps": "pictures", "grid_columns": "pictures", "profile_batches": "traces",
    "pixel_metrics_at": "where pixel metrics are measured; evaluations record it themselves",
    "aupimo_fpr": "how AUPIMO is measured; evaluations and study rows record it themselves",
    "sensitivity": "applied to the stored thresholds when deciding",
    "cascade.enabled": "the cascade's bands are recorded with their own K, T and margin",
    "cascade.margin": "", "cascade.num_seeds": "", "cascade.num_times": "",
    "method": "varied below, by method",
}


def _leaves(d, prefix=""):
  for k, v in d.items():
    if hasattr(v, "items"):
      yield from _leaves(v, prefix + k + ".")
    else:
      yield prefix + k, v


def _other_value(key, value):
  alternatives = {"flow_mismatch.aggregator": "mean", "radar.image_score": "isolation_forest",
                  "flow_mismatch.quantile": 0.5, "tile_size": 16, "tile_overlap": 4}
  if key in alternatives:
    return alternatives[key]
  if isinstance(value, bool):
    return not value
  return value + 1 if isinstance(value, int) else value * 0.5 + 0.1


@pytest.mark.parametrize("method", ["flow_mismatch", "reconflow", "dflow", "radar"])
def test_every_setting_that_changes_scores_is_in_the_recorded_settings(method):
  from fmjax import methods
  from fmjax.score.scoring import THRESHOLD_KEYS, scorer_settings
  base = config(**{"evaluate.method": method})
  scorer = methods.scorer(method)
  recorded = lambda c: {k: v for k, v in scorer_settings(c, 4, "abc").items() if k in THRESHOLD_KEYS}
  before = recorded(base)
  for key, value in _leaves(base.evaluate.to_dict()):
    section = key.split(".")[0] if "." in key else None
    if key in NOT_SCORE_KEYS or (section and section != method and section != "cascade"):
      continue
    overrides = {f"evaluate.{key}": _other_value(key, value)}
    if key == "tile_overlap":  # an overlap only exists with tiles
      overrides["evaluate.tile_size"] = 16
      before_key = recorded(config(**{"evaluate.method": method, "evaluate.tile_size": 16}))
    else:
      before_key = before
    used = key not in ("num_seeds", "num_times") or key in scorer.uses
    changed = recorded(config(**{"evaluate.method": method, **overrides})) != before_key
    assert changed == used, (method, key)
  # And the checkpoint: another content is another scorer, whatever the step.
  assert scorer_settings(base, 4, "abc")["checkpoint"] != scorer_settings(base, 4, "abd")["checkpoint"]


def test_a_half_written_log_line_is_dropped_on_resume_and_a_bad_one_is_one_line(made, tmp_path,
                                                                                 capsys):
  """A run killed while appending to its metric log leaves half a line: resuming drops it (it
  is past the checkpoint); a damaged line elsewhere is one line naming the file and line."""
  from fmjax.core import runlog
  run = _copy(made, tmp_path)
  log = run / "train_metrics.jsonl"
  whole = log.read_text()
  log.write_text(whole + '{"step": 5, "lo')
  fm_main.run(config(**{"train.num_steps": 6}), str(run), "train")
  assert "dropped the half-written last line" in capsys.readouterr().err
  steps = [r["step"] for r in runlog.read_metrics(str(run), "train")]
  assert steps == sorted(steps) and steps[-1] == 6 and len(steps) == len(set(steps))
  lines = log.read_text().splitlines()
  log.write_text("\n".join(lines[:1] + ["not json"] + lines[1:]) + "\n")
  with pytest.raises(CorruptFileError, match=r"train_metrics.jsonl line 2 is not a JSON record"):
    runlog.read_metrics(str(run), "train")
