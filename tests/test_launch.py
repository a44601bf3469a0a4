"""The launchers' own behaviour, without a cluster: argument handling, the TPU pod script's
--dry-run commands, the sbatch header, and environment detection in mmjax.runtime.distributed."""
from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from tests.conftest import ROOT

LAUNCH = os.path.join(ROOT, "launch")


def run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60,
                        env={**os.environ, **(env or {})})


@pytest.mark.parametrize("script", ["local.sh", "slurm.sbatch", "tpu_pod.sh"])
def test_scripts_parse(script):
  proc = run(["bash", "-n", os.path.join(LAUNCH, script)])
  assert proc.returncode == 0, proc.stderr


def tpu_dry_run(*extra, env=None) -> list[list[str]]:
  proc = run(["bash", os.path.join(LAUNCH, "tpu_pod.sh"), "--dry-run", "--name", "pod1",
              "--zone", "us-central2-b", *extra, "--", "--config", "configs/mm_world.py",
              "--workdir", "/mnt/shared/run 1", "--config.model.width=256"], env=env)
  assert proc.returncode == 0, proc.stderr
  lines = [l for l in proc.stdout.splitlines() if l.startswith("+ ")]
  return [shlex.split(l[2:]) for l in lines]


def test_tpu_pod_dry_run_prints_every_step_in_order_and_runs_nothing(tmp_path):
  # A gcloud on PATH that records calls: the dry run must not call it.
  fake = tmp_path / "gcloud"
  fake.write_text(f"#!/bin/sh\necho called >> {tmp_path}/calls\n")
  fake.chmod(0o755)
  cmds = tpu_dry_run("--create", "--accelerator-type", "v4-32", "--project", "proj", "--delete",
                     env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
  assert not (tmp_path / "calls").exists()
  gcloud = [c for c in cmds if c[0] == "gcloud"]
  verbs = [c[4] for c in gcloud]
  # create, python check, copy, unpack, install, start, follow, delete
  assert verbs == ["create", "ssh", "scp", "ssh", "ssh", "ssh", "ssh", "delete"]
  for c in gcloud:
    assert c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
    assert "pod1" in " ".join(c) and c[c.index("--zone") + 1] == "us-central2-b"
    assert c[c.index("--project") + 1] == "proj"
  create = gcloud[0]
  assert create[create.index("--accelerator-type") + 1] == "v4-32"
  check, scp, unpack, install, start, tail = gcloud[1:7]
  for c in (check, scp, unpack, install, start):
    assert "--worker=all" in c
  assert "version_info < (3, 11)" in check[check.index("--command") + 1]
  assert "pip install -q --require-hashes -r requirements-tpu.lock" in install[
      install.index("--command") + 1]
  command = start[start.index("--command") + 1]
  # The train command reaches each worker intact (quoting preserved) and joins via JAX;
  # its log and exit status go to the shared workdir.
  assert "MMJAX_DISTRIBUTED=auto" in command and "-m mmjax.train" in command
  inner = shlex.split(command.split(".status\"'", 1)[1].split(">", 1)[0])
  assert inner[0].startswith("/mnt/shared/run 1/logs/tpu_pod/")
  assert inner[1:] == ["--config", "configs/mm_world.py", "--workdir", "/mnt/shared/run 1",
                       "--config.model.width=256"]
  assert "--worker=0" in tail and "exit_status" in tail[tail.index("--command") + 1]
  assert gcloud[-1][-1] == "--quiet"


def test_tpu_pod_defaults_skip_create_and_delete_and_check_arguments(tmp_path):
  verbs = [c[4] for c in tpu_dry_run() if c[0] == "gcloud"]
  assert verbs == ["ssh", "scp", "ssh", "ssh", "ssh", "ssh"]
  verbs = [c[4] for c in tpu_dry_run("--no-install", "--no-tail") if c[0] == "gcloud"]
  assert verbs == ["ssh"]
  script = os.path.join(LAUNCH, "tpu_pod.sh")
  proc = run(["bash", script, "--dry-run", "--zone", "z", "--", "--config", "c"])
  assert proc.returncode == 2 and "--name and --zone are required" in proc.stderr
  proc = run(["bash", script, "--dry-run", "--name", "n", "--zone", "z", "--create", "--", "x"])
  assert proc.returncode == 2 and "--create needs --accelerator-type" in proc.stderr
  # A dry run follows the same refusals: a local workdir (the end-to-end test with the
  # fake gcloud checks the others), unless the user says it is shared.
  proc = run(["bash", script, "--dry-run", "--name", "n", "--zone", "z", "--", "--workdir=/tmp/w"])
  assert proc.returncode == 2 and "local to each worker" in proc.stderr
  proc = run(["bash", script, "--dry-run", "--name", "n", "--zone", "z", "--allow-local-workdir",
              "--no-install", "--no-tail", "--", "--workdir=/tmp/w"])
  assert proc.returncode == 0, proc.stderr
  # Without --dry-run gcloud is required; an empty PATH makes sure none is found (or run).
  proc = run(["/bin/bash", script, "--name", "n", "--zone", "z", "--", "--workdir", "/mnt/x"],
             env={"PATH": str(tmp_path)})
  assert proc.returncode == 2 and "gcloud not found" in proc.stderr


def test_local_sh_checks_its_arguments(tmp_path):
  script = os.path.join(LAUNCH, "local.sh")
  proc = run(["bash", script, "two", "--workdir", str(tmp_path)])
  assert proc.returncode == 2 and "usage:" in proc.stderr
  proc = run(["bash", script, "2", "--config", "configs/mm_world.py:tiny"])
  assert proc.returncode == 2 and "--workdir is required" in proc.stderr


def test_sbatch_header_requeues_and_warns_before_the_time_limit():
  text = open(os.path.join(LAUNCH, "slurm.sbatch")).read()
  header = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, re.M))
  assert "requeue" in header
  assert re.fullmatch(r"B:USR1@\d+", header["signal"])
  assert {"nodes", "ntasks-per-node", "gpus-per-node", "time"} <= header.keys()
  # Only python -m mmjax.train is launched; the training logic stays in the package.
  assert "-m mmjax.train" in text


