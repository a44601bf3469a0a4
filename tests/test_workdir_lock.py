"""The workdir lock's decisions, with real files and real processes (fast tier)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mmjax.checkpoint import workdir_lock
from mmjax.checkpoint.workdir_lock import WorkdirLock, WorkdirLockedError


def write_lock(workdir, **record):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "lock"), "w") as f:
    json.dump(record, f)


def test_a_live_holder_is_refused_and_its_release_frees_the_workdir(tmp_path):
  held = WorkdirLock.acquire(str(tmp_path))
  with pytest.raises(WorkdirLockedError, match=f"pid {os.getpid()}, since "):
    WorkdirLock.acquire(str(tmp_path))
  held.release()
  WorkdirLock.acquire(str(tmp_path)).release()
  assert not os.path.exists(tmp_path / "lock")


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  holder = json.load(open(WorkdirLock.acquire(str(tmp_path / "x")).path))  # a real record
  write_lock(tmp_path, **dict(holder, pid=dead.pid, token="old"))
  lock = WorkdirLock.acquire(str(tmp_path))
  assert lock.record["pid"] == os.getpid()
  assert f"process {dead.pid} is not running" in caplog.text
  lock.release()


def test_another_hosts_lock_is_kept_while_its_lease_is_fresh_then_taken_over(tmp_path):
  write_lock(tmp_path, host="elsewhere", pid=1, since=time.time(), token="t")
  with pytest.raises(WorkdirLockedError, match="host elsewhere, pid 1"):
    WorkdirLock.acquire(str(tmp_path))
  old = time.time() - workdir_lock.LEASE_S - 5
  os.utime(tmp_path / "lock", (old, old))
  WorkdirLock.acquire(str(tmp_path)).release()


def test_a_requeued_slurm_job_takes_over_its_earlier_incarnation(tmp_path, monkeypatch):
  write_lock(tmp_path, host="node7", pid=1, since=time.time(), token="t", slurm_job_id="42",
             slurm_restart=0)
  monkeypatch.setenv("SLURM_JOB_ID", "42")
  monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
  WorkdirLock.acquire(str(tmp_path)).release()


def test_restored_non_finite_values_are_named():
  from mmjax.checkpoint.verified_restore import nonfinite_leaves
  tree = {"params": {"w": np.ones(3, np.float32), "b": np.array([1.0, np.inf], np.float32)},
          "step": np.int32(3)}
  assert nonfinite_leaves(tree) == ["params/b"]
