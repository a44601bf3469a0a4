"""A one-node SLURM cluster on this machine, for tests of launch/slurm.sbatch.

Installs Debian's slurm-wlm and munge when missing (root only), starts munged, slurmctld and
slurmd with a slurm.conf written for this host into a temporary folder, and stops the daemons
it started, by PID. Every wait is bounded. The daemons run in their own sessions, and a
reaper process (tests/daemon_reaper.py) ends them if the test process dies without stopping
them (a suite killed at its time limit); an atexit hook covers a normal interpreter exit. Problems raise SlurmUnavailable with the reason:
the tests fail with it rather than skip, so CI never passes without having run them.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from tests.daemon_reaper import _alive, _pid

PACKAGES = ("slurm-wlm", "munge")
MUNGE_SOCKET = "/run/munge/munge.socket.2"


class SlurmUnavailable(RuntimeError):
  """SLURM could not be installed or started here; the message says why."""


def _run(cmd: list[str], timeout: float, env: dict | None = None,
         new_session: bool = False) -> subprocess.CompletedProcess:
  try:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          start_new_session=new_session)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise SlurmUnavailable(f"{' '.join(cmd)}: {e}") from e


def _wait(predicate, timeout: float, what: str, log: str | None = None) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.5)
  tail = ""
  if log and os.path.exists(log):
    with open(log) as f:
      tail = "\nlast lines of " + log + ":\n" + "".join(f.readlines()[-20:])
  raise SlurmUnavailable(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def ensure_installed(timeout: float = 900) -> None:
  if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
    return
  if os.geteuid() != 0:
    raise SlurmUnavailable("slurm-wlm/munge are not installed and installing them needs root")
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  for cmd in (["apt-get", "update"],
              ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
    proc = _run(cmd, timeout, env)
    if proc.returncode != 0:
      raise SlurmUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
  if not shutil.which("slurmctld"):
    raise SlurmUnavailable(f"apt-get installed {PACKAGES} but slurmctld is not on PATH")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LocalSlurm:
  """`with LocalSlurm(tmp_dir) as slurm: slurm.run(["sbatch", ...])`."""

  def __init__(self, base_dir: str, start_timeout: float = 90):
    self.dir = os.path.abspath(base_dir)
    self.conf = os.path.join(self.dir, "slurm.conf")
    self.host = socket.gethostname()
    self.start_timeout = start_timeout
    self._started: list[str] = []  # pid files of the daemons this object started
    self._reaper: subprocess.Popen | None = None

  # ------------------------------------------------------------------ setup
  def _munge_works(self) -> bool:
    if not os.path.exists(MUNGE_SOCKET):
      return False
    cred = _run(["munge", "-n"], 10)
    return cred.returncode == 0 and _run(["unmunge"], 10).returncode != 127

  def _start_munge(self) -> None:
    if self._munge_works():
      return  # someone else's munged serves us; it is not ours to stop
    os.makedirs("/run/munge", exist_ok=True)
    if not os.path.exists("/etc/munge/munge.key"):
      for cmd in (["mungekey", "--create"], ["create-munge-key", "-f"]):
        if shutil.which(cmd[0]) and _run(cmd, 60).returncode == 0:
          break
      else:
        raise SlurmUnavailable("no /etc/munge/munge.key and no tool to create one")
    # --force: munged refuses to start as root, or with a stale socket, without it.
    proc = _run(["munged", "--force", "--pid-file", os.path.join(self.dir, "munged.pid")], 30,
                new_session=True)
    if proc.returncode != 0:
      raise SlurmUnavailable(f"munged --force failed: {proc.stderr[-1000:]}")
    self._started.append(os.path.join(self.dir, "munged.pid"))
    _wait(self._munge_works, 20, "munged to answer")

  def _write_conf(self) -> None:
    for sub in ("state", "spool"):
      os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
    d = self.dir
    lines = [
        "ClusterName=mmjaxtest",
        f"SlurmctldHost={self.host}",
        "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        # Free ports, so a test cluster never collides with a real one on the default ports.
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        # linuxproc/none: no cgroups needed (containers, CI runners).
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
        "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        # Quick turnover of finished jobs; a requeued job may start again at once.
        "MinJobAge=300", "KillWait=30", "SlurmctldTimeout=30",
        # A requeued job waits for its launch credential to expire (120 s by default).
        "AuthInfo=cred_expire=10",
        f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
        f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
        f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
        f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
        f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
    ]
    with open(self.conf, "w") as f:
      f.write("\n".join(l for l in lines if not l.endswith("=")) + "\n")

  def env(self) -> dict:
    """The environment for SLURM clients (sbatch, squeue, ...) talking to this cluster."""
    return dict(os.environ, SLURM_CONF=self.conf)

  def run(self, cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return _run(cmd, timeout, self.env())

  def node_state(self) -> str:
    proc = self.run(["sinfo", "-h", "-N", "-o", "%T"], 10)
    return proc.stdout.strip() if proc.returncode == 0 else ""

  def _start_reaper(self) -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pidfiles = [os.path.join(self.dir, f) for f in ("slurmd.pid", "slurmctld.pid", "munged.pid")]
    self._reaper = subprocess.Popen(
        [sys.executable, "-m", "tests.daemon_reaper", str(os.getpid()), "--slurm-conf",
         self.conf, *pidfiles], cwd=root, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(self.stop)

  def start(self) -> "LocalSlurm":
    os.makedirs(self.dir, exist_ok=True)
    ensure_installed()
    self._start_reaper()  # before any daemon starts: a kill at any moment leaves none
    self._start_munge()
    self._write_conf()
    for daemon, pidfile, log in (("slurmctld", "slurmctld.pid", "slurmctld.log"),
                                 ("slurmd", "slurmd.pid", "slurmd.log")):
      # -i: ignore state left by an earlier cluster in the same folder; the daemons fork.
      args = [daemon, "-f", self.conf] + (["-i"] if daemon == "slurmctld" else [])
      proc = _run(args, 60, self.env(), new_session=True)
      pid = os.path.join(self.dir, pidfile)
      if proc.returncode != 0:
        raise SlurmUnavailable(f"{daemon} failed to start ({proc.returncode}): {proc.stderr[-1000:]}")
      self._started.append(pid)
      _wait(lambda: _alive(_pid(pid)), 30, f"{daemon} to write {pid}",
            log=os.path.join(self.dir, log))
    _wait(lambda: self.node_state() == "idle", self.start_timeout,
          f"node {self.host} to become idle (sinfo says {self.node_state()!r})",
          log=os.path.join(self.dir, "slurmd.log"))
    return self

  def cancel_all(self, timeout: float = 60) -> None:
    """Cancels this cluster's jobs and waits (bounded) until their processes are gone;
    stopping slurmd first would leave them running."""
    if not os.path.exists(self.conf) or not _alive(_pid(os.path.join(self.dir, "slurmctld.pid"))):
      return
    jobs = self.run(["squeue", "-h", "-o", "%A"], 10).stdout.split()
    if not jobs:
      return
    self.run(["scancel", *jobs], 10)
    try:
      _wait(lambda: not self.run(["squeue", "-h", "-o", "%A"], 10).stdout.split(), timeout,
            f"jobs {jobs} to end")
    except SlurmUnavailable:
      pass  # stop the daemons anyway

  def stop(self) -> None:
    """Cancels running jobs, then stops the daemons this object started (by PID), newest first."""
    self.cancel_all()
    for pidfile in reversed(self._started):
      pid = _pid(pidfile)
      if not _alive(pid):
        continue
      os.kill(pid, signal.SIGTERM)
      deadline = time.time() + 20
      while _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
      if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    self._started.clear()
    if self._reaper is not None:
      self._reaper.kill()
      self._reaper.wait(timeout=10)
      self._reaper = None

  def __enter__(self):
    try:
      return self.start()
    except BaseException:
      self.stop()
      raise

  def __exit__(self, *exc):
    self.stop()

  # ------------------------------------------------------------------ jobs
  def submit(self, args: list[str], cwd: str, env: dict | None = None) -> int:
    proc = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=30, env={**(env or os.environ), "SLURM_CONF": self.conf})
    if proc.returncode != 0:
      raise AssertionError(f"sbatch {' '.join(args)} failed: {proc.stderr}")
    return int(proc.stdout.strip().split(";")[0])

  def job_state(self, job: int) -> str:
    proc = self.run(["scontrol", "show", "job", str(job), "-o"], 10)
    for field in proc.stdout.split():
      if field.startswith("JobState="):
        return field.split("=", 1)[1]
    return "UNKNOWN"

  def wait_job(self, job: int, timeout: float, states=("COMPLETED", "FAILED", "CANCELLED",
                                                         "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")) -> str:
    _wait(lambda: self.job_state(job) in states, timeout, f"job {job} to reach one of {states}")
    return self.job_state(job)
