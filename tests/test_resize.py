"""Images at their own sizes: data.resize, datasets of mixed sizes, crop training, evaluation."""

import csv
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fmjax import configlib
from fmjax import main as fm_main
from fmjax.core.errors import ConfigError
from fmjax.data import load_dataset
from fmjax.data import pipeline
from fmjax.data.decode import parse_resize, resized_size
from fmjax.report.metrics import compute_metrics
from fmjax.score import maps
from fmjax.score.session import ScoringSession
from fmjax.train import loop as train

from conftest import REPO, tiny_config

# (height, width) of the folder's images: non-square, none a multiple of the stride.
TRAIN_SHAPES = [(23, 37), (30, 19), (26, 26), (19, 41), (35, 22), (21, 29), (28, 33), (24, 20)]
TEST_SHAPES = [(25, 31), (33, 18), (20, 27), (29, 36)]


def _texture(rng, h, w):
  """A striped, noisy texture (uint8 RGB [h,w,3])."""
  y, x = np.mgrid[:h, :w]
  base = 120 + 60 * np.sin(x / 2.0 + 0.3 * y)
  image = base[..., None] + rng.normal(0, 8, (h, w, 3))
  return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """An MVTec-layout folder "parts" with images of mixed sizes; test defects are bright squares
  with their masks."""
  root = tmp_path_factory.mktemp("mixed")
  rng = np.random.default_rng(0)
  for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
    (root / "parts" / sub).mkdir(parents=True)
  for i, (h, w) in enumerate(TRAIN_SHAPES):
    Image.fromarray(_texture(rng, h, w)).save(root / "parts/train/good" / f"{i:03d}.png")
  for i, (h, w) in enumerate(TEST_SHAPES):
    image = _texture(rng, h, w)
    if i % 2 == 0:
      Image.fromarray(image).save(root / "parts/test/good" / f"{i:03d}.png")
      continue
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3:h // 3 + 5, w // 2:w // 2 + 4] = 255
    image[mask > 0] = 250
    Image.fromarray(image).save(root / "parts/test/spot" / f"{i:03d}.png")
    Image.fromarray(mask).save(root / "parts/ground_truth/spot" / f"{i:03d}_mask.png")
  return root


def _config(root, **overrides):
  return tiny_config(**{"data.name": "folder", "data.root": str(root), "data.resize": "native",
                        "data.val_fraction": 0.0, "data.crop_size": 16, **overrides})


@pytest.mark.parametrize("rule,size,expected", [
    ("square", (300, 200), (128, 128)), ("native", (300, 200), (300, 200)),
    ("scale:0.5", (301, 200), (150, 100)), ("long_side:100", (300, 200), (100, 67)),
    ("long_side:100", (200, 300), (67, 100)), ("scale:2", (3, 1), (6, 2))])
def test_resize_rules_keep_the_aspect_ratio(rule, size, expected):
  assert resized_size(*size, 128, rule) == expected


@pytest.mark.parametrize("rule", ["squre", "scale:", "scale:0", "scale:-1", "long_side:1.5",
                                  "long_side:x", "native:2", ""])
def test_a_misspelt_resize_is_one_line_naming_the_rules(rule):
  with pytest.raises(ValueError, match=r"is not one of square, scale:<f>, long_side:<n>, native"):
    parse_resize(rule)
  with pytest.raises(ConfigError, match="data.resize"):
    configlib.validate(tiny_config(**{"data.name": "folder", "data.root": "/x", "data.resize": rule}))


def test_native_and_scaled_datasets_hold_each_image_at_its_size(folder):
  native = load_dataset(_config(folder).data)
  assert native.train_images.dtype == object
  assert [im.shape for im in native.train_images] == [s + (3,) for s in TRAIN_SHAPES]
  order = [0, 2, 1, 3]  # test/good, then test/spot
  assert [m.shape for m in native.test_masks] == [TEST_SHAPES[i] for i in order]  # masks follow
  assert [int(m.sum()) for m in native.test_masks] == [0, 0, 20, 20]
  half = load_dataset(_config(folder, **{"data.resize": "scale:0.5"}).data)
  assert [im.shape[:2] for im in half.train_images] == [
      (int(round(h * 0.5)), int(round(w * 0.5))) for h, w in TRAIN_SHAPES]
  assert [m.shape for m in half.test_masks] == [im.shape[:2] for im in half.test_images]
  square = load_dataset(_config(folder, **{"data.resize": "square"}).data)
  assert square.train_images.shape == (8, 16, 16, 3)  # stacked, as before


