"""`python -m mmjax.scaling sweep --launcher slurm` on the real one-node SLURM cluster of
tests/slurm_cluster.py: one job array through launch/slurm.sbatch, one task per run."""
from __future__ import annotations

import os
import sys

import pytest

from mmjax.scaling import runner, sweep
from tests.conftest import cli_env, run_cli, wait_for
from tests.test_scaling_e2e import write_sweep
from tests.test_slurm import slurm  # noqa: F401  (the cluster fixture)

pytestmark = pytest.mark.slow

# One single-process CPU task per run (the script's defaults ask for 8 GPUs per node).
SBATCH = "--nodes=1 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1 --time=15"


def test_sweep_submits_one_job_array_and_skips_finished_runs(slurm, world_dir, tmp_path):  # noqa: F811
  sweep_file = write_sweep(tmp_path / "s.py", world_dir, [(16, 1), (32, 1)], [(4, 8)])
  out = tmp_path / "out"
  env = cli_env(SLURM_CONF=slurm.conf, MMJAX_PYTHON=sys.executable)
  args = ["sweep", "--sweep", sweep_file, "--out", str(out), "--launcher", "slurm",
          "--sbatch-args", f"{SBATCH} --output={tmp_path}/slurm-%A_%a.out"]
  proc = run_cli("mmjax.scaling", args, env=env, timeout=120)
  job = proc.stdout.strip()
  assert job.isdigit() and "2 runs" in proc.stderr, proc.stderr
  runs = sweep.load_sweep(sweep_file)
  configs = sweep.validate(runs)

  def logs() -> str:
    found = []
    for root, _, files in os.walk(tmp_path):
      found += [f"==> {os.path.join(root, f)}\n" + open(os.path.join(root, f)).read()[-1500:]
                for f in files if f.endswith((".log", ".out"))]
    return "\n".join(found)

  wait_for(lambda: all(runner.status(str(out / r.name), configs[r.name]) == "finished"
                       for r in runs), 300, f"job array {job} to finish both runs", logs, poll=2)
  for r in runs:  # each run is its own array task, with launch/slurm.sbatch's job log
    assert any(f.startswith("job_") for f in os.listdir(out / r.name / "logs")), logs()
  proc = run_cli("mmjax.scaling", args, env=env, timeout=120)
  assert "2 runs: 2 finished" in proc.stderr and proc.stdout.strip() == ""
