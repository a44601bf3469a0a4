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


JUNK = [b"\x8f\xff\x00 random bytes \xfe", b"42", b"[]", b'"hello"', b'{"pid": "abc"}',
        b'{"since": "x"}', b"", b"null", b'{"host": "h", "pid": true, "token": "t"}']


@pytest.mark.parametrize("junk", JUNK)
def test_junk_in_the_lock_is_a_lock_of_unknown_age_never_a_crash(tmp_path, junk):
  path = tmp_path / "lock"
  path.write_bytes(junk)
  old = time.time() - 5  # not being written by a starter any more, well within the lease
  os.utime(path, (old, old))
  with pytest.raises(WorkdirLockedError, match="contents are unreadable.*renewed 5s ago"):
    WorkdirLock.acquire(str(tmp_path))
  old = time.time() - workdir_lock.LEASE_S - 5  # past the lease: stale
  os.utime(path, (old, old))
  lock = WorkdirLock.acquire(str(tmp_path))
  assert json.load(open(path))["token"] == lock.record["token"]
  lock.release()
  assert not os.path.exists(path)


def test_junk_over_a_held_lock_is_repaired_by_its_holder_and_released(tmp_path, monkeypatch):
  lock = WorkdirLock.acquire(str(tmp_path))
  (tmp_path / "lock").write_bytes(b"\x8f\xff\x00 random")
  lock._renew()  # what the heartbeat thread does every HEARTBEAT_S
  assert json.load(open(tmp_path / "lock"))["token"] == lock.record["token"]
  (tmp_path / "lock").write_bytes(b"[]")
  lock.release()  # no traceback, and the workdir is free again
  assert not os.path.exists(tmp_path / "lock")
