"""Multi-process runs on localhost: 2 processes x 2 CPU devices against 1 process x 4 devices.

The processes talk through jax.distributed (a coordinator on 127.0.0.1, gloo collectives
for CPU devices), started the way launch/multihost.sh starts them (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID). Every process is bounded in time and killed at the end.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from fmjax.data import pipeline
from fmjax.core.workdir import LOCK_NAME

from conftest import REPO, TESTS

CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from tiny import tiny_config

def get_config():
  return tiny_config(**{{"mesh.num_devices": -1, "train.num_steps": 6, "train.batch_size": 8,
                        "train.checkpoint_every_steps": 3, "evaluate.batch_size": 8}})
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, process: int | None = None, count: int = 1, port: int = 0) -> dict:
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
         "FMJAX_DISTRIBUTED_TIMEOUT": "30"}
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(key, None)
  if process is not None:
    # Gloo (CPU collectives) gives up when one process reaches a new collective more than 30 s
    # after another. A compilation cache that one process hits and the other misses makes them
    # that far apart on a busy machine, so processes of one run compile alike, from scratch.
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(count),
               JAX_PROCESS_ID=str(process))
  return env


def _start(config_path, workdir, processes: int, devices: int, *extra, bucket=None, cwd=REPO):
  """`processes` runs of fmjax.main in `cwd`; with `bucket` (a local folder) gs:// paths are
  served from it in every process (tests/bucket_main.py)."""
  port = _free_port()
  entry = ["-m", "fmjax.main"] if bucket is None else [str(TESTS / "bucket_main.py")]
  cmd = [sys.executable, *entry, f"--config={config_path}", f"--workdir={workdir}", *extra]
  procs = []
  for i in range(processes):
    env = _env(devices, i if processes > 1 else None, processes, port)
    if bucket is not None:
      env["FMJAX_TEST_BUCKET"] = str(bucket)
    # Output goes to a file, not a pipe: a process whose pipe is not being read blocks once it
    # is full, and then holds the others at their next collective or at the shutdown barrier.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    proc.log = log
    procs.append(proc)
  return procs


def _output(proc) -> str:
  proc.log.seek(0)
  return proc.log.read()


def _all_output(procs, tail: int = 3000) -> str:
  """Each process's exit code, its lines that name an error, and the end of its output."""
  def show(text):
    errors = [l for l in text.splitlines() if "fmjax:" in l or "Error" in l][:20]
    return "\n".join(errors) + "\n[...]\n" + text[-tail:]
  return "\n".join(f"--- process {i} (exit code {p.poll()}):\n{show(_output(p))}"
                   for i, p in enumerate(procs))


