"""The exported scorer: equal to in-process scoring, free of Flax and the checkpoint, clear refusals."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from fmjax.score.session import ScoringSession
from fmjax import deploy
from fmjax import main as fm_main
from fmjax.data import load_dataset
from fmjax.core.errors import ConfigError

from conftest import REPO, tiny_config

OVERRIDES = {"data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny trained, calibrated, evaluated and exported run; the export copied away from it."""
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config(**OVERRIDES)
  fm_main.run(config, str(workdir), "train_and_evaluate")
  fm_main.run(config, str(workdir), "export")
  copy = tmp_path_factory.mktemp("shipped") / "export"
  shutil.copytree(workdir / "export", copy)
  return workdir, copy, config


def test_exported_scores_equal_in_process_scoring(exported):
  workdir, path, config = exported
  dataset = load_dataset(config.data)
  session = ScoringSession.load(config, str(workdir), dataset.class_names)
  heat, scores, _ = session.score(dataset.test_images, dataset.test_classes)
  scorer = deploy.load(str(path))
  metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
  calibration = json.loads((workdir / "calibration.json").read_text())
  for ci, name in enumerate(dataset.class_names):
    sel = dataset.test_classes == ci
    out = scorer(dataset.test_images[sel], name)
    np.testing.assert_allclose(out.heatmaps, heat[sel], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.scores, scores[sel], rtol=1e-5)
    assert out.threshold == calibration["categories"][name]["image"]["0.5"]["threshold"]
    expected = [i["calibrated_decision"] == "anomalous"
                for i, s in zip(metrics["images"], sel) if s]
    assert out.decisions.tolist() == expected
    normalised = [i["normalised_score"] for i, s in zip(metrics["images"], sel) if s]
    np.testing.assert_allclose(out.normalised, normalised, atol=1e-5)  # carried in the export
  # Any batch size: one image, and an odd count.
  one = scorer(dataset.test_images[:1], "weave")
  np.testing.assert_allclose(one.scores, scores[:1], rtol=1e-5)


_CHILD = """
import json, sys
import jax
import numpy as np
import fmjax.deploy
scorer = fmjax.deploy.load(sys.argv[1])
images = np.load(sys.argv[2])
out = scorer(images, "weave")
banned = [m for m in sys.modules if m == "flax" or m.startswith(("flax.", "fmjax.models", "fmjax.train.loop",
                                                                   "orbax"))]
print(json.dumps({"scores": out.scores.tolist(), "devices": len(scorer.tiles.devices), "banned": banned}))
"""


@pytest.mark.parametrize("devices", [1, 2])
def test_export_runs_without_flax_or_checkpoint_on_one_and_two_devices(exported, tmp_path, devices):
  workdir, path, config = exported
  dataset = load_dataset(config.data)
  images = dataset.test_images[dataset.test_classes == 0][:3]  # odd: padded for 2 devices
  np.save(tmp_path / "images.npy", images)
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
  out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(tmp_path / "images.npy")],
                       capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  child = json.loads(out.stdout.strip().splitlines()[-1])
  assert child["devices"] == devices and child["banned"] == []
  expected = deploy.load(str(path))(images, "weave").scores
  np.testing.assert_allclose(child["scores"], expected, rtol=1e-5)


def test_wrong_size_platform_or_category_is_refused(exported, tmp_path):
  workdir, path, config = exported
  with pytest.raises(deploy.DeployError, match="exported for 16x16 images, not 32x32"):
    deploy.load(str(path), image_size=32)
  scorer = deploy.load(str(path))
  with pytest.raises(deploy.DeployError, match=r"scores 16x16 images whole; got 32x32. .* "
                                               r"--config.evaluate.tile_size"):
    scorer(np.zeros((2, 32, 32, 3), np.uint8), "weave")
  with pytest.raises(deploy.DeployError, match=r"uint8 images \[H,W,3\]; got float32 \[16, 16, 3\]"):
    scorer(np.zeros((2, 16, 16, 3), np.float32), "weave")
  with pytest.raises(deploy.DeployError, match="class-conditional: give category="):
    scorer(np.zeros((2, 16, 16, 3), np.uint8))
  with pytest.raises(deploy.DeployError, match="Unknown category 'cable'"):
    scorer(np.zeros((2, 16, 16, 3), np.uint8), "cable")
  with pytest.raises(deploy.DeployError, match="not an fmjax export"):
    deploy.load(str(tmp_path))
  # An export for CUDA only, loaded on this CPU.
  fm_main.run(tiny_config(**OVERRIDES, **{"export.platforms": "cuda"}), str(workdir), "export")
  with pytest.raises(deploy.DeployError, match="exported for cuda, but this machine runs JAX on cpu"):
    deploy.load(str(workdir / "export"))
  with pytest.raises(ConfigError, match="export.platforms must be"):
    fm_main.run(tiny_config(**{"export.platforms": "gpu"}), str(workdir), "export")
  radar = tiny_config(**OVERRIDES, **{"evaluate.method": "radar",
                                      "evaluate.radar.image_score": "isolation_forest"})
  with pytest.raises(ConfigError, match="cannot be exported"):
    fm_main.run(radar, str(workdir), "export")


