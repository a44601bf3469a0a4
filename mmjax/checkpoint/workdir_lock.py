"""One writer per workdir: `<workdir>/lock`, held by process 0 of a training job for its lifetime.

The lock is a file created with O_EXCL (atomic on local disks and on NFS v3+/Lustre/GPFS),
holding JSON {host, pid, since, token, ...}. A daemon thread touches it every
HEARTBEAT_S, so its mtime is a lease. A lock is stale, and is taken over without a human,
when its holder is provably gone:
  * same host: the pid is not running, or is running but started after the lock was taken
    (a recycled pid; /proc start times are compared);
  * same SLURM job with a higher SLURM_RESTART_COUNT: a requeued job's earlier incarnation is
    dead by construction (SLURM ended it before requeueing), whatever its host;
  * another host: its lease (mtime) is older than LEASE_S (node lost, or killed -9 there).
A takeover is guarded by `lock.takeover` (also O_EXCL), so two starters that both judge the
same lock stale cannot both win. A holder that finds its lock taken over (it was frozen for
longer than the lease) ends its process: two writers are worse than one lost run.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

from mmjax.errors import MmjaxError

log = logging.getLogger("mmjax.checkpoint.workdir_lock")

LOCK_NAME = "lock"
HEARTBEAT_S = 10.0
LEASE_S = 90.0        # > several missed heartbeats, < what a user would wait for a requeue
TAKEOVER_GUARD_S = 30.0  # a takeover guard older than this was left by a starter that died
WRITING_S = 2.0  # an unreadable lock younger than this may be mid-write by another starter
LOST_LOCK_EXIT_CODE = 4


class WorkdirLockedError(MmjaxError, RuntimeError):
  """Another live process is training into this workdir."""


def _proc_start_ticks(pid: int) -> int | None:
  """Start time of `pid` in clock ticks since boot (Linux), or None where unknown."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # exists, owned by someone else
  return True


def _boot_id() -> str:
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read().strip()
  except OSError:
    return ""


def _describe(holder: dict) -> str:
  try:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
  except (KeyError, TypeError, ValueError, OverflowError, OSError):
    when = "unknown time"
  job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
  return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}{job}, since {when}"


def stale_reason(holder: dict, lock_age_s: float) -> str | None:
  """Why the holder of a lock is known to be gone, or None if it may be alive."""
  job, restarts = os.environ.get("SLURM_JOB_ID"), int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
  if job and holder.get("slurm_job_id") == job and restarts > int(holder.get("slurm_restart", 0)):
    return f"SLURM requeued job {job} (restart {restarts})"
  same_machine = holder.get("host") == socket.gethostname() and holder.get("boot_id") == _boot_id()
  if same_machine:
    pid = int(holder.get("pid", -1))
    if pid <= 0 or not _pid_running(pid):
      return f"process {pid} is not running"
    started = _proc_start_ticks(pid)
    if holder.get("pid_start") is not None and started is not None and started != holder["pid_start"]:
      return f"pid {pid} now belongs to another process"
    return None
  if lock_age_s > LEASE_S:
    return f"its lease was last renewed {lock_age_s:.0f}s ago (limit {LEASE_S:.0f}s)"
  return None


