"""The ONNX export (export.format=onnx): numpy seeds equal JAX's, model.onnx on onnxruntime
scores as evaluation does, and fmjax.deploy runs it with jax blocked."""

import collections
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from fmjax import deploy
from fmjax import main as fm_main
from fmjax.core import threefry
from fmjax.core.errors import ConfigError
from fmjax.data import load_dataset
from fmjax.methods import mismatch
from fmjax.score.session import ScoringSession

from conftest import REPO, serving, tiny_config

pytest.importorskip("onnxruntime", reason="the ONNX tests need onnxruntime (pip install -e '.[onnx]')")
pytest.importorskip("jax2onnx", reason="the ONNX export needs jax2onnx "
                                       "(pip install --no-deps jax2onnx==0.17.1)")

# Smoothed heatmaps (sigma 1 pixel), so that the graph's smoothing is checked too; forward
# batches of 2 samples: one image's K = 2 seeds at one time, so the graph unrolls T = 2 chunks
# of times and fmjax.deploy feeds it one image per run.
OVERRIDES = {"data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5",
             "evaluate.smoothing_sigma": 1.0, "evaluate.max_forward_batch": 2}


def test_threefry_hash_is_jax_bit_for_bit():
  rng = np.random.default_rng(0)
  x1, x2 = (rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32) for _ in range(2))
  for k1, k2 in [(0, 0), (0, 42), (2**32 - 1, 12345)]:
    ours = np.concatenate(threefry.threefry_2x32(k1, k2, x1, x2))
    theirs = jax.extend.random.threefry_2x32(jnp.array([k1, k2], jnp.uint32),
                                             jnp.concatenate([jnp.asarray(x1), jnp.asarray(x2)]))
    np.testing.assert_array_equal(ours, np.asarray(theirs))
  ids = np.array([0, 7, 2**31 - 1], np.int32)
  keys = np.stack(threefry.fold_in(threefry.key(3), ids), 1)
  expected = np.stack([jax.random.key_data(jax.random.fold_in(jax.random.key(3), i)) for i in ids])
  np.testing.assert_array_equal(keys, expected)


def test_erfinv_equals_scipy():
  x = np.linspace(-0.9999999, 0.9999999, 400001).astype(np.float32)
  # Giles' float32 approximation: within 6e-6 relative in the far tails, 1e-6 inside 0.99.
  np.testing.assert_allclose(threefry.erfinv(x), scipy.special.erfinv(x.astype(np.float64)),
                             rtol=1e-5, atol=1e-7)
  inner = np.abs(x) < 0.99
  np.testing.assert_allclose(threefry.erfinv(x[inner]),
                             scipy.special.erfinv(x[inner].astype(np.float64)), rtol=1e-6, atol=1e-7)
  assert threefry.erfinv(np.float32([1.0, -1.0])).tolist() == [np.inf, -np.inf]