def _finish(procs, timeout: float = 900) -> list[tuple[int, str]]:
  """Waits for every process (at most `timeout` s in all); kills what is left, always."""
  deadline = time.time() + timeout
  try:
    for p in procs:
      try:
        p.wait(timeout=max(1.0, deadline - time.time()))
      except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout:.0f} s:\n{_all_output(procs)}")
    return [(p.returncode, _output(p)) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
      p.log.close()


def _run(config_path, workdir, processes: int, devices: int, *extra, bucket=None, cwd=REPO):
  results = _finish(_start(config_path, workdir, processes, devices, *extra, bucket=bucket,
                           cwd=cwd))
  if any(code != 0 for code, _ in results):
    pytest.fail("\n".join(f"--- process {i} of {processes} (exit code {code}):\n{text[-3000:]}"
                          for i, (code, text) in enumerate(results)))
  return results


def _lines(path):
  return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("config") / "tiny_multihost.py"
  path.write_text(CONFIG.format(tests=str(TESTS)))
  return path


@pytest.mark.multiprocess
def test_two_processes_equal_one_share_a_bucket_and_hand_over_their_checkpoint(
    config_path, tmp_path, monkeypatch):
  """2 processes x 2 devices with --workdir gs://... (a local folder serves the bucket in every
  process): every process writes its checkpoint shards into the bucket, process 0 the logs and
  the report. The run equals 1 process x 4 devices in a local folder, and its checkpoint
  evaluates and resumes in one process on other device counts. (One multi-process run covers
  all of this: each costs minutes on a 2-core machine.)"""
  from fake_bucket import local_bucket, local_path
  from fmjax import main as fm_main
  from tiny import tiny_config

  root, local = tmp_path / "bucket", tmp_path / "local"
  monkeypatch.chdir(tmp_path)  # a gs:// path taken for a local one would appear here, as "gs:"
  remote = "gs://fmjax-test/two"
  out = _run(config_path, remote, 2, 2, bucket=root, cwd=tmp_path)
  # Process 0 reports (the mesh spans both processes' devices) and writes; process 1 says
  # nothing (fmjax.core.console's process-0 rule).
  assert "mesh {'data': 4}" in out[0][1] and "Model:" not in out[1][1]
  assert "Report written" in out[0][1] and "Report written" not in out[1][1]
  with local_bucket(str(root)):
    stored = pathlib.Path(local_path(remote))
    overrides = {"mesh.num_devices": 4, "train.num_steps": 6, "train.batch_size": 8,
                 "train.checkpoint_every_steps": 3, "evaluate.batch_size": 8}
    fm_main.run(tiny_config(**overrides), str(local), "train_and_evaluate")
    logged2, logged1 = _lines(stored / "train_metrics.jsonl"), _lines(local / "train_metrics.jsonl")
    assert [r["step"] for r in logged2] == [1, 2, 3, 4, 5, 6]  # written once, by process 0
    for key in ("loss", "grad_norm", "param_norm"):
      np.testing.assert_allclose([r[key] for r in logged2], [r[key] for r in logged1], rtol=1e-5)
    assert len(_lines(stored / "run_history.jsonl")) == 1
    m2, m1 = (json.loads((d / "eval" / "metrics.json").read_text()) for d in (stored, local))
    np.testing.assert_allclose([i["score"] for i in m2["images"]],
                               [i["score"] for i in m1["images"]], rtol=1e-5)
    assert m2["image_auroc"] == pytest.approx(m1["image_auroc"])
    assert m2["settings"]["num_devices"] == 4
    assert sorted(os.listdir(stored / "checkpoints")) == ["3", "6"]
    assert not (stored / LOCK_NAME).exists() and not (tmp_path / "gs:").exists()
    # The checkpoint the two processes wrote, evaluated here on 2 devices: the same scores.
    fm_main.run(tiny_config(**{**overrides, "mesh.num_devices": 2}), remote, "evaluate")
    again = json.loads((stored / "eval" / "metrics.json").read_text())
    np.testing.assert_allclose([i["score"] for i in again["images"]],
                               [i["score"] for i in m2["images"]], rtol=1e-5)
    # ... and resumed here on 2 devices, against the local run resumed on 4.
    longer = {**overrides, "train.num_steps": 8}
    fm_main.run(tiny_config(**{**longer, "mesh.num_devices": 2}), remote, "train")
    fm_main.run(tiny_config(**longer), str(local), "train")
    resumed, straight = _lines(stored / "train_metrics.jsonl"), _lines(local / "train_metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in straight],
                               rtol=1e-5)
  assert sorted(os.listdir(tmp_path)) == ["bucket", "local"]  # nothing else on the local disk


def test_each_host_reads_only_its_rows_of_every_batch():
  images = np.arange(20)[:, None, None, None].astype(np.uint8) * np.ones((1, 2, 2, 3), np.uint8)
  source = pipeline.ArraySource(images, np.zeros(20, np.int32))
  whole = pipeline.train_dataset(source, 8, seed=3)
  hosts = [pipeline.train_dataset(source, 8, seed=3, process_index=p, process_count=2) for p in (0, 1)]
  for step in range(6):  # past an epoch boundary
    rows = [hosts[p][step]["image"][:, 0, 0, 0] for p in (0, 1)]
    assert len(rows[0]) == len(rows[1]) == 4
    np.testing.assert_array_equal(np.concatenate(rows), whole[step]["image"][:, 0, 0, 0])


@pytest.mark.multiprocess
def test_a_dying_process_stops_the_others(config_path, tmp_path):
  procs = _start(config_path, tmp_path / "run", 2, 2, "--mode=train", "--config.train.num_steps=100000",
                 "--config.train.checkpoint_every_steps=100000")
  try:
    deadline = time.time() + 900  # start-up and compilation, on a busy 2-core machine too
    while not (tmp_path / "run" / "train_metrics.jsonl").exists():  # both are training
      assert time.time() < deadline and procs[0].poll() is None, (
          f"training never started:\n{_all_output(procs)}")
      time.sleep(1)
    procs[1].send_signal(signal.SIGKILL)
    start = time.time()
    (code, text), _ = _finish(procs, timeout=240)
    # Within the heartbeat timeout (FMJAX_DISTRIBUTED_TIMEOUT=30), with JAX's reason.
    assert code != 0 and time.time() - start < 120, text[-3000:]
    assert "stopped sending heartbeats" in text and "another task died" in text, text[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


@pytest.mark.multiprocess
def test_a_time_budget_stops_every_process_after_the_same_update(config_path, tmp_path):
  # Past compilation, so the budget runs out mid-training: a process that stopped alone would
  # leave the other waiting in the next update's collective, and neither would exit 0.
  results = _run(config_path, tmp_path / "run", 2, 1, "--mode=train",
                 "--config.train.num_steps=100000", "--config.train.log_every_steps=2",
                 "--config.train.checkpoint_every_steps=100000", "--config.train.max_seconds=30")
  text = results[0][1]  # process 0 prints; its clock decides for both
  stopped = re.findall(r"Stopped after update (\d+) of 100000", text)
  assert len(stopped) == 1, text[-3000:]
  step = int(stopped[0])
  # At a log step; usually mid-training, but where compiling took the whole budget (a loaded
  # machine: seen once in CI) the first log step, which must stop both processes just the same.
  assert step % 2 == 0 and step >= 2
  assert _lines(tmp_path / "run" / "train_metrics.jsonl")[-1]["step"] == step
  assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                if p.name.isdigit()) == [step]