def test_deploy_command_prints_scores_and_writes_heatmaps(exported, tmp_path):
  workdir, path, config = exported
  dataset = load_dataset(config.data)
  folder = tmp_path / "line"
  folder.mkdir()
  for i in range(3):
    Image.fromarray(dataset.test_images[i]).save(folder / f"part{i}.png")
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  run = lambda *args: subprocess.run([sys.executable, "-m", "fmjax.deploy", *args], capture_output=True,
                                     text=True, env=env, timeout=600, cwd=tmp_path)
  out = run(str(path), str(folder), "--category=weave", f"--out={tmp_path / 'maps'}")
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l.split("\t") for l in out.stdout.splitlines() if not l.startswith("#")]
  expected = deploy.load(str(path))(dataset.test_images[:3], "weave")
  assert [os.path.basename(p) for p, *_ in lines] == ["part0.png", "part1.png", "part2.png"]
  for (_, said, size), score, flag, normalised in zip(lines, expected.scores, expected.decisions,
                                                     expected.normalised):
    value, decision, shown = said.split()
    assert size == "16x16"
    assert float(value) == pytest.approx(float(score), rel=1e-5)
    assert decision == ("anomalous" if flag else "normal")
    assert float(shown) == pytest.approx(normalised, abs=1e-5)
  maps = tmp_path / "maps"
  assert sorted(os.listdir(maps)) == sorted(
      [f"part{i}_{kind}.png" for i in range(3) for kind in ("heatmap", "mask")] +
      ["regions.json", "scores.csv"])
  # Masks: the pixels above the exported pixel threshold; regions.json and scores.csv link them.
  pixel = json.loads((path / "manifest.json").read_text())["thresholds"]["weave"]["pixel"]
  described = json.loads((maps / "regions.json").read_text())["images"]
  with open(maps / "scores.csv") as f:
    table = list(csv.DictReader(f))
  for i, (row, entry) in enumerate(zip(table, described)):
    mask = np.asarray(Image.open(maps / row["mask"]))
    np.testing.assert_array_equal(mask, np.where(expected.heatmaps[i] > pixel, 255, 0))
    assert row["mask"] == entry["mask"] == f"part{i}_mask.png"
    assert int(row["num_regions"]) == len(entry["regions"])
    assert sum(r["area"] for r in entry["regions"]) == int((mask > 0).sum())
    assert float(row["score"]) == pytest.approx(float(expected.scores[i]), rel=1e-6)
  bad = run(str(path), str(tmp_path / "missing"))
  assert bad.returncode == 1 and "neither an image file nor a folder" in bad.stderr


def test_a_tiled_export_scores_images_of_any_size_as_evaluation_does(exported, tmp_path):
  """Exported with evaluate.tile_size, the scorer takes images of mixed, non-square sizes (and
  a batch of one size), and gives the heatmaps and scores of in-process tiled scoring."""
  workdir, _, _ = exported
  config = tiny_config(**OVERRIDES, **{"evaluate.tile_size": 8, "evaluate.tile_overlap": 2,
                                       "evaluate.smoothing_sigma": 0.7})
  fm_main.run(config, str(workdir), "export")
  scorer = deploy.load(str(workdir / "export"))
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, shape + (3,), dtype=np.uint8)
            for shape in [(16, 16), (21, 34), (8, 5), (40, 24)]]
  session = ScoringSession.load(config, str(workdir))
  heat, scores, _ = session.score(images, np.zeros(4, np.int32))
  out = scorer(images, "weave")
  assert [h.shape for h in out.heatmaps] == [im.shape[:2] for im in images]
  for mine, theirs in zip(out.heatmaps, heat):
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.scores, scores, rtol=1e-5)
  same = scorer(np.stack([images[1]] * 3), "weave")  # an array of one size
  assert same.heatmaps.shape == (3, 21, 34)
  np.testing.assert_allclose(same.scores, scores[1], rtol=1e-5)
  # The command on a folder of mixed sizes, read at their own size.
  folder = tmp_path / "mixed"
  folder.mkdir()
  for i, image in enumerate(images):
    Image.fromarray(image).save(folder / f"part{i}.png")
  out = subprocess.run([sys.executable, "-m", "fmjax.deploy", str(workdir / "export"), str(folder),
                        "--category=weave", "--resize=native", f"--out={tmp_path / 'maps'}"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l.split("\t") for l in out.stdout.splitlines() if not l.startswith("#")]
  assert [size for *_, size in lines] == [f"{im.shape[1]}x{im.shape[0]}" for im in images]
  np.testing.assert_allclose([float(said.split()[0]) for _, said, _ in lines], scores, rtol=1e-5)
  for i, image in enumerate(images):
    with Image.open(tmp_path / "maps" / f"part{i}_heatmap.png") as im:
      zoom = max(1, 256 // max(image.shape[:2]))
      assert im.size == (image.shape[1] * zoom, image.shape[0] * zoom)  # its aspect ratio


def test_calls_are_padded_to_a_few_batch_shapes(exported):
  """A call of n tiles runs at the devices times a power of two (at most 8 per device), so the
  StableHLO compiles for a few shapes, pads at most 2x, and `warm_up` compiles them all."""
  workdir, path, config = exported
  scorer = deploy.load(str(path), devices=jax.local_devices()[:2])
  assert [scorer.tiles.bucket(n) for n in (1, 2, 3, 4, 5, 9, 16)] == [2, 2, 4, 4, 8, 16, 16]
  one = deploy.load(str(path), devices=jax.local_devices()[:1])
  assert [one.tiles.bucket(n) for n in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
  one.warm_up()
  images = load_dataset(config.data).test_images[:3]
  np.testing.assert_allclose(one(images, "weave").scores,
                             np.concatenate([one(images[i:i + 1], "weave").scores for i in range(3)]),
                             rtol=1e-6)
