"""The speed benchmarks run (tiny model, CPU) and their FLOP accounting adds up.

No timing is asserted here: speed targets are checked on the GPU by running the
benchmarks themselves (benchmarks/README.md).
"""

import gzip
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from fmjax.studies import describe
from fmjax.model.unet import build_unet
from fmjax.model.optim import build_optimizer

from conftest import REPO, tiny_config

TINY = ["--config=configs/quickstart.py", "--config.data.image_size=16", "--config.model.channels=8",
        "--config.model.channel_mult=(1,2)", "--config.model.attention_rates=(2,)",
        "--config.model.head_channels=8", "--config.model.norm_groups=4",
        "--config.mesh.num_devices=1", "--seconds=0.05", "--repeats=1"]


def _run(script, *args, base=tuple(TINY)):
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, f"benchmarks/{script}", *base, *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_flop_counts_are_linear_in_the_batch():
  config = tiny_config()
  model = build_unet(config.model, 3)
  one, two = describe.forward_flops(model, 16, 1), describe.forward_flops(model, 16, 2)
  assert two == pytest.approx(2 * one, rel=1e-3)
  optimizer = build_optimizer(config.train)
  steps = [describe.train_step_flops(model, optimizer, b, 16) for b in (1, 2, 4)]
  per_image, per_update = steps[1] - steps[0], 2 * steps[0] - steps[1]
  assert steps[2] == pytest.approx(4 * per_image + per_update, rel=1e-3)
  assert 2.5 * one < per_image < 3.5 * one  # backward ~ 2x forward
  params = sum(p.size for p in jax.tree.leaves(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1,)),
                         jnp.zeros((1,), jnp.int32)))))
  assert 5 * params < per_update < 60 * params  # a few elementwise ops per parameter


def test_score_benchmark_prints_one_line_per_setting():
  rows = _run("score_throughput.py", "--kt=2x2,1x3", "--batches=2", "--profile_calls=2")
  assert [(r["num_seeds"], r["num_times"], r["batch"]) for r in rows] == [(2, 2, 2), (1, 3, 2)]
  for r in rows:
    # The traced calls' ops (here the host's: XLA:CPU), by kind and by class.
    assert r["ops_on"] == "host" and r["ops_per_call"] > 0 and r["op_ms_per_call"] > 0
    assert sum(r["top_ops_ms_per_call"].values()) <= r["op_ms_per_call"] + 0.05
    assert sum(r["op_ms_by_class"].values()) == pytest.approx(r["op_ms_per_call"], abs=0.1)
    assert r["images_per_s"] > 0 and r["ms_per_call"] > 0 and r["compile_s"] > 0
    assert r["flops_per_image"] == r["flops_per_forward"] * r["num_seeds"] * r["num_times"]
    assert r["achieved_tflops"] == pytest.approx(r["flops_per_image"] * r["images_per_s"] / 1e12,
                                                 rel=0.01, abs=1e-3)
    assert r["device"] and r["jax"] == jax.__version__ and r["fraction_of_peak"] is None  # CPU
    assert r["xla_temp_bytes"] > 0


def test_train_benchmark_prints_one_line_per_batch():
  rows = _run("train_throughput.py", "--batches=2")
  assert [r["batch"] for r in rows] == [2]
  for r in rows:
    assert r["images_per_s"] > 0 and r["steps_per_s"] == pytest.approx(r["images_per_s"] / r["batch"],
                                                                        rel=0.01)
    assert r["flops_per_step"] > 0 and r["compile_s"] > 0
    assert r["achieved_tflops"] == pytest.approx(r["flops_per_step"] * r["steps_per_s"] / 1e12,
                                                 rel=0.01, abs=1e-3)