class WorkdirLock:
  """`lock = WorkdirLock.acquire(workdir)`; `lock.release()` when the run ends."""

  def __init__(self, path: str, record: dict):
    self.path, self.record = path, record
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._heartbeat, name="mmjax-workdir-lock",
                                    daemon=True)

  # ------------------------------------------------------------ acquiring
  @classmethod
  def acquire(cls, workdir: str) -> "WorkdirLock":
    """Creates the workdir if needed and takes its lock, or raises WorkdirLockedError."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
              "token": uuid.uuid4().hex, "boot_id": _boot_id(),
              "pid_start": _proc_start_ticks(os.getpid()),
              "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
              "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
              "argv": " ".join(sys.argv)[:500]}
    for _ in range(3):  # a lost race with another starter is retried from the top
      if _create_exclusive(path, record):
        lock = cls(path, record)
        lock._thread.start()
        return lock
      holder, age = _read(path)
      if holder is None:
        if age is None:
          continue  # vanished between our attempt and the read
        if age < WRITING_S:  # created by another starter that is writing it right now
          time.sleep(WRITING_S)
          continue
        reason = _unreadable_reason(workdir, path, age)
        holder = {"host": "?", "pid": "?"}
      else:
        reason = stale_reason(holder, age)
      if reason is None:
        raise WorkdirLockedError(
            f"workdir {workdir} is in use by another trainer ({_describe(holder)}); "
            f"one writer per workdir. Wait for it to end, stop it, or use another --workdir. "
            f"(Remove {path} only if you are sure that process is gone.)")
      if _take_over(path, holder, record):
        log.warning("took over the lock of %s: %s (was %s)", workdir, reason, _describe(holder))
        lock = cls(path, record)
        lock._thread.start()
        return lock
    raise WorkdirLockedError(f"could not take the lock {path}: other trainers keep starting "
                             f"on this workdir at the same time; start only one")

  # ------------------------------------------------------------ holding
  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        self._renew()
      except Exception as e:  # noqa: BLE001 -- the lease must outlive any surprise
        log.warning("could not renew the workdir lock %s: %s: %s", self.path,
                    type(e).__name__, e)

  def _renew(self) -> None:
    holder, age = _read(self.path)
    if holder is None and age is not None:  # junk written over our lock: write ours again
      log.warning("the workdir lock %s was overwritten with unreadable contents; rewriting "
                  "this trainer's record", self.path)
      _write_record(self.path, self.record)
    if holder is not None and holder.get("token") != self.record["token"]:
      msg = (f"the lock of this workdir ({self.path}) was taken over by {_describe(holder)} "
             f"while this process held it (was it frozen for more than {LEASE_S:.0f}s?); "
             f"stopping so that only one process writes there")
      log.error(msg)
      from mmjax.config import cli
      cli.fail(msg, LOST_LOCK_EXIT_CODE)
    try:
      os.utime(self.path)
    except OSError as e:  # a full or read-only disk: the run's own writes will say so
      log.warning("could not renew the workdir lock %s: %s", self.path, e)

  def release(self) -> None:
    self._stop.set()
    holder, age = _read(self.path)
    # Unreadable: junk over our lock (a takeover always writes a valid record), so ours.
    if (holder is None and age is not None) or (
        holder is not None and holder.get("token") == self.record["token"]):
      try:
        os.unlink(self.path)
      except OSError:
        pass


def _create_exclusive(path: str, record: dict) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    f.write(json.dumps(record))
    f.flush()
    os.fsync(f.fileno())
  return True


def _read(path: str) -> tuple[dict | None, float | None]:
  """(holder record, or None if unreadable: not JSON, not a record, fields of the wrong
  type; age of the lease in s, or None if there is no file). Never raises over contents."""
  try:
    age = time.time() - os.stat(path).st_mtime
    with open(path, "rb") as f:
      data = f.read(1 << 16)
  except FileNotFoundError:
    return None, None
  try:
    return _record(json.loads(data.decode("utf-8"))), age
  except (ValueError, TypeError, KeyError, OverflowError):
    return None, age


def _record(raw) -> dict:
  """The fields a lock record must have, with their types checked (raises if not)."""
  if not isinstance(raw, dict) or isinstance(raw.get("pid"), bool):
    raise TypeError("not a lock record")
  optional_int = lambda v: None if v is None else int(v)
  return {"host": str(raw["host"]), "pid": int(raw["pid"]), "token": str(raw["token"]),
          "since": None if raw.get("since") is None else float(raw["since"]),
          "boot_id": str(raw.get("boot_id") or ""),
          "pid_start": optional_int(raw.get("pid_start")),
          "slurm_job_id": None if raw.get("slurm_job_id") is None else str(raw["slurm_job_id"]),
          "slurm_restart": int(raw.get("slurm_restart") or 0)}


def _unreadable_reason(workdir: str, path: str, age: float) -> str:
  """Why an unreadable lock (of unknown holder) is stale; refuses one younger than the lease,
  which a live trainer may still be renewing."""
  if age <= LEASE_S:
    raise WorkdirLockedError(
        f"workdir {workdir} has a lock file {path} whose contents are unreadable (empty, or not "
        f"an mmjax lock record), renewed {age:.0f}s ago: a live trainer may hold it. It is "
        f"taken over once its lease is {LEASE_S:.0f}s old; remove it only if you are sure no "
        f"trainer uses this workdir.")
  return f"its lock file is unreadable and was last renewed {age:.0f}s ago (limit {LEASE_S:.0f}s)"


def _write_record(path: str, record: dict) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(json.dumps(record))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _take_over(path: str, stale: dict, record: dict) -> bool:
  """Replaces the stale lock by ours; False if another starter got there first."""
  guard = path + ".takeover"
  try:
    fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    try:
      if time.time() - os.stat(guard).st_mtime > TAKEOVER_GUARD_S:
        os.unlink(guard)  # left by a starter that died mid-takeover
    except OSError:
      pass
    time.sleep(0.5)
    return False
  os.close(fd)
  try:
    current, _ = _read(path)
    if current is not None and current.get("token") != stale.get("token"):
      return False  # someone else replaced it meanwhile; start over
    try:
      os.unlink(path)
    except FileNotFoundError:
      pass
    return _create_exclusive(path, record)
  finally:
    os.unlink(guard)


def acquire_for_job(workdir: str, process_index: int, process_count: int):
  """Process 0 takes the lock; every process of the job learns whether it got it, so that
  a refused multi-process job ends on all processes with one message, not in a hang."""
  lock, error = None, None
  if process_index == 0:
    try:
      lock = WorkdirLock.acquire(workdir)
    except WorkdirLockedError as e:
      error = e
  if process_count > 1:
    from mmjax.runtime import distributed
    if distributed.any_process(error is not None) and error is None:
      if lock is not None:
        lock.release()
      raise WorkdirLockedError(f"process 0 could not lock workdir {workdir}; its log says why")
  if error is not None:
    raise error
  return lock