def test_crops_are_a_pure_function_of_seed_and_index(folder):
  dataset = load_dataset(_config(folder).data)
  source = pipeline.ArraySource(dataset.train_images, dataset.train_classes)
  stream = pipeline.train_dataset(source, 4, seed=3, crop_size=16)
  first = [stream[s]["image"] for s in range(5)]
  again = pipeline.train_dataset(source, 4, seed=3, crop_size=16)
  for s in (4, 0, 2):  # any order, any index
    np.testing.assert_array_equal(again[s]["image"], first[s])
  assert all(b.shape == (4, 16, 16, 3) for b in first)
  # Every crop is a window of one of the training images.
  crop = first[0][0]
  assert any(np.array_equal(im[y:y + 16, x:x + 16], crop) for im in dataset.train_images
             for y in range(im.shape[0] - 15) for x in range(im.shape[1] - 15))
  other = pipeline.train_dataset(source, 4, seed=4, crop_size=16)
  assert not np.array_equal(other[0]["image"], first[0])


def test_crop_training_resumes_bit_exactly(folder, tmp_path):
  config = _config(folder, **{"train.num_steps": 4, "mesh.num_devices": 2})
  dataset = load_dataset(config.data)
  full = train.train(config, str(tmp_path / "full"), dataset)
  train.train(_config(folder, **{"train.num_steps": 2, "mesh.num_devices": 2}),
              str(tmp_path / "split"), dataset)
  resumed = train.train(config, str(tmp_path / "split"), dataset)
  assert int(resumed.step) == 4
  for a, b in zip(jax.tree.leaves(jax.device_get(full)), jax.tree.leaves(jax.device_get(resumed))):
    np.testing.assert_array_equal(a, b)


