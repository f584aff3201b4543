"""The launchers' dry runs: the commands they would run, and their refusals."""

import os
import shlex
import subprocess

from conftest import REPO


def _launch(script, *args, **env):
  clean = {k: v for k, v in os.environ.items()
           if k not in ("COORDINATOR", "NUM_HOSTS", "HOST_ID", "TPU", "ZONE", "BUCKET", "DATA",
                        "GPUS", "REPO_URL", "PROJECT")}
  return subprocess.run(["bash", str(REPO / "launch" / script), *args], capture_output=True,
                        text=True, env={**clean, **env}, timeout=60, cwd=REPO)


ARGS = ("--config", "configs/mvtec.py", "--workdir", "/shared/runs/x", "--config.data.root=/d")


def test_multihost_dry_run_sets_the_jax_distributed_variables():
  out = _launch("multihost.sh", "--dry-run", *ARGS, COORDINATOR="10.0.0.1:1234", NUM_HOSTS="4",
                HOST_ID="2")
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["JAX_COORDINATOR_ADDRESS=10.0.0.1:1234", "JAX_NUM_PROCESSES=4",
                                "JAX_PROCESS_ID=2", "python", "-m", "fmjax.main", *ARGS]
  missing = _launch("multihost.sh", "--dry-run", *ARGS, NUM_HOSTS="4", HOST_ID="0")
  assert missing.returncode != 0 and "set COORDINATOR" in missing.stderr


def test_multigpu_and_slurm_dry_runs():
  out = _launch("multigpu.sh", "--dry-run", *ARGS, GPUS="0,1")
  assert out.returncode == 0, out.stderr
  assert "CUDA_VISIBLE_DEVICES=0,1" in out.stdout and out.stdout.split()[-len(ARGS):] == list(ARGS)
  out = _launch("slurm.sbatch", "--dry-run", *ARGS)
  assert out.returncode == 0, out.stderr
  words = out.stdout.split()
  assert words[:2] == ["srun", "--kill-on-bad-exit=1"] and "FMJAX_DISTRIBUTED=1" in words
  assert words[-len(ARGS) - 3:] == ["python", "-m", "fmjax.main", *ARGS]


def test_tpu_pod_dry_run_prints_every_step_for_all_workers():
  env = {"TPU": "pod", "ZONE": "us-central2-b", "DATA": "gs://bkt/mvtec"}
  create = _launch("tpu_pod.sh", "--dry-run", "create", **env)
  assert create.returncode == 0, create.stderr
  assert shlex.split(create.stdout)[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
  assert "--accelerator-type v4-32" in create.stdout
  setup = _launch("tpu_pod.sh", "--dry-run", "setup", **env)
  assert setup.returncode == 0, setup.stderr
  commands = [shlex.split(line) for line in setup.stdout.splitlines()]
  remote = [c[c.index("--command") + 1] for c in commands if "ssh" in c]
  assert all("--worker=all" in c for c in commands if "ssh" in c or "scp" in c)
  assert any("jax[tpu]" in r and "pip install -q -e '.[gcs]'" in r for r in remote)
  assert any("gsutil -m -q rsync -r gs://bkt/mvtec /tmp/fmjax-data" in r for r in remote)
  assert not any("gcsfuse" in r for r in remote)  # the workdir is gs:// itself, no mount
  # Without DATA the dataset is read from the bucket, mounted read-only on every worker.
  mounted = _launch("tpu_pod.sh", "--dry-run", "setup", TPU="pod", ZONE="z", BUCKET="bkt")
  assert mounted.returncode == 0, mounted.stderr
  assert any("gcsfuse --implicit-dirs -o ro bkt /mnt/fmjax" in shlex.split(line)[-1]
             for line in mounted.stdout.splitlines())
  neither = _launch("tpu_pod.sh", "--dry-run", "setup", TPU="pod", ZONE="z")
  assert neither.returncode != 0 and "set DATA" in neither.stderr
  run = _launch("tpu_pod.sh", "--dry-run", "run", *ARGS, **env)
  (command,) = [shlex.split(line) for line in run.stdout.splitlines()]
  assert command[command.index("--command") + 1] == (
      "cd fmjax && FMJAX_DISTRIBUTED=1 PYTHONUNBUFFERED=1 python -m fmjax.main " + " ".join(ARGS))
  bad = _launch("tpu_pod.sh", "--dry-run", "launch", **env)
  assert bad.returncode == 2 and "unknown step launch" in bad.stderr
  no_zone = _launch("tpu_pod.sh", "--dry-run", "create", TPU="pod")
  assert no_zone.returncode != 0 and "set ZONE" in no_zone.stderr


def test_gpu_suite_collects_the_small_files_and_follows_started_parts(tmp_path):
  import tarfile
  runs, out = tmp_path / "runs", tmp_path / "out"
  (runs / "bottle" / "eval").mkdir(parents=True)
  (runs / "bottle" / "checkpoints" / "2").mkdir(parents=True)
  (runs / "bottle" / "eval" / "metrics.json").write_text("{}")
  (runs / "bottle" / "train_metrics.jsonl").write_text('{"step": 1}\n')
  (runs / "bottle" / "checkpoints" / "2" / "meta.json").write_text("{}")
  (runs / "score.jsonl").write_text("{}\n")
  out.mkdir()
  env = {"RUNS": str(runs), "OUT": str(out)}
  collected = _launch("gpu_suite.sh", "collect", **env)
  assert collected.returncode == 0, collected.stderr
  with tarfile.open(out / "results.tar.gz") as tar:
    names = {os.path.normpath(n) for n in tar.getnames() if tar.getmember(n).isfile()}
  assert names == {"bottle/eval/metrics.json", "bottle/train_metrics.jsonl", "score.jsonl"}
  # A started part that is gone: follow reports it ended and returns at once.
  (runs / "speed.log").write_text("wall 12 s: python3 benchmarks/score_throughput.py\n")
  (runs / "speed.pid").write_text("999999999\n")
  followed = _launch("gpu_suite.sh", "follow", "30", **env)
  assert followed.returncode == 0, followed.stderr
  assert "== speed (ended)" in followed.stdout and "wall 12 s" in followed.stdout
  for args in (("start", "everything"), ("nothing",)):
    bad = _launch("gpu_suite.sh", *args, **env)
    assert bad.returncode == 2 and "unknown part" in bad.stderr
