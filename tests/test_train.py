"""The sharded trainer: 8 devices equal 1 device, resume equals uninterrupted, bad runs stop."""

import json

import jax
import numpy as np
import pytest

from fmjax.train import checkpoint, loop as train
from fmjax.core import sharding
from fmjax.train.restore import load_params_for_eval
from fmjax.data import NormStats, load_dataset, pipeline
from fmjax.model.unet import build_unet
from fmjax.model.optim import build_optimizer

from conftest import tiny_config


def _one_step(config, dataset, num_devices):
  mesh = sharding.make_mesh(num_devices)
  model = build_unet(config.model, dataset.num_classes)
  opt = build_optimizer(config.train)
  norm = NormStats.of(dataset.train_images)
  state = jax.jit(lambda k: train.create_train_state(model, opt, dataset.image_shape,
                                                     dataset.num_classes, k, False),
                  out_shardings=sharding.replicated(mesh))(jax.random.key(0))
  step = train.make_train_step(model, opt, norm, config.seed, 0.0, mesh)
  source = pipeline.ArraySource(dataset.train_images, dataset.train_classes)
  batch = pipeline.train_dataset(source, config.train.batch_size, config.seed)[0]
  data = sharding.data_sharding(mesh)
  images = sharding.to_global(batch["image"], data)
  labels = sharding.to_global(batch["label"], data)
  assert len(images.sharding.device_set) == num_devices
  state, metrics = step(state, images, labels)
  loss = metrics["loss"]
  state, metrics = step(state, images, labels)
  loss2 = metrics["loss"]
  return float(loss), float(loss2), jax.device_get(state.params)


def test_eight_devices_give_the_one_device_loss():
  assert len(jax.devices()) == 8, "conftest sets 8 simulated CPU devices"
  config = tiny_config(**{"model.dropout": 0.1})
  dataset = load_dataset(config.data)
  loss1, loss1b, params1 = _one_step(config, dataset, 1)
  loss8, loss8b, params8 = _one_step(config, dataset, 8)
  assert np.isfinite(loss1) and loss1 > 0.1
  np.testing.assert_allclose(loss8, loss1, rtol=1e-6)
  np.testing.assert_allclose(loss8b, loss1b, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params8)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _index_stream(seed, batch_size, num_images, process_index=0, process_count=1):
  ids = np.arange(num_images)
  return pipeline.train_dataset(pipeline.ArraySource(ids, ids), batch_size, seed, process_index,
                                process_count)


def test_batches_cover_each_epoch_once_and_are_deterministic():
  stream = _index_stream(3, 4, 10)
  seen = np.concatenate([stream[s]["image"] for s in range(5)])  # 20 = 2 epochs
  assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
  assert not np.array_equal(seen[:10], seen[10:])  # reshuffled each epoch
  np.testing.assert_array_equal(_index_stream(3, 4, 10)[2]["image"], seen[8:12])
  assert not np.array_equal(_index_stream(4, 4, 10)[0]["image"], seen[:4])


def test_hosts_get_consecutive_rows_of_the_same_global_batch():
  one = _index_stream(5, 8, 13)
  hosts = [_index_stream(5, 8, 13, h, 4) for h in range(4)]
  for step in range(6):
    joined = np.concatenate([h[step]["image"] for h in hosts])
    np.testing.assert_array_equal(joined, one[step]["image"])
    assert hosts[1][step]["image"].shape == (2,)
  with pytest.raises(ValueError, match="not divisible by 3 hosts"):
    _index_stream(0, 8, 13, 0, 3)


@pytest.mark.parametrize("workers", [0, 2])
def test_iterator_state_resumes_the_stream(workers):
  stream = _index_stream(1, 4, 10)
  it = pipeline.train_iterator(stream, None, num_workers=workers)
  first = [next(it)["image"] for _ in range(3)]
  state = it.get_state()
  rest = [next(it)["image"] for _ in range(3)]
  resumed = pipeline.train_iterator(stream, state, num_workers=workers)
  for a, b in zip(rest, [next(resumed)["image"] for _ in range(3)]):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(first[0], stream[0]["image"])


