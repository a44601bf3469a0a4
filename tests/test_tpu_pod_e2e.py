"""launch/tpu_pod.sh end to end without a TPU: the real script drives a fake `gcloud`
(tests/fake_gcloud/gcloud) whose "TPU VM" is a folder of 2 workers on this machine, each
running its process with a TPU slice's environment, so mmjax.runtime.distributed forms the job on
127.0.0.1. One VM lifetime is reused across the checks to keep the wall time small."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT, tiny_args

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(ROOT, "launch", "tpu_pod.sh")
FAKE = os.path.join(ROOT, "tests", "fake_gcloud")
POD = ["--name", "pod1", "--zone", "fake-zone"]


@pytest.fixture
def cloud(tmp_path):
  root = tmp_path / "cloud"
  env = dict(os.environ, FAKE_GCLOUD_ROOT=str(root), FAKE_GCLOUD_PYTHON=sys.executable,
             PATH=f"{FAKE}{os.pathsep}{os.environ['PATH']}", PYTHONUNBUFFERED="1",
             # Two devices per worker: a 2-host slice of 2 chips each.
             XLA_FLAGS=" ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                if "device_count" not in f)
             + " --xla_force_host_platform_device_count=2")
  yield root, env
  if (root / "pod1" / "vm.json").exists():  # never leave the workers' processes behind
    gcloud(env, "delete", "pod1", "--zone", "fake-zone", "--quiet")


def gcloud(env, *args) -> subprocess.CompletedProcess:
  return subprocess.run([os.path.join(FAKE, "gcloud"), "compute", "tpus", "tpu-vm", *args],
                        env=env, capture_output=True, text=True, timeout=60)


def launch(env, *args, timeout=420) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def calls(root) -> list[dict]:
  path = root / "calls.jsonl"
  return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def test_refusals_run_no_cloud_command(cloud, tmp_path):
  root, env = cloud
  cases = [
      ([*POD, "--", "--config", "c", "--workdir", "runs/x"], "is relative"),
      ([*POD, "--", "--config", "c", f"--workdir={tmp_path}/wd"], "is local to each worker"),
      ([*POD, "--create", "--", "--config", "c", "--workdir", "/mnt/x"], "needs --accelerator-type"),
      ([*POD, "--", "--config", "c"], "need --workdir"),
  ]
  for args, message in cases:
    proc = launch(env, *args, timeout=30)
    assert proc.returncode == 2, (args, proc.stderr)
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], (args, proc.stderr)
  assert calls(root) == []


def test_tpu_pod_trains_passes_status_deletes_on_success_and_resumes(cloud, tmp_path, world_dir):
  root, env = cloud
  workdir = tmp_path / "shared"
  create = [*POD, "--create", "--accelerator-type", "v4-16", "--allow-local-workdir"]

  # 1. A Python below 3.11 on the workers: refused after the check, before anything is
  # copied or installed (the VM was created; the check needs it).
  old = tmp_path / "python3.10"
  old.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.10.12"; exit 1\n')
  old.chmod(0o755)
  proc = launch(env, *create, "--python", str(old), "--", *tiny_args(workdir, world_dir))
  assert proc.returncode == 3, proc.stderr
  assert [l for l in proc.stderr.splitlines() if l.startswith("error:")] == [
      l for l in proc.stderr.splitlines() if "below Python 3.11" in l]
  assert [c["verb"] for c in calls(root)] == ["describe", "create", "ssh"]

  # 2. Training fails on every worker: its status comes back, and --delete keeps the VM.
  proc = launch(env, *create, "--delete", "--",
                *tiny_args(workdir, world_dir, "--config.no_such_key=1"))
  assert proc.returncode != 0 and "keeping TPU VM pod1" in proc.stderr, proc.stderr
  assert (root / "pod1" / "vm.json").exists()
  verbs = [c["verb"] for c in calls(root)][3:]
  assert verbs == ["describe", "ssh", "scp", "ssh", "ssh", "ssh", "ssh"]  # exists: no create
  installs = [c["command"] for c in calls(root) if c["command"] and "pip install" in c["command"]]
  assert "python3.11 -m venv .venv" in installs[-1]
  assert "--require-hashes -r requirements-tpu.lock" in installs[-1]
  run_dirs = sorted((workdir / "logs" / "tpu_pod").iterdir())
  assert (run_dirs[-1] / "exit_status").read_text().strip() == str(proc.returncode)
  assert "no_such_key" in (run_dirs[-1] / "worker_1.log").read_text()

  # 3. Train to step 6 on the existing VM, no delete: success, status 0, the VM stays.
  proc = launch(env, *create, "--", *tiny_args(workdir, world_dir, "--config.total_steps=6"))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "training exited with status 0" in proc.stdout
  assert (workdir / "checkpoints" / "6").is_dir() and (root / "pod1").exists()

  # 4. The VM disappears (a spot preemption); rerunning recreates it and resumes from the
  # shared workdir, trains to the end (step 12) and, having succeeded, deletes the VM.
  assert gcloud(env, "delete", "pod1", "--zone", "fake-zone", "--quiet").returncode == 0
  n = len(calls(root))
  proc = launch(env, *create, "--delete", "--", *tiny_args(workdir, world_dir))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  verbs = [c["verb"] for c in calls(root)][n:]
  assert verbs == ["describe", "create", "ssh", "scp", "ssh", "ssh", "ssh", "ssh", "delete"]
  assert not (root / "pod1").exists()
  log = (sorted((workdir / "logs" / "tpu_pod").iterdir())[-1] / "worker_0.log").read_text()
  assert "resumed from" in log and "/6" in log.split("resumed from", 1)[1].splitlines()[0]
  assert "last completed step 12" in log
  assert (workdir / "checkpoints" / "12").is_dir()
  # The train command reached every worker intact, and only through `python -m mmjax.train`.
  start = [c["command"] for c in calls(root) if c["command"] and "mmjax.train" in c["command"]][-1]
  assert shlex.split(start.split(".status\"'", 1)[1].split(">", 1)[0])[1:] == tiny_args(
      workdir, world_dir)
