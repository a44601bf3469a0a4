"""A lost peer (issue 21, item 6): the survivor ends with exit code 3 within 30 s and one
mmjax line naming the lost process."""
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


def test_killing_process_1_ends_process_0_with_exit_3_naming_it(world_dir, tmp_path):
  workdir, port = tmp_path / "run", unused_port()
  args = tiny_args(workdir, world_dir, "--config.total_steps=100000",
                   "--config.checkpoint.every_steps=50000", "--config.progress=False")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "mmjax.train", *args, f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}"], cwd=ROOT,
      env=cli_env(XLA_FLAGS=TWO_DEVICES), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  try:
    wait_for(lambda: (workdir / "metrics.jsonl").exists() or any(p.poll() is not None
                                                                 for p in procs),
             240, "the first metrics row")
    assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    took = time.monotonic() - killed
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode == 3, err[-3000:]
  assert took <= 30, (took, err[-3000:])
  assert "process 1" in err, err[-3000:]
