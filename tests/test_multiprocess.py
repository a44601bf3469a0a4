"""Multi-process training on this machine: launch/local.sh, gloo collectives, cooperative
checkpoints, and a clear, bounded failure when the coordinator cannot be reached."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, cli_env, run_cli, tiny_args

pytestmark = pytest.mark.slow

LOCAL_SH = os.path.join(ROOT, "launch", "local.sh")
# Two CPU devices per process: 2 processes form one 4-device mesh, light on 2 cores.
TWO_DEVICES = "--xla_force_host_platform_device_count=2"


def local_sh(n: int, args: list[str], timeout: float = 420) -> subprocess.CompletedProcess:
  env = cli_env(XLA_FLAGS=TWO_DEVICES, MMJAX_DISTRIBUTED_TIMEOUT_S=120)
  return subprocess.run(["bash", LOCAL_SH, str(n), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def log(workdir, i: int) -> str:
  path = os.path.join(workdir, "logs", f"process_{i}.log")
  return open(path).read() if os.path.exists(path) else ""


def test_one_process_run_resumed_by_two_processes_one_writer_then_evaluated_on_one(
    world_dir, tmp_path):
  """Saved by 1 process x 1 device to step 6; resumed for training by 2 processes x 2
  devices (arrays land on the new mesh, the data stream continues, one writer, both
  processes write their shards); the 4-device checkpoint then evaluated by 1 process x
  1 device. One test for both directions: each 2-process run costs a minute or more."""
  workdir = tmp_path / "run"
  one = cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=1")
  run_cli("mmjax.train", tiny_args(workdir, world_dir, "--config.total_steps=6"), env=one)
  proc = local_sh(2, tiny_args(workdir, world_dir))
  assert proc.returncode == 0, proc.stderr[-4000:] + log(workdir, 0)[-3000:] + log(workdir, 1)[-3000:]
  for i in range(2):
    assert f"process {i} of 2 joined (explicit flags; 2 local / 4 global devices)" in log(workdir, i)
    assert f"resumed from {workdir}/checkpoints/6" in log(workdir, i)
  assert "mesh {'data': 4" in log(workdir, 0)
  # The input position is global: 12 steps x 16 examples, however many processes read them.
  data = json.load(open(workdir / "checkpoints" / "12" / "data" / "metadata"))
  assert data == {"default": {"examples": 192, "global_batch": 16}}

  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  train_steps = [r["step"] for r in rows if "train/default/loss" in r]
  assert train_steps == [4, 6, 8, 12]  # one writer: every row exactly once
  keys = [(r["step"], tuple(sorted(r))) for r in rows]
  assert len(keys) == len(set(keys))
  evals = [r for r in rows if "default/retrieval/text_to_image/r@1" in r]
  assert [r["step"] for r in evals] == [6, 12]
  assert evals[-1]["default/retrieval/num_examples"] == 256

  assert sorted(os.listdir(workdir / "checkpoints")) == ["12", "6"]
  # Both processes wrote their shards of the arrays (Orbax OCDBT: one store per process).
  stores = set(os.listdir(workdir / "checkpoints" / "12" / "state"))
  assert {"ocdbt.process_0", "ocdbt.process_1"} <= stores

  # The 4-device, 2-process checkpoint restores onto one process with one device.
  out = run_cli("mmjax.evaluate", ["--workdir", str(workdir),
                                   f"--config.tasks.default.data.data_dir={world_dir}"], env=one)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["step"] == 12 and result["default/retrieval/num_examples"] == 256


def test_a_dead_process_stops_the_others_and_the_launcher_fails(world_dir, tmp_path):
  workdir = tmp_path / "run"
  args = tiny_args(workdir, world_dir, "--config.total_steps=100000",
                   "--config.checkpoint.every_steps=50000")
  env = cli_env(XLA_FLAGS=TWO_DEVICES, MMJAX_KILL_GRACE_S=5)
  launcher = subprocess.Popen(["bash", LOCAL_SH, "2", *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 240
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline:
      time.sleep(0.5)
    assert (workdir / "metrics.jsonl").exists(), log(workdir, 0)[-3000:]
    pids = [int((workdir / "logs" / f"process_{i}.pid").read_text()) for i in range(2)]
    os.kill(pids[1], 9)  # process 0 is left waiting in a collective that never completes
    _, err = launcher.communicate(timeout=120)
  finally:
    launcher.kill()
  assert launcher.returncode != 0
  assert "process 1 exited with status 137" in err and "stopping the other processes" in err
  with pytest.raises(ProcessLookupError):
    os.kill(pids[0], 0)


def unused_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]  # closed again: nothing listens there


def test_unreachable_coordinator_fails_clearly_within_the_timeout(world_dir, tmp_path):
  port = unused_port()
  start = time.monotonic()
  proc = run_cli("mmjax.train", tiny_args(tmp_path, world_dir,
                                          f"--coordinator_address=127.0.0.1:{port}",
                                          "--num_processes=2", "--process_id=1",
                                          "--distributed_timeout_s=10"),
                 check=False, timeout=120)
  assert proc.returncode != 0
  assert time.monotonic() - start < 90
  assert f"could not join the multi-process JAX job (coordinator 127.0.0.1:{port} as " \
         f"process 1 of 2) within --distributed_timeout_s=10s" in proc.stderr
  assert "Nothing accepts connections" in proc.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_inconsistent_process_flags_are_refused(tmp_path, world_dir):
  proc = run_cli("mmjax.train", tiny_args(tmp_path, world_dir, "--coordinator_address=127.0.0.1:1",
                                          "--num_processes=2", "--process_id=2"),
                 check=False, timeout=60)
  assert proc.returncode != 0 and "--process_id=2 must be in [0, --num_processes=2)" in proc.stderr


BARRIER_WORKER = """
import sys, time
from mmjax.runtime import distributed
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), timeout_s=60)
import jax
if jax.process_index() == 1:
  time.sleep(float(sys.argv[3]))  # a slow compile on this host
start = time.monotonic()
distributed.wait_for_all("compiled", timeout_s=60)
waited = time.monotonic() - start
print(f"waited {waited:.2f} any {distributed.any_process(jax.process_index() == 1)}", flush=True)
"""


def test_wait_for_all_holds_early_processes_until_the_late_one_arrives():
  # The trainer calls wait_for_all before its first collective: on CPU gloo's set-up gives
  # up after 30 s, so a peer whose compile ends later than that would otherwise fail the job.
  port, delay = unused_port(), 4.0
  procs = [subprocess.Popen([sys.executable, "-c", BARRIER_WORKER, f"127.0.0.1:{port}", str(i),
                             str(delay)], cwd=ROOT, env=cli_env(XLA_FLAGS=TWO_DEVICES),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  lines = [next(l for l in out.splitlines() if l.startswith("waited")).split()
           for out, _ in outs]  # gloo prints its own lines too
  waited = [float(line[1]) for line in lines]
  assert waited[0] > delay - 1.0 and waited[1] < delay - 1.0, waited
  assert all(line[3] == "True" for line in lines)