def test_num_train_steps_from_epochs():
  config = tiny_config(**{"train.num_steps": -1, "train.num_epochs": 2000.0, "train.batch_size": 32})
  assert train.num_train_steps(config, 209) == 13063  # ceil(2000 * 209 / 32)


def test_resume_equals_uninterrupted(tmp_path):
  config = tiny_config(**{"train.num_steps": 4, "train.ema_decay": 0.9, "mesh.num_devices": 2})
  dataset = load_dataset(config.data)
  full = train.train(config, str(tmp_path / "full"), dataset)

  half = tiny_config(**{"train.num_steps": 2, "train.ema_decay": 0.9, "mesh.num_devices": 2})
  train.train(half, str(tmp_path / "split"), dataset)
  resumed = train.train(config, str(tmp_path / "split"), dataset)  # same command again: resumes at 2

  assert int(resumed.step) == int(full.step) == 4
  for a, b in zip(jax.tree.leaves(jax.device_get(full)), jax.tree.leaves(jax.device_get(resumed))):
    np.testing.assert_array_equal(a, b)
  manager = checkpoint.make_manager(str(tmp_path / "split"), read_only=True)
  assert manager.all_steps() == [2, 4]
  assert checkpoint.read_meta(manager, 2)["data_iterator"] == {"next_index": 2}  # grain state


def test_a_time_budget_stops_at_a_log_step_with_a_checkpoint_and_resumes_exactly(tmp_path):
  config = tiny_config(**{"train.num_steps": 6, "train.log_every_steps": 2})
  dataset = load_dataset(config.data)
  full = train.train(config, str(tmp_path / "full"), dataset)

  budget = tiny_config(**{"train.num_steps": 6, "train.log_every_steps": 2,
                          "train.max_seconds": 1e-6})  # spent by the first log step
  stopped = train.train(budget, str(tmp_path / "split"), dataset)
  assert int(stopped.step) == 2
  manager = checkpoint.make_manager(str(tmp_path / "split"), read_only=True)
  assert manager.all_steps() == [2]
  rows = [json.loads(l) for l in open(tmp_path / "split" / "train_metrics.jsonl")]
  assert [r["step"] for r in rows] == [2]

  resumed = train.train(config, str(tmp_path / "split"), dataset)  # no budget: on to step 6
  assert int(resumed.step) == 6
  for a, b in zip(jax.tree.leaves(jax.device_get(full)), jax.tree.leaves(jax.device_get(resumed))):
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_without_overwriting_checkpoints(tmp_path):
  config = tiny_config(**{"train.num_steps": 2})
  dataset = load_dataset(config.data)
  workdir = str(tmp_path / "run")
  good = jax.device_get(train.train(config, workdir, dataset).params)
  broken = tiny_config(**{"train.num_steps": 8, "train.learning_rate": 1e30,
                          "train.checkpoint_every_steps": 1})
  with pytest.raises(train.NonFiniteLossError, match="learning_rate"):
    train.train(broken, workdir, dataset)
  manager = checkpoint.make_manager(workdir, read_only=True)
  assert manager.latest_step() == 2
  params, step, _, names, _ = load_params_for_eval(config, workdir, dataset.class_names)
  assert names == dataset.class_names
  assert step == 2
  for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(jax.device_get(params))):
    np.testing.assert_array_equal(a, b)


def test_checkpoint_from_another_model_is_refused(tmp_path):
  config = tiny_config(**{"train.num_steps": 2})
  dataset = load_dataset(config.data)
  train.train(config, str(tmp_path), dataset)
  other = tiny_config(**{"train.num_steps": 4, "model.channels": 16})
  with pytest.raises(checkpoint.CheckpointMismatchError, match="channels: checkpoint has 8, config has 16"):
    train.train(other, str(tmp_path), dataset)
  assert checkpoint.make_manager(str(tmp_path), read_only=True).latest_step() == 2


def test_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(NotADirectoryError, match="is a file"):
    train.train(tiny_config(), str(path))
