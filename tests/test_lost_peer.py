"""A lost peer (issue 21, item 6): the survivor ends with exit code 3 and one mmjax line
naming the lost process (the issue's bar, within 30 s, is a benchmark figure, not a test)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, cli_env, tiny_args, wait_for
from tests.test_multiprocess import TWO_DEVICES, unused_port

pytestmark = pytest.mark.slow


# Killing process 0 is not covered: process 1 then aborts in JAX's C++ coordination client
# (exit 134) before any Python runs; its missed_heartbeat_callback could not be used here
# (std::bad_cast converting the status with jaxlib of jax 0.10.2).
@pytest.mark.parametrize("victim", [1])
def test_killing_a_process_ends_the_other_with_exit_3_naming_it(victim, world_dir, tmp_path):
  workdir, port = tmp_path / "run", unused_port()
  args = tiny_args(workdir, world_dir, "--config.total_steps=100000",
                   "--config.checkpoint.every_steps=50000", "--config.progress=False")
  logs = [tmp_path / f"process_{i}.err" for i in range(2)]  # files: a full pipe would block
  procs = [subprocess.Popen(
      [sys.executable, "-m", "mmjax.train", *args, f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}"], cwd=ROOT,
      env=cli_env(XLA_FLAGS=TWO_DEVICES), stdout=subprocess.DEVNULL, stderr=open(logs[i], "w"))
      for i in range(2)]
  both = lambda: "\n".join(f"--- process {i}\n{l.read_text()[-2000:]}" for i, l in enumerate(logs))
  try:
    has_row = lambda: (workdir / "metrics.jsonl").exists() and "train/" in (
        workdir / "metrics.jsonl").read_text()  # both in the loop, heartbeats flowing
    wait_for(lambda: has_row() or any(p.poll() is not None for p in procs), 240,
             "the first metrics row")
    assert all(p.poll() is None for p in procs), both()
    survivor = procs[1 - victim]
    procs[victim].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    survivor.wait(timeout=120)
    took = time.monotonic() - killed
  finally:
    for p in procs:
      p.kill()
  err = logs[1 - victim].read_text()
  assert survivor.returncode == 3, err[-3000:]
  print(f"process {1 - victim} ended {took:.1f}s after process {victim} was killed")  # no bar:
  # tests do not assert on wall-clock time; benchmarks/workdir_safety.py measures it
  assert f"process {victim}" in err and "error: " in err, err[-3000:]
