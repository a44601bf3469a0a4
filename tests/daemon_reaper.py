"""Ends daemons when the process that started them dies, however it dies (kill -9 included).

`python -m tests.daemon_reaper PARENT_PID [--slurm-conf CONF] PIDFILE...` runs in its own
session (so a kill of the test's process group spares it), polls PARENT_PID once a second,
and when it is gone: cancels the SLURM jobs of CONF (bounded), then SIGTERMs, and after a
grace period SIGKILLs, the processes named by the PID files. Used by tests/slurm_cluster.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _alive(pid: int | None) -> bool:
  if not pid:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:  # a zombie child of ours counts as gone
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return True


def _pid(path: str) -> int | None:
  try:
    with open(path) as f:
      return int(f.read().strip())
  except (OSError, ValueError):
    return None


def reap(pidfiles: list[str], slurm_conf: str | None, grace_s: float = 10) -> None:
  if slurm_conf and os.path.exists(slurm_conf):
    env = dict(os.environ, SLURM_CONF=slurm_conf)
    try:
      jobs = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True,
                            text=True, timeout=10).stdout.split()
      if jobs:
        subprocess.run(["scancel", *jobs], env=env, capture_output=True, timeout=10)
        time.sleep(3)
    except (OSError, subprocess.TimeoutExpired):
      pass
  pids = [p for p in map(_pid, pidfiles) if _alive(p)]
  for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
    for p in pids:
      try:
        os.kill(p, sig)
      except OSError:
        pass
    deadline = time.time() + wait
    while any(_alive(p) for p in pids) and time.time() < deadline:
      time.sleep(0.2)


def main(argv: list[str]) -> int:
  parent, rest = int(argv[1]), argv[2:]
  conf = None
  if rest[:1] == ["--slurm-conf"]:
    conf, rest = rest[1], rest[2:]
  while _alive(parent):
    time.sleep(1.0)
  reap(rest, conf)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
