"""The entry point end to end on tiny configs, and its messages for bad input."""

import csv
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from fmjax import main as fm_main
from fmjax.report.metrics import METRIC_KEYS

from conftest import REPO, check_eval_report, tiny_config


def test_train_and_evaluate_writes_report_and_logs(tmp_path):
  config = tiny_config(**{"mesh.num_devices": 2})
  result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  metrics = check_eval_report(tmp_path / "eval", ["weave", "brushed", "tiles"])
  for key in METRIC_KEYS:
    assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics[key] == getattr(result.pooled, key)
  assert len(metrics["images"]) == 12  # 3 categories x (2 normal + 2 anomalous)
  assert set(metrics["per_category"]) == {"weave", "brushed", "tiles"}
  assert metrics["settings"]["checkpoint_step"] == 4
  assert len(os.listdir(tmp_path / "eval" / "heatmaps")) == 2
  assert set(metrics["mean"]) == set(METRIC_KEYS) | {"pixel_aupimo"}
  lines = (tmp_path / "train_metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2, 3, 4]
  # Evaluating again from the checkpoint gives the same scores (same seed).
  again = fm_main.run(config, str(tmp_path), "evaluate")
  assert [i.score for i in again.images] == [i["score"] for i in metrics["images"]]

  # --mode=score on a folder holding weave's 4 test images (the first 4 of the split, saved
  # losslessly in the same order) reproduces their scores: same seeds, same class label.
  from fmjax.data import load_dataset
  dataset = load_dataset(config.data)
  folder = tmp_path / "new_images"
  folder.mkdir()
  for i in range(4):
    Image.fromarray(dataset.test_images[i]).save(folder / f"{i}.png")
  scored = fm_main.run(tiny_config(**{"mesh.num_devices": 2, "data.score_dir": str(folder),
                                      "data.score_category": "weave"}), str(tmp_path), "score")
  assert [r["score"] for r in scored["images"]] == pytest.approx(
      [i["score"] for i in metrics["images"][:4]], rel=1e-5)
  # It decides at the threshold calibrated on weave's held-out normals (score above it) ...
  calibrated = json.loads((tmp_path / "calibration.json").read_text())
  threshold = calibrated["categories"]["weave"]["image"]["0.01"]["threshold"]
  assert scored["threshold"] == threshold and scored["threshold_kind"].startswith("calibrated")
  from fmjax.report.evaluate import score_dir_name
  out = tmp_path / "scores" / score_dir_name(str(folder))
  with open(out / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["decision"] for r in rows] == [
      "anomalous" if i["score"] > threshold else "normal" for i in metrics["images"][:4]]
  assert len(os.listdir(out / "heatmaps")) == 4
  # ... and without a calibration at the evaluation's F1-optimal one (at or above it).
  os.remove(tmp_path / "calibration.json")
  scored = fm_main.run(tiny_config(**{"data.score_dir": str(folder), "data.score_category": "weave"}),
                       str(tmp_path), "score")
  threshold = metrics["per_category"]["weave"]["image_f1_threshold"]
  assert scored["threshold"] == threshold and scored["threshold_kind"] == "F1-optimal (test-tuned)"
  with open(out / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["decision"] for r in rows] == [
      "anomalous" if i["score"] >= threshold else "normal" for i in metrics["images"][:4]]
  with pytest.raises(ValueError, match=r"score_category .* one of \['weave', 'brushed', 'tiles'\]"):
    fm_main.run(tiny_config(**{"data.score_dir": str(folder)}), str(tmp_path), "score")


def test_scores_do_not_depend_on_batch_size_or_devices(tmp_path):
  config = tiny_config(**{"mesh.num_devices": 1, "evaluate.batch_size": 4})
  a = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  config = tiny_config(**{"mesh.num_devices": 8, "evaluate.batch_size": 8,
                          "evaluate.max_forward_batch": 3})
  b = fm_main.run(config, str(tmp_path), "evaluate")
  sa = [i.score for i in a.images]
  sb = [i.score for i in b.images]
  assert sa == pytest.approx(sb, rel=1e-4)


@pytest.mark.parametrize("override,match", [
    ({"evaluate.num_seeds": 0}, "num_seeds \\(K\\) must be >= 1"),
    ({"evaluate.num_times": 0}, "num_times \\(T\\) must be >= 1"),
    ({"evaluate.flow_mismatch.aggregator": "median"}, "Unknown aggregator 'median'"),
    ({"model.norm_groups": 3}, "not divisible by model.norm_groups"),
    ({"evaluate.method": "dflw"}, "evaluate.method must be one of .*got 'dflw'"),
    ({"evaluate.reconflow.t_init": 1.0}, "reconflow.t_init must be in \\[0, 1\\)"),
])
def test_bad_config_values_are_refused(override, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    fm_main.run(tiny_config(**override), str(tmp_path), "train")
  assert not (tmp_path / "checkpoints").exists()


def _cli(*args, cwd=REPO):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "fmjax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_unknown_config_key_is_refused(tmp_path):
  out = _cli("--config", "configs/quickstart.py", "--workdir", str(tmp_path),
             "--config.train.no_such_key=1")
  assert out.returncode != 0
  assert "no_such_key" in out.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_cli_workdir_that_is_a_file(tmp_path):
  path = tmp_path / "afile"
  path.write_text("keep me")
  out = _cli("--config", "configs/quickstart.py", "--workdir", str(path))
  assert out.returncode == 1
  assert "fmjax: error:" in out.stderr and "is a file" in out.stderr
  assert "Traceback" not in out.stderr
  assert path.read_text() == "keep me"


def test_cli_describe_paper_model():
  out = _cli("--config", "configs/mvtec.py", "--mode=describe")
  assert out.returncode == 0, out.stderr
  info = json.loads(out.stdout.strip().splitlines()[-1])
  assert info["parameters"] == 45_289_539
  # XLA's cost analysis of one 128x128 forward pass: about 49.8 GFLOP.
  assert 45e9 < info["flops_per_forward"] < 56e9
  assert info["flops_per_scored_image"] == pytest.approx(100 * info["flops_per_forward"])
  # A training image costs a forward and a backward pass (about twice the forward).
  per_image = info["flops_per_train_step"] / info["train_batch_size"]
  assert 2.5 * info["flops_per_forward"] < per_image < 3.5 * info["flops_per_forward"]
