"""Shared fixtures: one mm_world/tiny build per session and a runner for the real CLIs.

Pytest imports this file before any test module, so the XLA flags below are set before
anything can import jax: plain `pytest` runs on the same 8 fake CPU devices as tests/run.sh.
Keep jax imports out of this file's top level."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

# The same flags as tests/run.sh; a flag already in XLA_FLAGS is left as it is.
TEST_XLA_FLAGS = {"--xla_force_host_platform_device_count": "8",
                  "--xla_backend_optimization_level": "0",
                  # XLA ends a process whose 8 device threads do not all reach a collective
                  # within 40 s; on a loaded 2-core machine they can fall that far behind.
                  "--xla_cpu_collective_call_terminate_timeout_seconds": "600"}
TEST_DEVICES = 8


def with_test_xla_flags(flags: str) -> str:
  missing = [f"{k}={v}" for k, v in TEST_XLA_FLAGS.items() if k not in flags]
  return " ".join([flags.strip(), *missing]).strip()


os.environ["XLA_FLAGS"] = with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))
# Small numpy/scipy problems (the scaling fits) run 3-8x slower on this shared 2-core machine
# when OpenBLAS starts a thread per core; read when numpy first loads, so set it here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "mm_world.py") + ":tiny"


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs of the real command lines")


def pytest_collection_modifyitems(session, config, items):
  """The SLURM files first, then the other files with end-to-end tests, then the rest,
  each group in its usual order.

  tests/run.sh hands whole files to two workers in collection order; a long file dealt
  last leaves one worker running alone at the end (alphabetically the SLURM, trainer and
  workdir files come last). Longest first packs the two workers more evenly. The order is
  deterministic, as xdist needs it to be the same on every worker."""
  slow_files = {item.fspath for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: ("slurm" not in item.fspath.basename,
                               item.fspath not in slow_files))  # stable sort


@pytest.fixture(scope="session")
def eight_devices():
  """For the mesh tests: fails (never skips) when the fake device count did not take."""
  import jax
  if jax.device_count() != TEST_DEVICES:
    pytest.fail(f"the mesh tests need {TEST_DEVICES} fake CPU devices, and jax sees "
                f"{jax.device_count()} (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); "
                f"run the suite with tests/run.sh, or without a device count of your own in "
                f"XLA_FLAGS", pytrace=False)


needs_eight_devices = pytest.mark.usefixtures("eight_devices")


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
  """Data dir holding mm_world/tiny; a fixed path so every test module reuses one build."""
  from mmjax.data import world
  data_dir = tmp_path_factory.getbasetemp() / "mm_world_tiny"
  world.prepare("tiny", str(data_dir))  # reuses the build if another module made it
  return str(data_dir)


def cli_env(**extra) -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def run_cli(module: str, args: list[str], *, timeout: float = 300, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs `python -m module args` as users do; bounded in time."""
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env or cli_env(),
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} {' '.join(args)} exited {proc.returncode}:\n"
                         f"{proc.stderr[-4000:]}")
  return proc


def wait_for(predicate, timeout: float, what: str, describe=lambda: "", poll: float = 0.2):
  """Polls `predicate` until true; after `timeout` s fails naming `what` (+ `describe()`)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(poll)
  raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{describe()}")


def tiny_args(workdir, data_dir, *overrides) -> list[str]:
  return ["--config", TINY, "--workdir", str(workdir),
          f"--config.tasks.default.data.data_dir={data_dir}", *overrides]
