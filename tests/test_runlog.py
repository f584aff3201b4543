"""Run records, TensorBoard event files and the train step's metrics."""

import gzip
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fmjax import main as fm_main
from fmjax import configlib
from fmjax.core import runlog
from fmjax import methods
from fmjax.train import loop as train
from fmjax.data import NormStats, load_dataset, pipeline
from fmjax.core.errors import ConfigError
from fmjax.model.unet import build_unet
from fmjax.model.optim import build_optimizer

from conftest import tiny_config


def test_step_metrics_equal_an_independent_computation():
  config = tiny_config(**{"model.dropout": 0.0})
  dataset = load_dataset(config.data)
  model = build_unet(config.model, dataset.num_classes)
  opt = build_optimizer(config.train)
  norm = NormStats.of(dataset.train_images)
  state = train.create_train_state(model, opt, dataset.image_shape, dataset.num_classes,
                                   jax.random.key(0), False)
  batch = pipeline.train_dataset(pipeline.ArraySource(dataset.train_images, dataset.train_classes),
                                 8, config.seed)[0]
  images, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
  before = jax.device_get(state.params)
  step = jax.jit(train.train_step_fn(model, opt, norm, config.seed, 0.0, learning_rate=1e-3))
  new, metrics = step(state, images, labels)
  # The gradient of the same loss (same key derivation as the step: fold_in(seed, step)).
  loss_key, _ = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 0))
  velocity = lambda p: (lambda x, t, lab: model.apply({"params": p}, x, t, lab))
  loss_fn = lambda p: methods.objective("cfm").loss(velocity(p), norm.normalize(images), labels,
                                                      loss_key)
  loss, grads = jax.value_and_grad(loss_fn)(before)
  leaves = lambda tree: np.concatenate([np.ravel(np.asarray(a, np.float64))
                                        for a in jax.tree.leaves(tree)])
  after, b0 = leaves(jax.device_get(new.params)), leaves(before)
  assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-5)
  assert float(metrics["grad_norm"]) == pytest.approx(np.linalg.norm(leaves(grads)), rel=1e-4)
  assert float(metrics["param_norm"]) == pytest.approx(np.linalg.norm(after), rel=1e-5)
  assert float(metrics["update_rms"]) == pytest.approx(np.sqrt(np.mean((after - b0) ** 2)), rel=1e-3)
  assert float(metrics["learning_rate"]) == pytest.approx(1e-3)
  assert float(metrics["update_rms"]) > 0 and float(optax.global_norm(grads)) > 0


def _events(directory):
  """{tag: [(step, value)]} read from TensorBoard event files (TFRecord framing, parsed here)."""
  from tensorboardX.proto import event_pb2
  out = {}
  for path in sorted(directory.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_a_run_leaves_its_config_environment_and_tensorboard_files(tmp_path):
  config = tiny_config()
  fm_main.run(config, str(tmp_path), "train_and_evaluate")
  fm_main.run(config, str(tmp_path), "evaluate")
  record = json.loads((tmp_path / "config.json").read_text())
  assert record["mode"] == "evaluate" and record["config"] == json.loads(config.to_json())
  env = json.loads((tmp_path / "environment.json").read_text())
  assert env["versions"]["jax"] == jax.__version__ and env["device_count"] == jax.device_count()
  history = [json.loads(l) for l in (tmp_path / "run_history.jsonl").read_text().splitlines()]
  assert [h["mode"] for h in history] == ["train_and_evaluate", "evaluate"]
  logged = [json.loads(l) for l in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
  events = _events(tmp_path / "tensorboard" / "train")
  for tag in ("loss", "grad_norm", "param_norm", "update_rms", "learning_rate", "images_per_s"):
    assert [s for s, _ in events[tag]] == [1, 2, 3, 4], tag
    np.testing.assert_allclose([v for _, v in events[tag]], [r[tag] for r in logged], rtol=1e-6)
  evals = _events(tmp_path / "tensorboard" / "eval")
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert evals["pixel_auroc"] == [(4, pytest.approx(metrics["pixel_auroc"], rel=1e-6))] * 2


def _traced_calls(directory, function):
  """How many times the jitted `function` ran inside the one Perfetto trace under `directory`:
  its outermost events (jax 0.11 records each call as two nested events of the same name)."""
  (path,) = list(directory.glob("plugins/profile/*/perfetto_trace.json.gz"))
  assert list(path.parent.glob("*.xplane.pb")), "no xplane file for TensorBoard's profile plugin"
  trace = json.loads(gzip.decompress(path.read_bytes()))
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  calls = sorted(((e["pid"], e["tid"]), e["ts"], e["ts"] + e["dur"]) for e in events
                 if e.get("ph") == "X" and e.get("name") == f"PjitFunction({function})")
  outermost, end = 0, {}
  for thread, start, stop in calls:
    if start >= end.get(thread, float("-inf")):  # not inside the previous call on its thread
      outermost += 1
      end[thread] = stop
    else:
      end[thread] = max(end[thread], stop)
  return outermost


def test_profile_steps_trace_exactly_the_named_steps(tmp_path):
  config = tiny_config()
  config.train.profile_steps = "2,3"
  config.evaluate.profile_batches = "1,1"
  fm_main.run(config, str(tmp_path), "train_and_evaluate")
  assert _traced_calls(tmp_path / "profile" / "train", "step_fn") == 2  # steps 2 and 3 of 4
  # Scoring batch 1 (its compilation included) is in the trace.
  assert _traced_calls(tmp_path / "profile" / "score", "score_tiles") >= 1


def test_profile_window_must_be_two_increasing_steps():
  assert runlog.trace_window("", "k") is None and runlog.trace_window("3,5", "k") == (3, 5)
  for bad in ("5", "5,3", "0,2", "a,b", "1,2,3"):
    with pytest.raises(ConfigError, match="train.profile_steps must be 'first,last'"):
      runlog.trace_window(bad, "train.profile_steps")
  config = tiny_config()
  config.evaluate.profile_batches = "2"
  with pytest.raises(ConfigError, match="evaluate.profile_batches must be"):
    configlib.validate(config)
