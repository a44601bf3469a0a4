"""launch/slurm.sbatch on a real one-node SLURM cluster (tests/slurm_cluster.py).

Two tasks of 2 CPU devices each form one JAX job of 4 devices. When SLURM cannot be installed
or started these tests fail with the reason (in CI, or as root); only a non-root run outside
CI, where installing is impossible, skips.
"""
from __future__ import annotations

import json
import os
import sys

import pytest

from tests.conftest import ROOT, TINY, cli_env, wait_for
from tests.slurm_cluster import LocalSlurm, SlurmUnavailable

pytestmark = pytest.mark.slow

JOB_TIMEOUT_S = 300
# CPU only: no GPUs to ask for (the script's default is 8 per node), one core per task.
CPU_JOB = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1",
           "--time=15"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
  cluster = LocalSlurm(str(tmp_path_factory.mktemp("slurm")))
  try:
    cluster.start()
  except SlurmUnavailable as e:
    if os.environ.get("CI") != "true" and os.geteuid() != 0:
      pytest.skip(f"SLURM unavailable and not root (CI would fail here): {e}")
    pytest.fail(f"could not start a local SLURM cluster: {e}", pytrace=False)
  yield cluster
  cluster.stop()


def submit(slurm, tmp_path, workdir, world_dir, *overrides) -> int:
  env = cli_env(MMJAX_PYTHON=sys.executable,
                XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return slurm.submit([*CPU_JOB, f"--output={tmp_path}/slurm-%j.out",
                       os.path.join(ROOT, "launch", "slurm.sbatch"), "--config", TINY,
                       "--workdir", str(workdir),
                       f"--config.tasks.default.data.data_dir={world_dir}", *overrides],
                      cwd=ROOT, env=env)


def logs(workdir) -> str:
  out = []
  for name in sorted(os.listdir(workdir / "logs")):
    with open(workdir / "logs" / name) as f:
      out.append(f"==> {name} <==\n" + "".join(f.readlines()[-30:]))
  return "\n".join(out)


def read(path) -> str:
  return open(path).read() if os.path.exists(path) else ""


def test_two_tasks_form_one_jax_job(slurm, world_dir, tmp_path):
  # Resuming inside SLURM is the requeue test's (the same trainer path as a resubmission,
  # which is left out to keep the suite's time).
  workdir = tmp_path / "run"
  job = submit(slurm, tmp_path, workdir, world_dir, "--config.total_steps=8")
  state = slurm.wait_job(job, JOB_TIMEOUT_S)
  assert state == "COMPLETED", f"job {job}: {state}\n{logs(workdir)}"
  for i in range(2):
    assert f"process {i} of 2 joined (slurm" in read(workdir / "logs" / f"process_{i}.log"), \
        logs(workdir)
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  train_steps = [r["step"] for r in rows if "train/default/loss" in r]
  assert train_steps == [4, 8]  # one writer: no row twice
  assert "8" in os.listdir(workdir / "checkpoints")


def test_time_limit_warning_saves_requeues_and_resumes(slurm, world_dir, tmp_path):
  # Needs the trainer to stop all processes at the same step (distributed.any_process):
  # without it a signal seen by the two processes at different steps can deadlock them.
  workdir = tmp_path / "run"
  job = submit(slurm, tmp_path, workdir, world_dir, "--config.total_steps=100000",
               "--config.checkpoint.every_steps=50000")
  try:
    wait_for(lambda: read(workdir / "metrics.jsonl").strip(), 240, "training to log",
             lambda: logs(workdir), poll=1)
    # What `#SBATCH --signal=B:USR1@300` sends to the batch script before the time limit.
    proc = slurm.run(["scancel", "--signal=USR1", "--batch", str(job)])
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: "resumed from" in read(workdir / "logs" / "process_0.log"), 240,
             "the requeued job to resume", lambda: logs(workdir), poll=1)
  finally:
    slurm.run(["scancel", str(job)])
  job_log = read(workdir / "logs" / f"job_{job}.log")
  assert "requeueing job" in job_log and "(restart 1)" in job_log, job_log
  saved = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
  assert len(saved) == 1 and 4 <= saved[0] < 50000, saved
  p0 = read(workdir / "logs" / "process_0.log")
  assert f"resumed from {workdir}/checkpoints/{saved[0]}" in p0
  assert "saving step" in p0
  slurm.wait_job(job, 60)