@pytest.mark.parametrize("seed", [0, 11])
def test_numpy_seeds_equal_the_seeds_evaluation_draws(seed):
  ids = np.array([0, 5, 2**31 - 1, 123456789], np.int32)
  drawn = mismatch.draw_seeds(jax.random.key(seed), jnp.asarray(ids), 3, (5, 7, 3))
  np.testing.assert_allclose(threefry.image_seeds(seed, ids, 3, (5, 7, 3)), drawn, rtol=0,
                             atol=4.8e-7)  # two units in the last place of values up to 4
  origins = np.array([[0, 0], [8, 4], [100, 3], [1, 1]], np.int32)
  drawn = mismatch.positional_seeds(jax.random.key(seed), jnp.asarray(ids), 2, (4, 6, 3),
                                    jnp.asarray(origins))
  np.testing.assert_allclose(threefry.positional_seeds(seed, ids, 2, (4, 6, 3), origins), drawn,
                             rtol=0, atol=4.8e-7)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny trained, calibrated, evaluated run with both exports, copied away from it."""
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config(**OVERRIDES)
  fm_main.run(config, str(workdir), "train_and_evaluate")
  exports = {}
  for fmt in ("stablehlo", "onnx"):
    fm_main.run(tiny_config(**OVERRIDES, **{"export.format": fmt}), str(workdir), "export")
    exports[fmt] = tmp_path_factory.mktemp(fmt) / "export"
    shutil.copytree(workdir / "export", exports[fmt])
  return workdir, exports, config


def test_onnx_export_scores_as_evaluation_and_the_stablehlo_export(run):
  workdir, exports, config = run
  assert sorted(os.listdir(exports["onnx"])) == ["manifest.json", "model.onnx"]
  manifest = json.loads((exports["onnx"] / "manifest.json").read_text())
  assert manifest["format"] == "onnx" and manifest["onnx"]["inputs"]["seeds"] == "float32 [B,2,16,16,3]"
  assert list(manifest["onnx"]["outputs"]) == ["tile_heatmaps", "heatmaps", "scores",
                                               "normalised", "decisions"]
  # No loops in the graph (onnxruntime runs a loop's body without prepacked weights).
  import onnx
  graph = onnx.load(str(exports["onnx"] / "model.onnx")).graph
  ops = collections.Counter(node.op_type for node in graph.node)
  assert not set(ops) & {"Loop", "Scan", "If"} and ops["Conv"] >= 10
  # The U-Net is channels-first inside: of each velocity call's convolutions (20 or more in
  # this test's U-Net) only the first reads a transposed activation (the images); an NHWC
  # U-Net's graph transposes the input of each.
  made_by = {out: node.op_type for node in graph.node for out in node.output}
  after_transpose = [n for n in graph.node
                     if n.op_type == "Conv" and made_by.get(n.input[0]) == "Transpose"]
  assert 1 <= len(after_transpose) <= ops["Conv"] // 20, (len(after_transpose), ops["Conv"])
  assert manifest["onnx"]["images_per_call"] == 1
  dataset = load_dataset(config.data)
  session = ScoringSession.load(config, str(workdir), dataset.class_names)
  heat, scores, _ = session.score(dataset.test_images, dataset.test_classes)
  onnx, hlo = deploy.load(str(exports["onnx"])), deploy.load(str(exports["stablehlo"]))
  assert onnx.format == "onnx" and hlo.format == "stablehlo"
  for ci, name in enumerate(dataset.class_names):
    sel = dataset.test_classes == ci
    ours, theirs = onnx(dataset.test_images[sel], name), hlo(dataset.test_images[sel], name)
    np.testing.assert_allclose(ours.heatmaps, heat[sel], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.scores, scores[sel], rtol=1e-4)
    assert ours.decisions.tolist() == theirs.decisions.tolist()
    assert ours.threshold == theirs.threshold
    np.testing.assert_allclose(ours.normalised, theirs.normalised, atol=1e-4)
  # The graph's own image outputs (for runtimes without fmjax) equal the host's finishing.
  import onnxruntime
  session_ort = onnxruntime.InferenceSession(str(exports["onnx"] / "model.onnx"))
  assert [o.name for o in session_ort.get_outputs()] == [
      "tile_heatmaps", "heatmaps", "scores", "normalised", "decisions"]
  for ci, name in enumerate(dataset.class_names):
    images = dataset.test_images[dataset.test_classes == ci]
    expected = hlo(images, name)
    feed = onnx.tiles.feed(images, np.full(len(images), ci), deploy.image_ids(images),
                           np.zeros((len(images), 2), np.int32))
    _, heat_g, scores_g, normalised_g, decisions_g = session_ort.run(None, feed)
    np.testing.assert_allclose(heat_g, expected.heatmaps, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores_g, expected.scores, rtol=1e-4)
    np.testing.assert_allclose(normalised_g, expected.normalised, atol=1e-4)
    assert decisions_g.tolist() == expected.decisions.tolist()
  # One image and an odd batch: the graph's batch is symbolic.
  for count in (1, 3):
    np.testing.assert_allclose(onnx(dataset.test_images[:count], "weave").scores, scores[:count],
                               rtol=1e-4)


@pytest.mark.parametrize("k,t,forward_batch,side,expected", [
    (4, 4, 512, 32, 512 // 16),        # the quickstart: 32 images of 16 samples
    (10, 10, 800, 32, 512 // 100),     # cpu_bottle: the pixel budget (512 samples of 32x32) binds
    (10, 10, 400, 128, 1),             # the paper model: one image (100 samples) per run, as before
    (10, 10, 40, 32, 1),               # times in chunks of 4: one image fills a call
    (3, 10, 400, 16, 400 // 30),       # 16x16: the forward batch binds
])
def test_images_per_onnx_run(k, t, forward_batch, side, expected):
  from ml_collections import ConfigDict
  from fmjax.decide import onnx_export
  ec = ConfigDict({"num_seeds": k, "num_times": t, "max_forward_batch": forward_batch})
  assert onnx_export.images_per_call(ec, (side, side)) == expected


_BLOCKED = """
import json, runpy, sys
for name in ("jax", "jaxlib", "flax", "orbax", "jax2onnx"):
  sys.modules[name] = None  # importing any of them raises ImportError