def test_train_profile_sums_the_traced_ops_by_kind(monkeypatch):
  """benchmarks/train_profile.py: one line whose listed op kinds are positive and within the
  total op time, GFLOP/s = GFLOP per step / time per step; started like python -m fmjax.main
  (restarted with fmjax's malloc settings where they apply)."""
  from fmjax.core import xla_cpu
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  [row] = _run("train_profile.py", "--batch=2", "--steps=2", "--top=4",
               base=[a for a in TINY if not a.startswith(("--seconds", "--repeats"))])
  ops = row["top_ops_ms_per_step"]
  assert 1 <= len(ops) <= 4 and all(v > 0 for v in ops.values())
  assert list(ops.values()) == sorted(ops.values(), reverse=True)
  assert sum(ops.values()) <= row["op_ms_per_step"] + 0.05
  assert row["gflop_per_s"] == pytest.approx(row["gflop_per_step"] / row["ms_per_step"] * 1e3,
                                             rel=0.02, abs=0.2)
  assert row["page_faults_per_step"] >= 0 and row["cores_user"] > 0 and row["ops_on"] == "host"
  want = ":".join(xla_cpu.MALLOC_TUNABLES) if xla_cpu.malloc_tunables_help() else ""
  assert row["malloc_tunables"] == want


def test_train_ab_alternates_variants_and_compares_their_numbers():
  """benchmarks/train_ab.py: one line per variant in the given order; the same step again
  leaves the state after one step identical to the first variant's, a config override that
  changes the update (the learning rate; with an XLA option that only schedules) does not, the
  batch split over 2 devices only by rounding; a bad variant is refused in one line naming it."""
  base = [a for a in TINY if not a.startswith(("--seconds", "--repeats"))]
  rows = _run("train_ab.py", "--batch=2", "--rounds=3", "--variant=base||", "--variant=again||",
              '--variant=lr|train.learning_rate=0.5|'
              '{"xla_cpu_enable_concurrency_optimized_scheduler": true}',
              "--variant=two|mesh.num_devices=2|", base=base)
  assert [r["label"] for r in rows] == ["base", "again", "lr", "two"]
  assert [r["devices"] for r in rows] == [1, 1, 1, 2]
  assert [r["state_max_abs_diff"] for r in rows[:2]] == [0.0, 0.0]
  assert rows[2]["state_max_abs_diff"] > 1e-3
  assert rows[3]["state_max_abs_diff"] < 1e-6  # the batch split over 2 devices: rounding only
  for r in rows:
    assert r["rounds"] == 3 and r["ms_per_step_min"] <= r["ms_per_step_p25"] <= r["ms_per_step_median"]
    assert r["images_per_s"] == pytest.approx(2 / r["ms_per_step_median"] * 1e3, rel=0.01)
  assert rows[0]["median_vs_first"] == 1.0
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  for variant, message in [("x|model.nope=1|", "the config has no key 'model.nope'"),
                           ("x|nope.depth=1|", "the config has no key 'nope.depth'"),
                           ("x||{not json", "the XLA options are not JSON")]:
    bad = subprocess.run([sys.executable, "benchmarks/train_ab.py", *base, f"--variant={variant}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode != 0 and len(lines) == 1, bad.stderr
    assert lines[0].startswith(f"train_ab: --variant x: {message}"), bad.stderr


def test_a_gpu_trace_counts_only_the_device_kernels(tmp_path):
  """A trace with a host and a device process (as a GPU's): only the device's kernels, on its
  "Stream" lines, are op time (train_profile.py's count; the "XLA Ops" line spans the same
  kernels again), summed by name without XLA's numbering, per step; classed by kind."""
  sys.path.insert(0, str(REPO / "benchmarks"))
  try:
    import bench_util  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  conv = "sm90_xmma_fprop_implicit_gemm_bf16_nhwc_kernel"
  events = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
            {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "name": "thread_name", "pid": 2, "tid": 7,
             "args": {"name": "Stream #14(Memset,Compute,MemcpyD2D)"}},
            {"ph": "M", "name": "thread_name", "pid": 2, "tid": 8, "args": {"name": "XLA Ops"}},
            {"ph": "X", "pid": 1, "tid": 1, "name": "cuLaunchKernel", "dur": 5000},
            {"ph": "X", "pid": 2, "tid": 7, "name": "loop_add_fusion.3", "dur": 1000},
            {"ph": "X", "pid": 2, "tid": 7, "name": "loop_add_fusion.7", "dur": 3000},
            {"ph": "X", "pid": 2, "tid": 7, "name": "input_reduce_fusion_12", "dur": 2000},
            {"ph": "X", "pid": 2, "tid": 7, "name": "input_convert_reduce_fusion_4", "dur": 400},
            {"ph": "X", "pid": 2, "tid": 7, "name": conv, "dur": 6000},
            {"ph": "X", "pid": 2, "tid": 8, "name": "fusion.3", "dur": 12000},
            {"ph": "i", "pid": 2, "tid": 7, "name": "marker"}]
  (tmp_path / "run").mkdir()
  with gzip.open(tmp_path / "run" / "h.trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  kinds, ops_on, ops = bench_util.op_time_by_kind(str(tmp_path), calls=2)
  assert ops_on == "device" and ops == 2.5
  assert kinds == {conv: 3.0, "loop_add_fusion": 2.0, "input_reduce_fusion": 1.0,
                   "input_convert_reduce_fusion": 0.2}  # ms/step
  assert bench_util.op_time_by_class(kinds) == {"convolution": 3.0, "elementwise": 2.0,
                                                "reduction": 1.2}
  row = bench_util.trace_summary(str(tmp_path), calls=2, s_per_call=0.0124, unit="step", top=2)
  assert row == {"ops_on": "device", "op_ms_per_step": 6.2, "ops_per_step": 2.5,
                 "op_ms_by_class": {"convolution": 3.0, "elementwise": 2.0, "reduction": 1.2},
                 "op_time_fraction": 0.5, "top_ops_ms_per_step": {conv: 3.0, "loop_add_fusion": 2.0}}


SMOOTHING_CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from tiny import tiny_config

def get_config():
  return tiny_config()
"""


def test_smoothing_benchmark_equals_an_evaluation_at_each_sigma(tmp_path):
  """One scoring pass smoothed per sigma gives the metrics --mode=evaluate gives with it."""
  from fmjax import main as fm_main
  from conftest import TESTS
  (tmp_path / "tiny_config.py").write_text(SMOOTHING_CONFIG.format(tests=str(TESTS)))
  workdir = str(tmp_path / "run")
  fm_main.run(tiny_config(), workdir, "train")
  sigmas = (0.0, 1.5)
  evaluated = [fm_main.run(tiny_config(**{"evaluate.smoothing_sigma": s}), workdir,
                           "evaluate").pooled.as_dict() for s in sigmas]
  assert evaluated[0]["pixel_auroc"] != evaluated[1]["pixel_auroc"]  # smoothing changes maps
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "benchmarks/smoothing_sigma.py",
                        f"--config={tmp_path / 'tiny_config.py'}", f"--workdir={workdir}",
                        "--sigmas=0,1.5"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  assert [r["sigma_pixels"] for r in rows] == list(sigmas)
  for row, metrics in zip(rows, evaluated):
    for key in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "pixel_aupro"):
      assert row[key] == pytest.approx(100 * metrics[key], abs=0.006), key  # rounded to 0.01
  assert out.stdout.splitlines()[-2].startswith("| 0 |")  # the Markdown table


def _crop_position(code: str) -> str:
  """Runs `code` in a fresh process with benchmarks/crop_position.py imported as `cp`."""
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'benchmarks'); "
                        "import crop_position as cp\n" + code], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_crop_position_channels_and_crops_match_a_loop():
  """Position channels: pixel (i, j) of a crop at (y, x) of an H x W image holds
  ((y + i + 0.5) / H * 2 - 1, (x + j + 0.5) / W * 2 - 1); crops are the images' slices at the
  offsets, drawn as a pure function of (seed, step)."""
  import numpy as np
  out = json.loads(_crop_position(
      "import json, numpy as np, jax.numpy as jnp\n"
      "ch = cp.position_channels(jnp.array([[0, 0], [3, 5]], jnp.int32), 4, 6, 12, 20)\n"
      "images = np.arange(5 * 12 * 20 * 3, dtype=np.int64).reshape(5, 12, 20, 3) % 251\n"
      "a = cp.batch_at(7, 3, images.astype(np.uint8), np.arange(5), 6, 4)\n"
      "b = cp.batch_at(7, 3, images.astype(np.uint8), np.arange(5), 6, 4)\n"
      "c = cp.batch_at(8, 3, images.astype(np.uint8), np.arange(5), 6, 4)\n"
      "print(json.dumps({'ch': np.asarray(ch).tolist(), 'crops': a[0].tolist(),"
      " 'classes': a[1].tolist(), 'offsets': a[2].tolist(),"
      " 'same': all(np.array_equal(x, y) for x, y in zip(a, b)),"
      " 'other': not np.array_equal(a[2], c[2])}))"))
  ch = np.array(out["ch"])
  assert ch.shape == (2, 4, 6, 2)
  for n, (y, x) in enumerate([(0, 0), (3, 5)]):
    for i in range(4):
      for j in range(6):
        assert ch[n, i, j, 0] == pytest.approx((y + i + 0.5) / 12 * 2 - 1, abs=1e-6)
        assert ch[n, i, j, 1] == pytest.approx((x + j + 0.5) / 20 * 2 - 1, abs=1e-6)
  images = (np.arange(5 * 12 * 20 * 3).reshape(5, 12, 20, 3) % 251).astype(np.uint8)
  crops = np.array(out["crops"])
  assert crops.shape == (6, 4, 4, 3) and out["same"] and out["other"]
  for crop, cls, (y, x) in zip(crops, out["classes"], out["offsets"]):
    assert 0 <= y <= 8 and 0 <= x <= 16
    np.testing.assert_array_equal(crop, images[cls, y:y + 4, x:x + 4])


def test_crop_position_arms_differ_only_in_the_position_channels():
  """Both crop arms start from a zero output layer (v = 0), so with the same crops and noise
  their first losses are equal; the position arm then trains other weights and ends apart."""
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  args = ["--config=configs/quickstart.py", "--config.data.image_size=16",
          "--config.model.channels=8", "--config.model.channel_mult=(1,2)",
          "--config.model.attention_rates=(2,)", "--config.model.head_channels=8",
          "--config.model.norm_groups=4", "--config.train.num_steps=5",
          "--config.train.batch_size=4", "--config.evaluate.num_seeds=1",
          "--config.evaluate.num_times=1", "--config.evaluate.batch_size=8",
          "--config.data.synthetic.num_train=8", "--config.data.synthetic.num_test_normal=3",
          "--config.data.synthetic.num_test_anomalous=3", "--crop=8"]
  out = subprocess.run([sys.executable, "benchmarks/crop_position.py", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  assert [(r["arm"], r["train_side"]) for r in rows] == [("whole", 16), ("crop", 8), ("position", 8)]
  crop, position = rows[1]["final_losses"], rows[2]["final_losses"]
  assert len(crop) == 5 and crop[0] == position[0] and crop[-1] != position[-1]
  for r in rows:
    assert r["num_test_images"] == 3 * 3 * 2 and 0 <= r["image_auroc"] <= 100
    assert 0 <= r["pixel_auroc"] <= 100
  assert out.stdout.splitlines()[-1].startswith("| position | 8x8 |")


def test_eval_summary_puts_two_evaluations_beside_the_paper_and_differences_them(tmp_path):
  keys = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
          "pixel_aupro")
  values = {"eval_bfloat16": (0.9786, 0.9936, 0.96, 0.8219, 0.3922, 0.4007, 0.6035),
            "eval_float32": (0.9786, 0.9936, 0.96, 0.8222, 0.3926, 0.4012, 0.6039)}
  for name, vals in values.items():
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / "metrics.json", "w") as f:
      json.dump({**dict(zip(keys, vals)), "pixel_aupimo": 0.07,
                 "settings": {"dataset": "mvtec", "categories": ["bottle"], "checkpoint_step": 950,
                              "images_per_s": 41.9}}, f)
  out = tmp_path / "rows.jsonl"
  rows = _run("eval_summary.py", f"--workdir={tmp_path}", "--reports=eval_bfloat16,eval_float32",
              f"--output={out}", base=())
  assert [json.loads(l) for l in open(out)] == rows
  bf16, f32, diff = rows
  assert bf16["report"] == "eval_bfloat16" and f32["report"] == "eval_float32"
  assert bf16["epochs"] == round(950 * 32 / 209, 1) == 145.5
  assert [bf16[k] for k in keys] == [round(100 * v, 2) for v in values["eval_bfloat16"]]
  assert bf16["paper"]["pixel_aupro"] == 93.0 and bf16["device"] == "cpu"
  assert diff["benchmark"] == "reproduction_dtype_difference"
  assert diff["pixel_auroc_difference"] == pytest.approx(0.0003, abs=1e-9)
  assert diff["image_auroc_difference"] == 0.0
