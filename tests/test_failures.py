"""Multi-process failure behaviour without a launcher's help: a lost process (SIGKILL) or
a stalled one (SIGSTOP) ends the survivors within a bound, with a message naming it. Both
run with the default step timeout (10 minutes): the peers' heartbeats alone must catch it,
before JAX's own heartbeat deadline aborts with a C++ stack."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, cli_env, tiny_args
from tests.test_multiprocess import TWO_DEVICES, unused_port

pytestmark = pytest.mark.slow


def _has_train_row(path) -> bool:
  try:
    return any('"train/' in line for line in path.read_text().splitlines())
  except FileNotFoundError:
    return False


def start_two(workdir, world_dir, *overrides):
  port = unused_port()
  args = tiny_args(workdir, world_dir, "--config.total_steps=100000",
                   "--config.checkpoint.every_steps=50000", *overrides)
  procs = []
  for i in range(2):
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "mmjax.train", *args, f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={i}", "--distributed_timeout_s=120"],
        cwd=ROOT, env=cli_env(XLA_FLAGS=TWO_DEVICES), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True))
  deadline = time.time() + 240
  # The first training row: both processes are inside the step loop, watchdogs running.
  while not _has_train_row(workdir / "metrics.jsonl"):
    if time.time() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      raise AssertionError("training did not start: " + procs[0].communicate()[1][-3000:])
    time.sleep(0.5)
  return procs


def test_a_lost_process_ends_the_other_within_a_minute_naming_it(world_dir, tmp_path):
  survivor, victim = start_two(tmp_path, world_dir)
  try:
    victim.kill()
    t0 = time.time()
    _, err = survivor.communicate(timeout=90)
    elapsed = time.time() - t0
  finally:
    survivor.kill()
    victim.kill()
  assert survivor.returncode != 0
  assert elapsed < 60, f"survivor took {elapsed:.0f}s"
  # One clear line naming the lost process; no Python or C++ stack.
  assert "lost: process 1 (" in err, err[-3000:]
  assert "Traceback" not in err and "Check failure" not in err and "*** " not in err, err[-3000:]


def test_a_stalled_process_is_named_by_the_watchdog(world_dir, tmp_path):
  survivor, stalled = start_two(tmp_path, world_dir)
  try:
    stalled.send_signal(signal.SIGSTOP)
    t0 = time.time()
    _, err = survivor.communicate(timeout=90)
    elapsed = time.time() - t0
  finally:
    stalled.send_signal(signal.SIGCONT)
    survivor.kill()
    stalled.kill()
  assert survivor.returncode == 3, err[-3000:]  # the watchdog's exit code
  assert elapsed < 45
  assert "step watchdog: a peer stopped sending heartbeats" in err, err[-3000:]
  assert "stalled or lost: process 1" in err, err[-3000:]
  assert "last completed step is" in err