# The Python API on whole images needs onnxruntime and numpy only: no scipy, Pillow, matplotlib.
for name in ("scipy", "PIL", "matplotlib"):
  sys.modules[name] = None
import numpy as np
import fmjax.deploy
scorer = fmjax.deploy.load(sys.argv[1])
out = scorer(np.load(sys.argv[2]), "weave")
print(json.dumps({"scores": out.scores.tolist(), "heat": float(np.abs(out.heatmaps).sum()),
                  "normalised": out.normalised.tolist()}))
for name in ("scipy", "PIL", "matplotlib"):  # the command reads files and draws pictures
  del sys.modules[name]
sys.argv = ["fmjax.deploy", sys.argv[1], sys.argv[3], "--category=weave", "--out=" + sys.argv[4]]
runpy.run_module("fmjax.deploy", run_name="__main__")
"""


def test_onnx_export_runs_with_jax_blocked(run, tmp_path):
  workdir, exports, config = run
  dataset = load_dataset(config.data)
  images = dataset.test_images[dataset.test_classes == 0][:3]
  np.save(tmp_path / "images.npy", images)
  from PIL import Image
  (tmp_path / "line").mkdir()
  Image.fromarray(images[0]).save(tmp_path / "line" / "part0.png")
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  out = subprocess.run([sys.executable, "-c", _BLOCKED, str(exports["onnx"]),
                        str(tmp_path / "images.npy"), str(tmp_path / "line"), str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  child = json.loads(lines[0])
  expected = deploy.load(str(exports["stablehlo"]))(images, "weave")
  np.testing.assert_allclose(child["scores"], expected.scores, rtol=1e-4)
  assert child["heat"] == pytest.approx(float(np.abs(expected.heatmaps).sum()), rel=1e-4)
  np.testing.assert_allclose(child["normalised"], expected.normalised, atol=1e-4)
  assert lines[1].startswith("# ") and ": checkpoint " in lines[1]  # which model runs
  path, said, size = lines[2].split("\t")  # the command's line for part0.png
  assert path.endswith("part0.png") and size == "16x16"
  assert float(said.split()[0]) == pytest.approx(float(expected.scores[0]), rel=1e-4)
  assert (tmp_path / "out" / "part0_heatmap.png").is_file()


def test_a_tiled_onnx_export_scores_images_of_any_size_as_evaluation_does(run, tmp_path):
  workdir, _, _ = run
  config = tiny_config(**{**OVERRIDES, "evaluate.tile_size": 8, "evaluate.tile_overlap": 2,
                          "evaluate.smoothing_sigma": 0.7, "export.format": "onnx"})
  fm_main.run(config, str(workdir), "export")
  scorer = deploy.load(str(workdir / "export"))
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, shape + (3,), dtype=np.uint8)
            for shape in [(16, 16), (21, 34), (8, 5)]]
  heat, scores, _ = ScoringSession.load(config, str(workdir)).score(images, np.zeros(3, np.int32))
  out = scorer(images, "weave")
  for mine, theirs in zip(out.heatmaps, heat):
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out.scores, scores, rtol=1e-4)


def test_onnx_export_without_smoothing_gives_the_raw_heatmaps_as_heatmaps(run):
  workdir, _, config = run
  fm_main.run(tiny_config(**{**OVERRIDES, "evaluate.smoothing_sigma": 0.0, "export.format": "onnx"}),
              str(workdir), "export")
  import onnxruntime
  session = onnxruntime.InferenceSession(str(workdir / "export" / "model.onnx"))
  scorer = deploy.load(str(workdir / "export"))
  images = load_dataset(config.data).test_images[:2]
  feed = scorer.tiles.feed(images, np.zeros(2), deploy.image_ids(images), np.zeros((2, 2)))
  raw, heat, scores, _, _ = session.run(None, feed)
  np.testing.assert_array_equal(raw, heat)
  np.testing.assert_allclose(scores, scorer(images, "weave").scores, rtol=1e-5)


def test_onnx_export_refusals(run, tmp_path):
  workdir, exports, _ = run
  broken = tmp_path / "broken"
  shutil.copytree(exports["onnx"], broken)
  (broken / "model.onnx").write_bytes(b"not a model")
  with pytest.raises(deploy.DeployError, match="Cannot load .*model.onnx"):
    deploy.load(str(broken))
  if importlib.util.find_spec("openvino") is not None:
    with pytest.raises(deploy.DeployError, match="Cannot load .*model.onnx into OpenVINO: "):
      deploy.load(str(broken), runtime="openvino")
  (broken / "model.onnx").unlink()
  with pytest.raises(deploy.DeployError, match="ONNX export without model.onnx"):
    deploy.load(str(broken))
  with pytest.raises(ConfigError, match="export.format must be one of stablehlo, onnx, got 'tflite'"):
    fm_main.run(tiny_config(**{"export.format": "tflite"}), str(workdir), "export")
  other = tiny_config(**OVERRIDES, **{"export.format": "onnx", "evaluate.method": "reconflow"})
  with pytest.raises(ConfigError, match="exports evaluate.method=flow_mismatch; got reconflow"):
    fm_main.run(other, str(workdir), "export")


_SERVE_BLOCKED = """
import runpy, sys
for name in ("jax", "jaxlib", "flax", "orbax", "jax2onnx"):
  sys.modules[name] = None
