"""tests/daemon_reaper.py: daemons a test started end when the test process is killed -9."""
from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import ROOT, wait_for
from tests.daemon_reaper import _alive

STARTER = """
import os, subprocess, sys, time
pidfile = sys.argv[1]
daemon = subprocess.Popen(["sleep", "300"], start_new_session=True)
subprocess.Popen([sys.executable, "-m", "tests.daemon_reaper", str(os.getpid()), pidfile],
                 start_new_session=True)
with open(pidfile, "w") as f:
  f.write(str(daemon.pid))
print("ready", flush=True)
time.sleep(300)
"""


def test_a_killed_starter_leaves_no_daemon(tmp_path):
  pidfile = str(tmp_path / "daemon.pid")
  starter = subprocess.Popen([sys.executable, "-c", STARTER, pidfile], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
  try:
    assert starter.stdout.readline().strip() == "ready"
    daemon = int(open(pidfile).read())
    assert _alive(daemon)
  finally:
    starter.send_signal(signal.SIGKILL)
    starter.wait(timeout=10)
  wait_for(lambda: not _alive(daemon), 30, f"daemon {daemon} to be ended by the reaper")
