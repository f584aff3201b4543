"""The scoring session: one checkpoint loaded once, one compilation per scorer setting and shape."""

import collections
import contextlib

import jax
import numpy as np
import pytest

from fmjax import main as fm_main
from fmjax.data import load_dataset
from fmjax.decide import cascade
from fmjax.score.session import ScoringSession

from conftest import tiny_config

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compilations():
  """{jitted function name: how many times XLA compiled it (or fetched it from the persistent
  cache)} while the block runs; jax's in-memory cache hits do not count."""
  counts = collections.Counter()

  def listener(event, duration, **kwargs):
    if event == BACKEND_COMPILE:
      counts[kwargs.get("fun_name", "?")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _score_compilations(counts) -> int:
  return sum(n for name, n in counts.items() if "score_tiles" in name)


def test_train_and_evaluate_compiles_each_scoring_setting_once(tmp_path):
  # Calibration (held-out normals) and evaluation (test split) at the full setting, and the
  # cascade's cheap setting in both: two settings, one batch shape, so two compilations.
  # Before the session, each phase built its own scorer: four.
  config = tiny_config(**{"data.val_fraction": 0.25, "calibrate.false_alarm_rates": "0.5",
                          "evaluate.cascade.enabled": True, "evaluate.cascade.num_seeds": 1,
                          "evaluate.cascade.num_times": 1, "evaluate.batch_size": 8})
  with count_compilations() as counts:
    result = fm_main.run(config, str(tmp_path), "train_and_evaluate")
  assert result.cascade is not None and result.calibrated is not None  # both phases, both settings
  assert _score_compilations(counts) == 2, dict(counts)


def test_session_caches_score_functions_by_setting(tmp_path):
  config = tiny_config(**{"evaluate.cascade.num_seeds": 1, "evaluate.cascade.num_times": 1})
  fm_main.run(config, str(tmp_path), "train")
  dataset = load_dataset(config.data)
  session = ScoringSession.load(config, str(tmp_path), dataset.class_names)
  cheap = cascade.cheap_eval_config(config.evaluate)
  images, classes = dataset.test_images, dataset.test_classes
  with count_compilations() as counts:
    first = session.score(images, classes)
    again = session.score(images[::-1], classes[::-1])  # other images, same shape: no compile
    session.score(images, classes, cheap)
    session.score(images, classes, cheap)
  assert _score_compilations(counts) == 2, dict(counts)
  assert session.score_fn() is session.score_fn(config.evaluate)
  assert session.score_fn(cheap) is not session.score_fn()
  np.testing.assert_allclose(again[1][::-1], first[1], rtol=1e-6)  # scores follow the images
  # Another batch size is another input shape: one more compilation of the same function.
  bigger = cascade.cheap_eval_config(config.evaluate)
  with bigger.unlocked():
    bigger.batch_size = 2 * config.evaluate.batch_size
  with count_compilations() as counts:
    _, scores, _ = session.score(images, classes, bigger)
  assert _score_compilations(counts) == 1
  np.testing.assert_allclose(scores, session.score(images, classes, cheap)[1], rtol=1e-5)


def test_session_refuses_a_checkpoint_of_other_classes(tmp_path):
  config = tiny_config()
  fm_main.run(config, str(tmp_path), "train")
  from fmjax.core.errors import CheckpointMismatchError
  with pytest.raises(CheckpointMismatchError):
    ScoringSession.load(config, str(tmp_path), ["not", "these", "classes"])