sys.argv = ["fmjax.serve"] + sys.argv[1:]
runpy.run_module("fmjax.serve", run_name="__main__")
"""


def _predict(url: str, images, category: str) -> dict:
  """The service's answer to POST /predict of `images` as PNG files."""
  import io

  import httpx
  from PIL import Image
  pngs = []
  for i, image in enumerate(images):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    pngs.append(("images", (f"part{i}.png", buffer.getvalue(), "image/png")))
  return httpx.post(url + "/predict", files=pngs, data={"category": category}, timeout=300).json()


def test_the_service_serves_an_onnx_export_with_jax_blocked(run, tmp_path):
  import httpx
  workdir, exports, config = run
  dataset = load_dataset(config.data)
  images = dataset.test_images[dataset.test_classes == 0]
  direct = deploy.load(str(exports["stablehlo"]))(images, "weave")
  with serving([sys.executable, "-c", _SERVE_BLOCKED, str(exports["onnx"])],
               tmp_path / "serve.log") as url:
    health = httpx.get(url + "/health", timeout=60).json()
    assert health["format"] == "onnx" and health["categories"] == ["weave", "brushed", "tiles"]
    assert health["runtime"].startswith("onnxruntime ")
    answer = _predict(url, images, "weave")
    np.testing.assert_allclose([a["score"] for a in answer["images"]], direct.scores, rtol=1e-4)
    assert [a["decision"] for a in answer["images"]] == [
        "anomalous" if d else "normal" for d in direct.decisions]


def _bf16_after_the_unet(tiles, output: str) -> list[str]:
  """The nodes of OpenVINO's compiled graph (full batch) between `output` and the U-Net's
  last convolutions that compute in bfloat16 or round float32 to it (moving bf16 data from
  one layout to another aside)."""
  compiled, _ = tiles._requests[tiles.batch]  # pylint: disable=protected-access
  graph = compiled.get_runtime_model()
  info = lambda node, key: node.get_rt_info()[key].astype(str)
  todo = [next(r for r in graph.get_results() if r.get_friendly_name().startswith(output + "/"))]
  seen, found = set(), []
  while todo:
    for port in todo.pop().inputs():
      node = port.get_source_output().get_node()
      kind = info(node, "layerType")
      if node.get_friendly_name() in seen or kind == "Convolution":
        continue
      seen.add(node.get_friendly_name())
      takes = [info(p.get_source_output().get_node(), "outputPrecisions") for p in node.inputs()]
      rounds = "bf16" in info(node, "outputPrecisions") and any("f32" in t for t in takes)
      computes = info(node, "runtimePrecision") == "bf16" and kind not in ("Reorder", "Reshape")
      if rounds or computes:
        found.append(f"{kind} {info(node, 'originalLayersNames')}")
      todo.append(node)
  return found


