"""Test set-up: 8 simulated CPU devices (before jax is imported) and small configs."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
from fmjax.core import xla_cpu  # noqa: E402  (imports no jax)

# fmjax's own XLA:CPU settings, as its entry points use them (faster compiles and steps).
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before the settings, which read it
xla_cpu.apply_defaults()
# One XLA compilation cache for the whole session (both pytest workers and subprocesses): the
# many small runs of the same tiny model compile each program once. Every program is cached,
# the small ones too: eager operations (a model's init outside jit, say) are hundreds of
# small compilations that recur from test to test (a tiny U-Net's eager init: 41 s compiling,
# 6 s from the cache). Fresh per session.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="fmjax-tests-xla-cache-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib  # noqa: E402

import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = pathlib.Path(__file__).resolve().parent
SHARED_DATA = REPO.parent / "shared" / "data"

from tiny import tiny_config  # noqa: E402,F401  (the tests' small config, re-exported)


# The longest test files first: with 2 pytest workers (`-n 2 --dist loadfile`), whichever long
# file starts last sets when the suite ends. The order within a file is kept.
LONG_FIRST = ("test_scaling.py", "test_notebooks.py", "test_quickstart.py", "test_real_data.py",
              "test_train.py", "test_studies.py", "test_resize.py", "test_main.py",
              "test_methods.py", "test_bucket_workdir.py", "test_serve.py", "test_export.py",
              "test_onnx.py", "test_provenance.py",
              "test_calibration.py")


def pytest_configure(config):
  # xdist's file scheduling sorts files by their number of tests unless told not to, which
  # would undo the order below (the real-data test then started last and ran alone).
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(LONG_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable


@pytest.fixture
def shared_data():
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the repo)")
  return SHARED_DATA


def check_eval_report(eval_dir, categories, with_masks=True):
  """Asserts every report file exists and parses, and metrics.md's table equals metrics.json."""
  import csv
  import itertools
  import json
  import math
  import re

  from PIL import Image

  eval_dir = pathlib.Path(eval_dir)
  metrics = json.loads((eval_dir / "metrics.json").read_text())
  pictures = ["score_histogram.png", "roc_pr.png"] + [f"grid_{c}.png" for c in categories]
  for name in pictures:
    with Image.open(eval_dir / name) as im:
      im.load()
      assert im.width > 100 and im.height > 100, name
  with open(eval_dir / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(metrics["images"])
  for row, img in zip(rows, metrics["images"]):
    assert row["path"] == img["path"] and float(row["score"]) == pytest.approx(img["score"], rel=1e-7)
    threshold = metrics["per_category"][row["category"]]["image_f1_threshold"]
    assert row["decision"] == ("anomalous" if img["score"] >= threshold else "normal")
  # metrics.md: one row per category + Mean, percent with one decimal.
  text = (eval_dir / "metrics.md").read_text().splitlines()
  first = next(i for i, l in enumerate(text) if l.startswith("|"))
  table = list(itertools.takewhile(lambda l: l.startswith("|"), text[first:]))  # the first table
  header = [c.strip() for c in table[0].strip("|").split("|")]
  keys = {"I-AUROC": "image_auroc", "I-AP": "image_ap", "I-F1max": "image_f1_max",
          "P-AUROC": "pixel_auroc", "P-AP": "pixel_ap", "P-F1max": "pixel_f1_max", "PRO": "pixel_aupro",
          "AUPIMO": "pixel_aupimo"}
  assert len(header) == (9 if with_masks else 4), header
  body = {re.sub(r"\*", "", r.strip("|").split("|")[0]).strip(): r for r in table[2:]}
  assert list(body) == list(categories) + ["Mean"]
  for name, row in body.items():
    source = metrics["mean"] if name == "Mean" else metrics["per_category"][name]
    cells = [c.strip() for c in row.strip("|").split("|")[1:]]
    for column, cell in zip(header[1:], cells):
      value = source[keys[column]]
      if value is None or (isinstance(value, float) and math.isnan(value)):
        assert cell == "-"
      else:
        assert cell == f"{100 * value:.1f}", (name, column)
  return metrics


import contextlib  # noqa: E402


@contextlib.contextmanager
def serving(command: list, log_path, env=None):
  """Runs `command` + ["--port", <a free 127.0.0.1 port>] (an fmjax.serve command line) until it
  answers GET /health; yields its base URL; stops it after. Its output goes to `log_path`, which
  a failed start shows."""
  import socket
  import subprocess
  import time

  import httpx
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
  with open(log_path, "w") as log:
    child = subprocess.Popen(list(command) + ["--port", str(port)], env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
      deadline = time.time() + 300  # it compiles its batch shapes before listening
      while time.time() < deadline:
        try:
          if httpx.get(url + "/health", timeout=1).status_code == 200:
            break
        except httpx.TransportError:
          pass
        if child.poll() is not None:
          raise AssertionError(pathlib.Path(log_path).read_text())
        time.sleep(0.1)
      else:
        raise AssertionError("no answer on /health in 300 s: " + pathlib.Path(log_path).read_text())
      yield url
    finally:
      child.terminate()
      child.wait(timeout=60)
