"""Installs that reproduce: requirements.lock pins every package with hashes, agrees with
requirements.txt, and .ci/run refuses to test on anything but Python 3.11."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

from tests.conftest import ROOT


def _name(spec: str) -> str:
  return re.sub(r"[-_.]+", "-", spec.split("==")[0].strip()).lower()


def _lock_entries(lock: str = "requirements.lock") -> dict[str, tuple[str, list[str]]]:
  """name -> (version, hashes), read from the lock's `name==version \\` blocks."""
  entries, current = {}, None
  for line in open(os.path.join(ROOT, lock)):
    if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==(\S+)", line):
      current = _name(m.group(1))
      entries[current] = (m.group(2), [])
    elif m := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
      entries[current][1].append(m.group(1))
  return entries


def test_lock_pins_every_requirement_with_hashes():
  entries = _lock_entries()
  assert len(entries) > 40  # the transitive closure, not only the top level
  for name, (version, hashes) in entries.items():
    assert hashes, f"{name}=={version} has no hash in requirements.lock"
  for line in open(os.path.join(ROOT, "requirements.txt")):
    line = line.split("#")[0].strip()
    if not line:
      continue
    name, version = _name(line), line.split("==")[1]
    assert name in entries, f"{line} is in requirements.txt but not in requirements.lock"
    assert entries[name][0] == version, (f"requirements.txt pins {line}, the lock "
                                         f"{entries[name][0]}: regenerate the lock (README)")


def test_tpu_lock_is_the_same_stack_plus_libtpu():
  cpu, tpu = _lock_entries(), _lock_entries("requirements-tpu.lock")
  assert set(tpu) - set(cpu) == {"libtpu"} and tpu["libtpu"][1]
  assert all(tpu[name][0] == version for name, (version, _) in cpu.items())


def test_ci_run_refuses_without_python311(tmp_path):
  # A PATH with bash and coreutils but no python3.11: .ci/run must stop, not fall back.
  for tool in ("bash", "dirname", "python3", "env"):
    if path := shutil.which(tool):
      os.symlink(path, tmp_path / tool)
  proc = subprocess.run(["/bin/bash", os.path.join(ROOT, ".ci", "run")], cwd=tmp_path,
                        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
                        capture_output=True, text=True, timeout=30)
  assert proc.returncode == 1
  assert "needs Python 3.11" in proc.stderr
