"""The compute-scaling study: learning-rate rules and warm-up, the held-out loss, the gradient
noise scale, the critical-batch fit, and a tiny 3-arm study end to end."""

import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax import configlib
from fmjax.core import sharding
from fmjax.studies import noise_scale, scaling, validation
from fmjax.model import optim
from fmjax.train import loop as train
from fmjax.data import NormStats
from fmjax.core.errors import ConfigError
from fmjax.core.ids import image_ids
from fmjax.model.unet import build_unet, init_params
from tiny import tiny_config


# ---- learning-rate rules and warm-up ----

def test_learning_rate_rules():
  assert optim.scaled_learning_rate(1e-4, 128, 32, "none") == 1e-4
  assert optim.scaled_learning_rate(1e-4, 128, 32, "linear") == pytest.approx(4e-4, rel=1e-12)
  assert optim.scaled_learning_rate(1e-4, 128, 32, "sqrt") == pytest.approx(2e-4, rel=1e-12)
  assert optim.scaled_learning_rate(1e-3, 8, 32, "sqrt") == pytest.approx(5e-4, rel=1e-12)
  with pytest.raises(ValueError):
    optim.scaled_learning_rate(1e-4, 64, 32, "cubic")


def test_warmup_factor_values():
  got = [float(optim.warmup_factor(s, 4)) for s in range(6)]
  assert got == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
  assert float(optim.warmup_factor(0, 0)) == 1.0


def test_warmup_scales_the_first_updates_exactly():
  """Update s of a warmed-up run is (s+1)/W times the same update without warm-up."""
  c = tiny_config()
  model = build_unet(c.model, 3)
  opt = optim.build_optimizer(c.train)
  norm = NormStats((0.5,) * 3, (0.25,) * 3)
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)
  labels = np.zeros(8, np.int32)
  state = train.create_train_state(model, opt, (16, 16, 3), 3, jax.random.key(0), ema=False)
  plain = jax.jit(train.train_step_fn(model, opt, norm, 0, 0.0, learning_rate=1e-3))
  warm = jax.jit(train.train_step_fn(model, opt, norm, 0, 0.0, learning_rate=1e-3, warmup_steps=4))
  s_plain, m_plain = plain(state, images, labels)
  s_warm, m_warm = warm(state, images, labels)
  d_plain = jax.tree.map(lambda a, b: a - b, s_plain.params, state.params)
  d_warm = jax.tree.map(lambda a, b: a - b, s_warm.params, state.params)
  # The updates themselves (update_rms is computed before they are added to the parameters)...
  assert float(m_warm["update_rms"]) == pytest.approx(0.25 * float(m_plain["update_rms"]), rel=1e-5)
  # ...and the parameter changes, up to the float32 rounding of parameter + update.
  for a, b in zip(jax.tree.leaves(d_plain), jax.tree.leaves(d_warm)):
    np.testing.assert_allclose(np.asarray(b), 0.25 * np.asarray(a), rtol=1e-3, atol=3e-7)
  assert max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(d_plain)) > 1e-4
  assert float(m_warm["learning_rate"]) == pytest.approx(2.5e-4)
  assert float(m_plain["learning_rate"]) == pytest.approx(1e-3)


# ---- held-out loss ----

def _val_setup(num_images=5):
  c = tiny_config()
  model = build_unet(c.model, 3)
  params = init_params(model, jax.random.key(1), (16, 16, 3))
  norm = NormStats((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (num_images, 16, 16, 3), np.uint8)
  labels = rng.integers(0, 3, num_images).astype(np.int32)
  return model, params, norm, images, labels


def test_validation_loss_equals_a_loop_over_images_and_times():
  model, params, norm, images, labels = _val_setup()
  J, seed = 3, 7
  total = 0.0
  for image, label, i in zip(images, labels, image_ids(images)):
    x1 = (image.astype(np.float32) / 255.0 - np.float32(norm.mean)) / np.float32(norm.std)
    for j in range(J):
      t = (j + 0.5) / J
      x0 = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), int(i)), j),
                                        (16, 16, 3), jnp.float32))
      xt = (1 - t) * x0 + t * x1
      v = np.asarray(model.apply({"params": params}, xt[None], jnp.full((1,), t, jnp.float32),
                                 jnp.array([label])))[0]
      total += float(np.mean((v - (x1 - x0)) ** 2, dtype=np.float64))
  naive = total / (len(images) * J)
  mesh1 = sharding.make_mesh(1)
  fn = validation.make_val_loss_fn(model, norm, J, seed, mesh1)
  got = validation.validation_loss(fn, params, images, labels, 2, mesh1)
  assert got == pytest.approx(naive, rel=2e-5)


