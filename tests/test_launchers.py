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
  env = {"TPU": "pod", "ZONE": "us-central2-b", "BUCKET": "bkt", "DATA": "gs://bkt/mvtec"}
  create = _launch("tpu_pod.sh", "--dry-run", "create", **env)
  assert create.returncode == 0, create.stderr
  assert shlex.split(create.stdout)[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
  assert "--accelerator-type v4-32" in create.stdout
  setup = _launch("tpu_pod.sh", "--dry-run", "setup", **env)
  assert setup.returncode == 0, setup.stderr
  commands = [shlex.split(line) for line in setup.stdout.splitlines()]
  remote = [c[c.index("--command") + 1] for c in commands if "ssh" in c]
  assert all("--worker=all" in c for c in commands if "ssh" in c or "scp" in c)
  assert any("jax[tpu]" in r for r in remote) and any("gcsfuse --implicit-dirs bkt /mnt/fmjax" in r
                                                     for r in remote)
  assert any("gsutil -m -q rsync -r gs://bkt/mvtec /tmp/fmjax-data" in r for r in remote)
  run = _launch("tpu_pod.sh", "--dry-run", "run", *ARGS, **env)
  (command,) = [shlex.split(line) for line in run.stdout.splitlines()]
  assert command[command.index("--command") + 1] == (
      "cd fmjax && FMJAX_DISTRIBUTED=1 PYTHONUNBUFFERED=1 python -m fmjax.main " + " ".join(ARGS))
  bad = _launch("tpu_pod.sh", "--dry-run", "launch", **env)
  assert bad.returncode == 2 and "unknown step launch" in bad.stderr
  no_zone = _launch("tpu_pod.sh", "--dry-run", "create", TPU="pod")
  assert no_zone.returncode != 0 and "set ZONE" in no_zone.stderr