def test_sbatch_without_workdir_fails_before_srun(tmp_path):
  proc = run(["bash", os.path.join(LAUNCH, "slurm.sbatch"), "--config", "c"],
             env={"SLURM_JOB_ID": "1", "SLURM_SUBMIT_DIR": ROOT})
  assert proc.returncode == 2 and "--workdir is required" in proc.stderr


# ------------------------------------------------------------------ environment detection
SLURM_STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": "4",
              "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
              "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}


def clean_env(monkeypatch, **env):
  for k in list(os.environ):
    if k.startswith(("SLURM_", "TPU_", "MMJAX_DISTRIBUTED", "CUDA_VISIBLE")):
      monkeypatch.delenv(k)
  for k, v in env.items():
    monkeypatch.setenv(k, v)


def test_cluster_detection(monkeypatch):
  from mmjax.runtime import distributed
  clean_env(monkeypatch)
  assert distributed.cluster_environment() is None
  clean_env(monkeypatch, **SLURM_STEP)
  assert distributed.cluster_environment() == "slurm"
  # The batch script itself (no srun step) and one-task steps are single processes.
  clean_env(monkeypatch, SLURM_JOB_ID="7", SLURM_NTASKS="4", SLURM_TASKS_PER_NODE="2(x2)")
  assert distributed.cluster_environment() is None
  clean_env(monkeypatch, **{**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "1"})
  assert distributed.cluster_environment() is None
  clean_env(monkeypatch, TPU_WORKER_HOSTNAMES="10.0.0.1,10.0.0.2")
  assert distributed.cluster_environment() == "tpu"
  clean_env(monkeypatch, TPU_WORKER_HOSTNAMES="localhost")
  assert distributed.cluster_environment() is None
  clean_env(monkeypatch, MMJAX_DISTRIBUTED="auto")
  assert distributed.cluster_environment() == "auto"


def test_slurm_gpu_assignment(monkeypatch):
  from mmjax.runtime import distributed
  clean_env(monkeypatch, **SLURM_STEP)
  assert distributed.slurm_local_device_ids() is None  # CPU: nothing to choose
  clean_env(monkeypatch, **SLURM_STEP, CUDA_VISIBLE_DEVICES="0,1")
  assert distributed.slurm_local_device_ids() is None  # one per GPU: JAX's own choice
  clean_env(monkeypatch, **SLURM_STEP, CUDA_VISIBLE_DEVICES="3")
  assert distributed.slurm_local_device_ids() == [0]  # bound by SLURM: renumbered to 0
  clean_env(monkeypatch, **{**SLURM_STEP, "SLURM_STEP_TASKS_PER_NODE": "1(x2)"},
            CUDA_VISIBLE_DEVICES="0,1,2,3")
  assert distributed.slurm_local_device_ids() == [0, 1, 2, 3]  # one per node: all of them


def test_single_process_needs_no_initialisation(monkeypatch):
  from mmjax.runtime import distributed
  clean_env(monkeypatch)
  distributed.initialize()  # no flags, no cluster: returns without touching jax.distributed
  assert distributed.any_process(True) and not distributed.any_process(False)