def test_validation_loss_is_independent_of_batch_size_devices_and_order():
  model, params, norm, images, labels = _val_setup(num_images=11)
  mesh1, mesh8 = sharding.make_mesh(1), sharding.make_mesh(8)
  one = validation.validation_loss(validation.make_val_loss_fn(model, norm, 4, 0, mesh1), params,
                                   images, labels, 3, mesh1)
  fn8 = validation.make_val_loss_fn(model, norm, 4, 0, mesh8)
  eight = validation.validation_loss(fn8, params, images, labels, 8, mesh8)
  order = np.random.default_rng(0).permutation(len(images))
  shuffled = validation.validation_loss(fn8, params, images[order], labels[order], 16, mesh8)
  assert eight == pytest.approx(one, rel=1e-5)
  assert shuffled == pytest.approx(one, rel=1e-5)
  other_seed = validation.validation_loss(validation.make_val_loss_fn(model, norm, 4, 1, mesh1),
                                          params, images, labels, 3, mesh1)
  assert abs(other_seed - one) > 1e-4 * one  # the noise is the seed's


def test_eval_steps_at_fixed_example_counts():
  assert validation.eval_steps(16, 64, 20) == [4, 8, 12, 16, 20]
  assert validation.eval_steps(64, 64, 5) == [1, 2, 3, 4, 5]
  assert validation.eval_steps(256, 64, 3) == [1, 2, 3]  # every step exceeds the interval
  assert validation.eval_steps(24, 64, 10) == [3, 6, 8, 10]  # ceil(64k / 24)


# ---- gradient noise scale ----

def test_estimator_inverts_the_expected_norms():
  grad_sq, trace_sigma, b, big = 2.5, 40.0, 4, 32
  small = grad_sq + trace_sigma / b
  large = grad_sq + trace_sigma / big
  t, g = noise_scale.estimate(small, large, b, big)
  assert t == pytest.approx(trace_sigma, rel=1e-12) and g == pytest.approx(grad_sq, rel=1e-12)