def test_a_mixed_size_dataset_trains_and_evaluates_at_native_size(folder, tmp_path):
  config = _config(folder, **{"evaluate.tile_size": 16, "evaluate.tile_overlap": 4,
                              "train.num_steps": 3})
  result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  assert np.isfinite(result.pooled.pixel_auroc) and np.isfinite(result.pooled.pixel_aupro)
  with open(tmp_path / "eval" / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  names = [r["path"].rsplit("/", 1)[-1] for r in rows]
  sizes = {n: (int(r["height"]), int(r["width"])) for n, r in zip(names, rows)}
  assert sizes == {f"{i:03d}.png": s for i, s in enumerate(TEST_SHAPES)}
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert [(i["height"], i["width"]) for i in metrics["images"]] == [sizes[n] for n in names]
  with Image.open(tmp_path / "eval" / "grid_parts.png") as im:
    assert im.width > 100 and im.height > 100


def _fmjax(args, cwd):
  out = subprocess.run([sys.executable, "-m", "fmjax.main", *args], capture_output=True,
                       text=True, cwd=cwd, timeout=600,
                       env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  return out.returncode, out.stderr.strip().splitlines()


@pytest.mark.parametrize("overrides,message", [
    (["--config.data.crop_size=14"], "data.crop_size 14 must be a multiple of the model's stride 4 "
                                      "(nearest valid: 12 or 16; 0: whole images)"),
    (["--config.data.crop_size=24"], "data.crop_size 24 is larger than the smallest training "
                                      "image (19x30, "),
    (["--config.data.crop_size=0"], "The training images have 8 sizes"),
    (["--config.data.resize=natve"], "data.resize 'natve' is not one of"),
])
def test_bad_crops_and_resizes_are_one_fmjax_line(folder, tmp_path, overrides, message):
  code, err = _fmjax(["--config=configs/quickstart.py", f"--workdir={tmp_path}", "--mode=train",
                      "--config.data.name=folder", f"--config.data.root={folder}",
                      "--config.data.resize=native", "--config.data.val_fraction=0", *overrides],
                     REPO)
  text = "\n".join(err)  # one line, or a config's list of problems under one "fmjax: error:"
  assert code == 1 and err[0].startswith("fmjax: error: ") and "Traceback" not in text, err
  assert message in text, err


@pytest.mark.parametrize("height,width", [(25, 31), (33, 18), (16, 40), (64, 64)])
def test_a_map_is_enlarged_as_scipy_zooms_it(height, width):
  heatmap = np.random.default_rng(height).random((16, 16)).astype(np.float32)
  oracle = ndimage.zoom(heatmap.astype(np.float64), (height / 16, width / 16), order=1,
                        grid_mode=True, mode="nearest")  # half-pixel centres, edges held
  np.testing.assert_allclose(maps.resize_map(heatmap, height, width), oracle, atol=1e-6)


def test_pixel_metrics_at_native_size_compare_enlarged_maps_with_the_files_masks(folder, tmp_path):
  """A squashed (16x16) run measured at the files' sizes: the image metrics are the scored
  run's, and the pixel metrics are those of each map enlarged to its file's size against the
  masks read at that size (the native dataset's masks)."""
  config = _config(folder, **{"data.resize": "square", "data.crop_size": 0, "train.num_steps": 2})
  fm_main.run(config, str(tmp_path), "train")
  scored = fm_main.run(config, str(tmp_path), "evaluate")
  config.evaluate.pixel_metrics_at = "native"
  native = fm_main.run(config, str(tmp_path), "evaluate")
  assert native.pooled.image_auroc == scored.pooled.image_auroc
  dataset = load_dataset(config.data)
  heatmaps, scores, _ = ScoringSession.load(config, str(tmp_path)).score_split(dataset, "test")
  assert heatmaps.shape[1:] == (16, 16)
  native_masks = load_dataset(_config(folder).data).test_masks
  enlarged = [ndimage.zoom(m.astype(np.float64), (mask.shape[0] / 16, mask.shape[1] / 16), order=1,
                           grid_mode=True, mode="nearest").astype(np.float32)
              for m, mask in zip(heatmaps, native_masks)]
  expected = compute_metrics(scores, dataset.test_labels, enlarged, list(native_masks))
  for key in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro"):
    np.testing.assert_allclose(getattr(native.pooled, key), expected[key], atol=1e-4)
  assert native.pooled.pixel_auroc != scored.pooled.pixel_auroc
  assert (native.settings.pixel_metrics_at, scored.settings.pixel_metrics_at) == ("native", "scored")
  assert "each test file's own size" in (tmp_path / "eval" / "metrics.md").read_text()


def test_mixed_sizes_calibrate_and_cascade(folder, tmp_path):
  """The calibration run and the cascade take images of many sizes: the held-out thresholds are
  the order statistics of the held-out images' scores, and the images the cascade rescored are
  those whose cheap score falls in its band, both recomputed here from ScoringSession.score."""
  config = _config(folder, **{
      "evaluate.tile_size": 16, "evaluate.tile_overlap": 4, "train.num_steps": 3,
      "data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5",
      "evaluate.cascade.enabled": True, "evaluate.cascade.num_seeds": 1,
      "evaluate.cascade.num_times": 1, "evaluate.cascade.margin": 0.05})
  result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  saved = json.loads((tmp_path / "calibration.json").read_text())
  dataset = load_dataset(config.data)
  assert len({im.shape for im in dataset.val_images}) == 2  # two held-out sizes
  session = ScoringSession.load(config, str(tmp_path), dataset.class_names)
  _, val_scores, _ = session.score(dataset.val_images, dataset.val_classes)
  entry = saved["categories"]["parts"]
  assert entry["num_held_out"] == 2
  # 2 scores at a false-alarm rate of 0.5: the threshold is the lower one (one of two above it
  # would be a rate of 0.5; fmjax's rule is the smallest t with at most that rate above it).
  assert entry["image"]["0.5"]["threshold"] == pytest.approx(np.sort(val_scores)[0], rel=1e-6)
  from fmjax.decide import cascade
  cheap_ec = cascade.cheap_eval_config(config.evaluate)
  _, test_cheap, _ = session.score(dataset.test_images, dataset.test_classes, cheap_ec)
  band = saved["cascade"]["categories"]["parts"]
  inside = (test_cheap > band["low"]) & (test_cheap <= band["high"])
  assert result.cascade.rescored == int(inside.sum())
  assert sorted((i.height, i.width) for i in result.images) == sorted(TEST_SHAPES)