def test_openvino_runs_the_export_as_onnxruntime_does(run, tmp_path):
  """fmjax.deploy on OpenVINO (`runtime="openvino"`): in f32 (its accuracy mode) the heatmaps,
  scores and decisions of onnxruntime, whole images and tiles; in bf16, where the CPU has bf16
  instructions, heatmaps computed in bfloat16 (not equal to f32's, within 5% of the largest);
  without them OpenVINO computes in f32 and says so. The command names the runtime."""
  pytest.importorskip("openvino", reason="pip install openvino")
  workdir, exports, config = run
  images = load_dataset(config.data).test_images[:3]
  expected = deploy.load(str(exports["onnx"]))(images, "weave")
  scorer = deploy.load(str(exports["onnx"]), runtime="openvino")
  assert scorer.tiles.runtime.startswith("OpenVINO ") and scorer.tiles.precision == "f32"
  got = scorer(images, "weave")
  np.testing.assert_allclose(got.heatmaps, expected.heatmaps, rtol=1e-4,
                             atol=1e-6 * np.abs(expected.heatmaps).max())
  np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-4)
  np.testing.assert_array_equal(got.decisions, expected.decisions)
  ids, origins, category = deploy.image_ids(images), np.zeros((3, 2), np.int32), np.zeros(3, np.int32)
  np.testing.assert_allclose(scorer.tiles(images, category, ids, origins),
                             deploy.load(str(exports["onnx"])).tiles(images, category, ids, origins),
                             rtol=1e-4, atol=1e-6 * np.abs(expected.heatmaps).max())
  # OpenVINO compiles one graph per batch, every shape fixed, and pads a run to the next power
  # of two (at most the export's images per call): the same scores as onnxruntime's, unpadded.
  four = tmp_path / "four"
  shutil.copytree(exports["onnx"], four)
  manifest = json.loads((four / "manifest.json").read_text())
  manifest["onnx"]["images_per_call"] = 4
  (four / "manifest.json").write_text(json.dumps(manifest))
  five = load_dataset(config.data).test_images[:5]
  batched = deploy.load(str(four), runtime="openvino")
  assert batched.tiles.compiled_batches == [4]
  assert [batched.tiles.bucket(n) for n in range(1, 7)] == [1, 2, 4, 4, 5, 6]
  for n in (3, 5):  # one run of 3 padded to 4; runs of 4 and 1
    got, want = batched(five[:n], "weave"), deploy.load(str(exports["onnx"]))(five[:n], "weave")
    assert got.heatmaps.shape == want.heatmaps.shape
    np.testing.assert_allclose(got.heatmaps, want.heatmaps, rtol=1e-4,
                               atol=1e-6 * np.abs(want.heatmaps).max())
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4)
  assert batched.tiles.compiled_batches == [1, 4]
  for compiled, _ in batched.tiles._requests.values():  # pylint: disable=protected-access
    assert all(port.get_partial_shape().is_static for port in compiled.inputs)
  bf16 = deploy.load(str(exports["onnx"]), runtime="openvino", precision="bf16")
  assert bf16.tiles.runtime.endswith(", " + bf16.tiles.precision)
  got = bf16(images, "weave").heatmaps
  error = float(np.abs(got - expected.heatmaps).max() / np.abs(expected.heatmaps).max())
  if bf16.tiles.precision == "bf16":
    assert 0 < error < 0.05, error
    # The mismatch after the U-Net (v - (y - x0), squares, sums, minimum over seeds, the sum
    # over times) is computed in float32.
    assert _bf16_after_the_unet(bf16.tiles, "tile_heatmaps") == []
  else:  # no bf16 instructions here: OpenVINO runs f32 (not in its accuracy mode)
    assert error < 1e-3, error
  (tmp_path / "line").mkdir()
  from PIL import Image
  Image.fromarray(images[0]).save(tmp_path / "line" / "part0.png")
  out = subprocess.run([sys.executable, "-m", "fmjax.deploy", str(exports["onnx"]),
                        str(tmp_path / "line"), "--category=weave", "--out", str(tmp_path / "out"),
                        "--runtime", "openvino"], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  assert lines[0].startswith("# ") and lines[0].endswith(", f32)") and "(on OpenVINO " in lines[0]
  assert float(lines[1].split("\t")[1].split()[0]) == pytest.approx(float(expected.scores[0]), rel=1e-4)


def test_the_service_runs_an_onnx_export_on_openvino(run, tmp_path):
  """`python -m fmjax.serve ... --runtime openvino` (jax blocked) says so in /health and
  answers with onnxruntime's scores (f32, its accuracy mode)."""
  pytest.importorskip("openvino", reason="pip install openvino")
  import httpx
  _, exports, config = run
  images = load_dataset(config.data).test_images[:2]
  expected = deploy.load(str(exports["onnx"]))(images, "weave")
  with serving([sys.executable, "-c", _SERVE_BLOCKED, str(exports["onnx"]), "--runtime", "openvino"],
               tmp_path / "serve.log") as url:
    runtime = httpx.get(url + "/health", timeout=60).json()["runtime"]
    assert runtime.startswith("OpenVINO ") and runtime.endswith(", f32"), runtime
    answer = _predict(url, images, "weave")
  np.testing.assert_allclose([a["score"] for a in answer["images"]], expected.scores, rtol=1e-4)


def test_runtime_and_precision_refusals(run):
  _, exports, _ = run
  with pytest.raises(deploy.DeployError, match="runtime must be one of onnxruntime, openvino"):
    deploy.load(str(exports["onnx"]), runtime="tensorrt")
  with pytest.raises(deploy.DeployError, match="is a StableHLO export, which runs on JAX"):
    deploy.load(str(exports["stablehlo"]), runtime="openvino")
  with pytest.raises(deploy.DeployError, match="precision must be one of f32, bf16, not 'fp16'"):
    deploy.load(str(exports["onnx"]), runtime="openvino", precision="fp16")


def test_onnx_equals_jax_on_the_quickstart_model(tmp_path):
  """The quickstart's U-Net (345,843 parameters, 32x32, attention at rate 4, K = T = 4),
  trained 2 steps: ONNX heatmaps and scores equal fmjax's scorer and the StableHLO export."""
  from fmjax import configlib
  config = configlib.quickstart_config()
  config.train.update(num_steps=2, checkpoint_every_steps=2, log_every_steps=1)
  config.mesh.num_devices = 1
  fm_main.run(config, str(tmp_path), "train")
  dataset = load_dataset(config.data)
  pick = np.concatenate([np.nonzero(dataset.test_classes == c)[0][:3] for c in range(3)])
  images, classes = dataset.test_images[pick], dataset.test_classes[pick]
  heat, scores, _ = ScoringSession.load(config, str(tmp_path), dataset.class_names).score(images, classes)
  out = {}
  for fmt in ("stablehlo", "onnx"):
    config.export.format = fmt
    fm_main.run(config, str(tmp_path), "export")
    scorer = deploy.load(str(tmp_path / "export"))
    assert scorer.format == fmt and scorer.manifest["num_params"] == 345_843
    if fmt == "onnx":  # 512 samples per run: 32 images of K x T = 16
      assert scorer.manifest["onnx"]["images_per_call"] == scorer.batch == 32
    out[fmt] = [scorer(images[classes == c], name) for c, name in enumerate(dataset.class_names)]
  for c, (ours, theirs) in enumerate(zip(out["onnx"], out["stablehlo"])):
    np.testing.assert_allclose(ours.heatmaps, heat[classes == c], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.scores, scores[classes == c], rtol=1e-4)
    np.testing.assert_allclose(ours.heatmaps, theirs.heatmaps, rtol=1e-4, atol=1e-6)