def test_noise_scale_of_linear_regression_matches_the_closed_form():
  """Least squares 1/2 (x.w - y)^2 with x ~ N(0, I_d), y = x.w* + eps, eps ~ N(0, s^2): at w the
  per-example gradient (x.w - y) x has mean G = w - w* =: delta and covariance
  (|delta|^2 + s^2) I + delta delta^T, so tr(Sigma) = d (|delta|^2 + s^2) + |delta|^2."""
  d, s, big, groups, n = 4, 1.0, 64, 8, 3000
  w_star = jnp.zeros(d)
  w = jnp.array([0.6, -0.8, 0.0, 0.0])  # |delta| = 1
  key = jax.random.key(0)
  kx, ke = jax.random.split(key)
  x = jax.random.normal(kx, (n, big, d))
  y = x @ w_star + s * jax.random.normal(ke, (n, big))

  def loss(params, group, i):
    gx, gy = group
    return jnp.mean(0.5 * jnp.square(gx @ params - gy))

  small_sq, big_sq = jax.jit(jax.vmap(
      lambda xb, yb: noise_scale.group_gradient_sq_norms(loss, w, (xb, yb), groups)))(x, y)
  traces, grads = zip(*(noise_scale.estimate(a, b, big // groups, big)
                        for a, b in zip(np.asarray(small_sq), np.asarray(big_sq))))
  delta_sq = 1.0
  exact_trace = d * (delta_sq + s ** 2) + delta_sq
  assert np.mean(traces) == pytest.approx(exact_trace, rel=0.05)
  assert np.mean(grads) == pytest.approx(delta_sq, rel=0.08)
  assert noise_scale.b_simple(traces, grads) == pytest.approx(exact_trace / delta_sq, rel=0.1)
  # The group norms themselves: the mean of the group gradients is the batch gradient.
  g_batch = jax.grad(lambda p: jnp.mean(0.5 * jnp.square(x[0] @ p - y[0])))(w)
  assert float(big_sq[0]) == pytest.approx(float(jnp.sum(g_batch ** 2)), rel=1e-5)


def test_b_simple_is_nan_while_the_gradient_is_lost_in_noise():
  assert math.isnan(noise_scale.b_simple([5.0, 6.0], [-1.0, 0.5]))
  assert noise_scale.b_simple([4.0, 8.0], [1.0, 3.0]) == pytest.approx(3.0)


def test_noise_measurement_is_the_same_on_8_devices_and_1():
  c = tiny_config()
  model = build_unet(c.model, 3)
  params = init_params(model, jax.random.key(0), (16, 16, 3))
  norm = NormStats((0.5,) * 3, (0.25,) * 3)
  images = np.random.default_rng(1).integers(0, 256, (16, 16, 16, 3), np.uint8)
  labels = np.arange(16, dtype=np.int32) % 3
  out = []
  for n in (1, 8):
    mesh = sharding.make_mesh(n)
    fn = noise_scale.make_measure_fn(model, norm, "cfm", {}, 0, 2, mesh)  # 2 groups of 8
    data = sharding.data_sharding(mesh)
    out.append(np.asarray(jax.device_get(fn(params, jax.device_put(images, data),
                                            jax.device_put(labels, data), np.int32(3)))))
  np.testing.assert_allclose(out[0], out[1], rtol=1e-4)
  assert out[0][0] > out[0][1] > 0  # a group's gradient is noisier than the batch's


# ---- steps to target and the critical batch size ----

def test_steps_to_target_interpolates_the_first_crossing():
  curve = [{"steps": 0, "val_loss": 2.0}, {"steps": 10, "val_loss": 1.0},
           {"steps": 20, "val_loss": 0.5}, {"steps": 30, "val_loss": 0.8}]
  assert scaling.steps_to_target(curve, 0.75) == pytest.approx(15.0)
  assert scaling.steps_to_target(curve, 1.0) == pytest.approx(10.0)
  assert scaling.steps_to_target(curve, 0.4) is None
  assert scaling.auto_target([curve, [{"steps": 0, "val_loss": 2.0}, {"steps": 5, "val_loss": 0.9}]]) == 0.9


def test_critical_batch_fit_recovers_a_known_answer():
  s_min, e_min = 120.0, 120.0 * 256  # B_crit = 256
  b = np.array([16, 32, 64, 128, 256, 512, 1024, 2048])
  exact = s_min + e_min / b
  fit = scaling.fit_critical_batch(b, exact)
  assert fit["steps_min"] == pytest.approx(s_min, rel=1e-9)
  assert fit["examples_min"] == pytest.approx(e_min, rel=1e-9)
  assert fit["critical_batch_size"] == pytest.approx(256.0, rel=1e-9)
  # Examples E = S B satisfy (S/S_min - 1)(E/E_min - 1) = 1 exactly on the fitted curve.
  np.testing.assert_allclose((exact / s_min - 1) * (exact * b / e_min - 1), 1.0, rtol=1e-12)
  noisy = exact * np.exp(np.random.default_rng(0).normal(0, 0.05, len(b)))
  assert scaling.fit_critical_batch(b, noisy)["critical_batch_size"] == pytest.approx(256.0, rel=0.3)
  assert scaling.fit_critical_batch([32, 32], [10.0, 11.0]) is None
  flat = scaling.fit_critical_batch([16, 64, 256], [100.0, 100.0, 100.0])  # no benefit at all
  assert flat["critical_batch_size"] == pytest.approx(0.0, abs=1e-6)


# ---- config ----

def test_scaling_config_errors():
  c = tiny_config()
  c.scaling.batch_sizes = "8,x"
  c.scaling.lr_rule = "cube"
  c.scaling.noise_scale_groups = 1
  with pytest.raises(ConfigError) as e:
    configlib.validate(c)
  text = str(e.value)
  assert "scaling.batch_sizes" in text and "scaling.lr_rule" in text and "noise_scale_groups" in text
  c = tiny_config(**{"scaling.batch_sizes": "8,12", "scaling.noise_scale_groups": 8})
  with pytest.raises(ConfigError, match=r"\[12\] are not divisible"):
    configlib.validate(c)
  c = tiny_config(**{"scaling.batch_sizes": "8,12", "mesh.num_devices": 8})
  with pytest.raises(ConfigError, match="scaling.batch_sizes value=12"):
    configlib.validate_devices(c, "scaling")


def test_plan_arms_budgets():
  c = tiny_config(**{"scaling.batch_sizes": "64,16,256", "scaling.budget_unit": "epochs",
                     "scaling.budget": 2.0, "scaling.warmup_examples": 100,
                     "train.learning_rate": 1e-3, "scaling.base_batch_size": 64})
  arms = scaling.plan_arms(c, num_train=300)
  assert [a["batch_size"] for a in arms] == [16, 64, 256]
  assert [a["steps"] for a in arms] == [38, 10, 3]  # ceil(600 / B)
  assert [a["warmup_steps"] for a in arms] == [7, 2, 1]
  assert [a["learning_rate"] for a in arms] == pytest.approx([5e-4, 1e-3, 2e-3])
  assert [a["val_steps"][-1] for a in arms] == [38, 10, 3]
  c.scaling.budget_unit = "steps"
  c.scaling.budget = 5
  assert [a["steps"] for a in scaling.plan_arms(c, 300)] == [5, 5, 5]


# ---- end to end ----

def _study_config(**overrides):
  c = tiny_config(**{"data.val_fraction": 0.25, "data.synthetic.num_train": 16,
                     "mesh.num_devices": 2, "scaling.batch_sizes": "8,16,32",
                     "scaling.budget_unit": "examples", "scaling.budget": 64,
                     "scaling.warmup_examples": 16, "scaling.val_every_examples": 32,
                     "scaling.val_times": 2, "scaling.noise_scale_every": 1,
                     "scaling.noise_scale_groups": 2, "scaling.base_batch_size": 8,
                     "train.checkpoint_every_steps": 4, "mode": "scaling", **overrides})
  return c


def test_three_arm_study_end_to_end_and_rerun_trains_nothing(tmp_path, capsys):
  from fmjax import main as fmjax_main
  workdir = str(tmp_path / "study")
  results = fmjax_main.run(_study_config(), workdir)  # mode from the config
  on_disk = json.loads((tmp_path / "study" / "scaling" / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(scaling.json_safe(results)))
  arms = on_disk["arms"]
  assert [a["batch_size"] for a in arms] == [8, 16, 32]
  for key in ("learning_rate", "examples", "steps", "val_loss", "image_auroc", "pixel_auroc",
              "train_flops", "wall_s", "gradient_noise_scale"):
    assert all(key in a for a in arms), key
  assert "critical_batch_size" in on_disk
  assert [a["steps"] for a in arms] == [8, 4, 2] and all(a["examples"] == 64 for a in arms)
  assert [a["learning_rate"] for a in arms] == pytest.approx([1e-3, 1e-3 * 2 ** 0.5, 2e-3])
  # Every arm is evaluated at the same example counts; step 0 is the same model in every arm.
  assert all([p["examples"] for p in a["val_curve"]] == [0, 32, 64] for a in arms)
  assert len({a["val_curve"][0]["val_loss"] for a in arms}) == 1
  assert all(a["val_loss"] == a["val_curve"][-1]["val_loss"] for a in arms)
  # Noise measured before every step, on 2 groups of B/2.
  assert [len(a["noise_curve"]) for a in arms] == [8, 4, 2]
  # FLOPs: the same examples cost about the same; per step they grow with the batch.
  per_step = [a["flops_per_step"] for a in arms]
  assert per_step[0] < per_step[1] < per_step[2]
  assert max(a["train_flops"] for a in arms) < 1.3 * min(a["train_flops"] for a in arms)
  assert all(a["train_flops"] == a["flops_per_step"] * a["steps"] for a in arms)
  # The arm's metrics are its evaluation's.
  for a in arms:
    metrics = json.loads((tmp_path / "study" / "arms" / f"batch_{a['batch_size']}" / "eval" /
                          "metrics.json").read_text())
    assert a["image_auroc"] == metrics["mean"]["image_auroc"]
    train_log = [json.loads(l) for l in (tmp_path / "study" / "arms" / f"batch_{a['batch_size']}" /
                                         "train_metrics.jsonl").read_text().splitlines()]
    assert train_log[-1]["step"] == a["steps"] and a["wall_s"] > 0
  md = (tmp_path / "study" / "scaling" / "results.md").read_text()
  assert len([l for l in md.splitlines() if l.startswith("| ")]) == 1 + 3  # header + one per arm
  for name in scaling.FIGURES:
    from PIL import Image
    with Image.open(tmp_path / "study" / "scaling" / name) as im:
      assert im.width >= 600 and im.height >= 400
  _check_page(tmp_path / "study" / "scaling" / "report.html", on_disk)
  # A rerun trains and scores nothing and writes the same results.
  before = {p: os.path.getmtime(p) for p in (tmp_path / "study" / "arms").rglob("*") if p.is_file()}
  capsys.readouterr()
  again = fmjax_main.run(_study_config(), workdir)
  out = capsys.readouterr().out
  assert out.count("already done") == 3 and "train:" not in out
  after = {p: os.path.getmtime(p) for p in (tmp_path / "study" / "arms").rglob("*") if p.is_file()}
  assert before == after
  assert json.loads(json.dumps(scaling.json_safe(again))) == on_disk
  # Other settings in the same workdir are refused, naming what changed.
  with pytest.raises(ConfigError, match="learning_rate"):
    fmjax_main.run(_study_config(**{"scaling.lr_rule": "linear"}), workdir)
  # Another scorer (K = 1): every arm is evaluated again from its checkpoint, nothing trains.
  capsys.readouterr()
  k1 = fmjax_main.run(_study_config(**{"evaluate.num_seeds": 1}), workdir)
  out = capsys.readouterr().out
  assert out.count("the arm is evaluated again") == 3
  assert not re.search(r"scaling: batch \d+ already done", out)
  assert "train: " not in out
  for a in k1["arms"]:
    assert a["scorer"]["method_options"]["num_seeds"] == 1
    metrics = json.loads((tmp_path / "study" / "arms" / f"batch_{a['batch_size']}" / "eval" /
                          "metrics.json").read_text())
    assert metrics["settings"]["method_options"]["num_seeds"] == 1
    assert a["image_auroc"] == metrics["mean"]["image_auroc"]
    assert a["val_curve"] == next(b for b in arms if b["batch_size"] == a["batch_size"])["val_curve"]
  # Another model: refused by the arms' checkpoints, naming the difference.
  from fmjax.core.errors import CheckpointMismatchError
  with pytest.raises(CheckpointMismatchError, match="channels: checkpoint has 8, config has 16"):
    fmjax_main.run(_study_config(**{"model.channels": 16}), workdir)


class _Crash(Exception):
  pass


class _CrashAfter(train.TrainHook):
  def __init__(self, step):
    self.step = step

  def after_step(self, step, state):
    if step == self.step:
      raise _Crash(f"killed after step {step}")


def _check_page(path, results):
  """scaling/report.html in headless Chromium: a table row per arm, the four plots, a point per
  held-out loss measurement, no console error (skipped where Chromium is not installed)."""
  from test_report_page import chromium_available, open_page, start_browser
  if not chromium_available():
    return
  driver = start_browser()
  try:
    open_page(driver, path)
    rows = driver.find_elements("css selector", "#table-0 tbody tr")
    assert [r.find_elements("css selector", "td")[0].text for r in rows] == \
        [str(a["batch_size"]) for a in results["arms"]]
    assert len(driver.find_elements("css selector", ".plot-box svg")) == 4
    points = sum(1 for a in results["arms"] for p in a["val_curve"] if p["steps"] > 0)
    assert len(driver.find_elements("css selector", "#plot-0 circle.dot")) == points
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  finally:
    driver.quit()


def test_a_broken_arm_resumes_and_matches_an_uninterrupted_one(tmp_path, monkeypatch):
  """An arm killed at step 6 (its last checkpoint: step 4) resumes on the next run: the same
  held-out losses, noise scales and metrics as an arm that ran through."""
  from fmjax import main as fmjax_main
  cfg = _study_config(**{"scaling.batch_sizes": "8"})
  whole = fmjax_main.run(cfg, str(tmp_path / "whole"))["arms"][0]
  broken = str(tmp_path / "broken")
  real_train = train.train
  monkeypatch.setattr(train, "train", lambda config, workdir, dataset=None, hooks=(): real_train(
      config, workdir, dataset, hooks=tuple(hooks) + (_CrashAfter(6),)))
  with pytest.raises(_Crash):
    fmjax_main.run(cfg, broken)
  monkeypatch.setattr(train, "train", real_train)
  arm = os.path.join(broken, "arms", "batch_8")
  assert not os.path.exists(os.path.join(arm, "arm.json"))
  assert sorted(int(d) for d in os.listdir(os.path.join(arm, "checkpoints")) if d.isdigit()) == [4]
  resumed = fmjax_main.run(cfg, broken)["arms"][0]
  assert [p["examples"] for p in resumed["val_curve"]] == [0, 32, 64]
  np.testing.assert_allclose([p["val_loss"] for p in resumed["val_curve"]],
                             [p["val_loss"] for p in whole["val_curve"]], rtol=1e-6)
  for key in ("image_auroc", "pixel_auroc", "val_loss"):
    assert resumed[key] == pytest.approx(whole[key], rel=1e-6), key
  assert [p["steps"] for p in resumed["noise_curve"]] == list(range(1, 9))
  np.testing.assert_allclose([p["gradient_noise_scale"] or 0.0 for p in resumed["noise_curve"]],
                             [p["gradient_noise_scale"] or 0.0 for p in whole["noise_curve"]],
                             rtol=1e-5)


def test_scaling_config_file_variants():
  import importlib.util
  from conftest import REPO
  spec = importlib.util.spec_from_file_location("scaling_cfg", REPO / "configs" / "scaling.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  paper = module.get_config()
  configlib.validate(paper)
  assert paper.mode == "scaling" and paper.data.val_fraction == 0.1
  assert paper.model.channels == 64 and paper.train.batch_size == 32  # the paper model and recipe
  arms = scaling.plan_arms(paper, num_train=188)  # bottle: 209 normals, 21 held out
  assert [a["batch_size"] for a in arms] == [32, 64, 128, 256, 512, 1024, 2048, 4096]
  assert arms[0]["steps"] == 11750 and arms[-1]["steps"] == 92  # ceil(2000 * 188 / B)
  assert arms[-1]["learning_rate"] == pytest.approx(1e-4 * math.sqrt(128))
  quick = module.get_config("quickstart")
  configlib.validate(quick)
  assert quick.mode == "scaling" and len(scaling.plan_arms(quick, 270)) == 3
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("huge")
