"""The bars of issue 7, measured once on the tiny recipe (slow: minutes).

  1. kill -9 at random moments: N runs killed once each after their first checkpoint, then
     rerun; how many end bit-identical to an uninterrupted run.
  2. `python -m mmjax.evaluate` run E times during one run that saves every 3 steps (keep 2):
     the run ends 0, every evaluate ends 0 (or with a clear error), and every committed step
     verifies and restores with plain Orbax.

python benchmarks/workdir_safety.py [--kills 5] [--evals 5] [--data_dir DIR]
Prints a table and, as the last line, one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from mmjax.checkpoint import checksums as checkpoint_verify  # noqa: E402
from tests.conftest import cli_env, run_cli, tiny_args, wait_for  # noqa: E402
from tests.test_train_e2e import final_params  # noqa: E402


def identical(a_dir, b_dir, step) -> bool:
  a, b = final_params(a_dir, step), final_params(b_dir, step)
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def kill_trials(base, data_dir, n, rng) -> list[dict]:
  common = ["--config.checkpoint.every_steps=2", "--config.total_steps=10"]
  ref = os.path.join(base, "ref")
  run_cli("mmjax.train", tiny_args(ref, data_dir, *common))
  rows = []
  for i in range(n):
    w = os.path.join(base, f"killed{i}")
    p = subprocess.Popen([sys.executable, "-m", "mmjax.train", *tiny_args(w, data_dir, *common)],
                         cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.isdir(os.path.join(w, "checkpoints", "2")), 300, "checkpoint 2")
    delay = float(rng.uniform(0.0, 2.5))
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    at = sorted(int(s) for s in os.listdir(os.path.join(w, "checkpoints")) if s.isdigit())
    rerun = run_cli("mmjax.train", tiny_args(w, data_dir, *common), check=False)
    ok = rerun.returncode == 0 and identical(ref, w, 10)
    rows.append({"trial": i, "delay_s": round(delay, 2), "steps_at_kill": at,
                 "rerun_rc": rerun.returncode, "bit_identical": ok})
  return rows


def eval_during_training(base, data_dir, n) -> dict:
  w = os.path.join(base, "live")
  args = tiny_args(w, data_dir, "--config.total_steps=100000", "--config.checkpoint.every_steps=3",
                   "--config.checkpoint.keep=2")
  p = subprocess.Popen([sys.executable, "-m", "mmjax.train", *args], cwd=ROOT, env=cli_env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  wait_for(lambda: os.path.isdir(os.path.join(w, "checkpoints", "3")), 300, "checkpoint 3")
  evals = []
  for _ in range(n):
    e = run_cli("mmjax.evaluate", ["--workdir", w, f"--config.tasks.default.data.data_dir={data_dir}"],
                check=False)
    evals.append((e.returncode, json.loads(e.stdout.strip().splitlines()[-1])["step"]
                  if e.returncode == 0 else e.stderr.strip().splitlines()[-1][:200]))
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=300)
  steps = sorted(int(s) for s in os.listdir(os.path.join(w, "checkpoints")) if s.isdigit())
  restored = [s for s in steps if len(final_params(w, s)) > 20
              and not checkpoint_verify.problems(os.path.join(w, "checkpoints", str(s)))]
  return {"trainer_rc": p.returncode, "evals": evals, "committed": steps, "restored": restored}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--kills", type=int, default=5)
  ap.add_argument("--evals", type=int, default=5)
  ap.add_argument("--data_dir", default=os.environ.get("MMJAX_DATA_DIR", ""))
  ap.add_argument("--seed", type=int, default=None)
  a = ap.parse_args()
  from mmjax.data import world
  data_dir = a.data_dir or os.path.join(tempfile.gettempdir(), "mmjax_world_tiny")
  world.prepare("tiny", data_dir)
  rng = np.random.default_rng(a.seed)
  with tempfile.TemporaryDirectory() as base:
    kills = kill_trials(base, data_dir, a.kills, rng)
    live = eval_during_training(base, data_dir, a.evals)
  print(f"{'trial':>5} {'delay_s':>8} {'ckpts at kill':>16} {'rerun rc':>8} {'identical':>9}")
  for r in kills:
    print(f"{r['trial']:>5} {r['delay_s']:>8} {str(r['steps_at_kill']):>16} {r['rerun_rc']:>8} "
          f"{str(r['bit_identical']):>9}")
  print(f"evaluate during training: {live['evals']}")
  print(f"trainer exit {live['trainer_rc']}; committed {live['committed']}; "
        f"verified+restored {live['restored']}")
  print(json.dumps({"kill9_bit_identical": sum(r["bit_identical"] for r in kills),
                    "kill9_trials": len(kills), "evals_ok": sum(rc == 0 for rc, _ in live["evals"]),
                    "evals": len(live["evals"]), "trainer_rc": live["trainer_rc"],
                    "steps_committed": len(live["committed"]),
                    "steps_restored": len(live["restored"])}))


if __name__ == "__main__":
  main()
