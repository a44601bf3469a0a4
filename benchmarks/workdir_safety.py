"""The bars of issue 7, measured once on the tiny recipe (slow: minutes).

  1. kill -9 at random moments: N runs killed once each after their first checkpoint, then
     rerun; how many end bit-identical to an uninterrupted run.
  2. `python -m mmjax.evaluate` run E times during one run that saves every 3 steps (keep 2):
     the run ends 0, every evaluate ends 0 (or with a clear error), and every committed step
     verifies and restores with plain Orbax.

And those of issue 21:
  3. `--every 1 --keep 1 --evals 20`: live readers of a run that deletes every step but the
     newest; `live_reads_ok` of `live_reads` must be all.
  4. `--damage all_steps`: every step of a finished run damaged; the rerun must stop (exit
     != 0) naming each step, not restart from step 0.
  5. `--sigterm-at start,eval`: SIGTERM while starting up / during the final evals; exit 0,
     no lock left (`sigterm_clean`).
  (`--lost-peer` and the save/close phases of SIGTERM are not measured here yet.)

python benchmarks/workdir_safety.py [--kills 5] [--evals 5] [--every 3] [--keep 2]
    [--damage all_steps] [--sigterm-at start,eval] [--data_dir DIR]
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


def eval_during_training(base, data_dir, n, every=3, keep=2) -> dict:
  w = os.path.join(base, "live")
  args = tiny_args(w, data_dir, "--config.total_steps=100000",
                   f"--config.checkpoint.every_steps={every}", f"--config.checkpoint.keep={keep}")
  p = subprocess.Popen([sys.executable, "-m", "mmjax.train", *args], cwd=ROOT, env=cli_env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  wait_for(lambda: os.path.isdir(os.path.join(w, "checkpoints", str(every))), 300,
           f"checkpoint {every}")
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


def damage_all_steps(base, data_dir) -> dict:
  """A finished run (steps 6 and 12), 8 bytes flipped in every step, then rerun."""
  w = os.path.join(base, "damaged")
  run_cli("mmjax.train", tiny_args(w, data_dir))
  ckpts = os.path.join(w, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(ckpts) if s.isdigit())
  for step in steps:
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ckpts, str(step), "state"))
             for f in fs]
    victim = max(files, key=os.path.getsize)
    with open(victim, "r+b") as f:
      f.seek(os.path.getsize(victim) // 2)
      f.write(b"\xa5" * 8)
  rerun = run_cli("mmjax.train", tiny_args(w, data_dir), check=False)
  named = all(f"checkpoint step {s} in" in rerun.stderr for s in steps)
  kept = sorted(int(s) for s in os.listdir(ckpts) if s.isdigit()) == steps
  last = rerun.stderr.strip().splitlines()[-1][:300] if rerun.stderr.strip() else ""
  return {"rc": rerun.returncode, "steps": steps, "each_named": named, "steps_kept": kept,
          "clear_stop": rerun.returncode != 0 and named and kept, "last_line": last}


def _catches_sigterm(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/status") as f:
      mask = next(l for l in f if l.startswith("SigCgt:")).split()[1]
  except (OSError, StopIteration):
    return False
  return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def sigterm_at(base, data_dir, phase: str) -> dict:
  """SIGTERM once the trainer handles it (start) or once its last step is committed (eval)."""
  w = os.path.join(base, f"sigterm_{phase}")
  p = subprocess.Popen([sys.executable, "-m", "mmjax.train", *tiny_args(w, data_dir)], cwd=ROOT,
                       env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  ready = {"start": lambda: _catches_sigterm(p.pid),
           "eval": lambda: os.path.isdir(os.path.join(w, "checkpoints", "12"))}[phase]
  try:
    wait_for(lambda: p.poll() is not None or ready(), 300, f"phase {phase}", poll=0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
  finally:
    p.kill()
  lock_left = os.path.exists(os.path.join(w, "lock"))
  return {"phase": phase, "rc": p.returncode, "lock_left": lock_left,
          "traceback": "Traceback" in err,
          "clean": p.returncode == 0 and not lock_left and "Traceback" not in err}


def report(kills, live, damage, sigterms) -> dict:
  print(f"{'trial':>5} {'delay_s':>8} {'ckpts at kill':>16} {'rerun rc':>8} {'identical':>9}")
  for r in kills:
    print(f"{r['trial']:>5} {r['delay_s']:>8} {str(r['steps_at_kill']):>16} {r['rerun_rc']:>8} "
          f"{str(r['bit_identical']):>9}")
  print(f"evaluate during training: {live['evals']}")
  print(f"trainer exit {live['trainer_rc']}; committed {live['committed']}; "
        f"verified+restored {live['restored']}")
  if damage is not None:
    print(f"all steps damaged {damage['steps']}: rerun exit {damage['rc']}, each named "
          f"{damage['each_named']}, steps kept {damage['steps_kept']}; last line: "
          f"{damage['last_line']}")
  for r in sigterms:
    print(f"SIGTERM at {r['phase']:>5}: exit {r['rc']}, lock left {r['lock_left']}, "
          f"traceback {r['traceback']}")
  ok = sum(rc == 0 for rc, _ in live["evals"])
  figures = {"kill9_bit_identical": sum(r["bit_identical"] for r in kills),
             "kill9_trials": len(kills), "evals_ok": ok, "evals": len(live["evals"]),
             "live_reads_ok": ok, "live_reads": len(live["evals"]),
             "trainer_rc": live["trainer_rc"], "steps_committed": len(live["committed"]),
             "steps_restored": len(live["restored"])}
  if damage is not None:
    figures["all_damaged_clear_stop"] = damage["clear_stop"]
  if sigterms:
    figures["sigterm_clean"] = sum(r["clean"] for r in sigterms)
    figures["sigterm_trials"] = len(sigterms)
  return figures


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--kills", type=int, default=5)
  ap.add_argument("--evals", type=int, default=5)
  ap.add_argument("--every", type=int, default=3, help="checkpoint.every_steps of the live run")
  ap.add_argument("--keep", type=int, default=2, help="checkpoint.keep of the live run")
  ap.add_argument("--damage", choices=["all_steps"], default=None)
  ap.add_argument("--sigterm-at", default="", help="comma-separated phases: start,eval")
  ap.add_argument("--data_dir", default=os.environ.get("MMJAX_DATA_DIR", ""))
  ap.add_argument("--seed", type=int, default=None)
  a = ap.parse_args()
  from mmjax.data import world
  data_dir = a.data_dir or os.path.join(tempfile.gettempdir(), "mmjax_world_tiny")
  world.prepare("tiny", data_dir)
  rng = np.random.default_rng(a.seed)
  with tempfile.TemporaryDirectory() as base:
    kills = kill_trials(base, data_dir, a.kills, rng) if a.kills else []
    live = eval_during_training(base, data_dir, a.evals, a.every, a.keep)
    damage = damage_all_steps(base, data_dir) if a.damage else None
    sigterms = [sigterm_at(base, data_dir, ph) for ph in a.sigterm_at.split(",") if ph]
  print(json.dumps(report(kills, live, damage, sigterms)))


if __name__ == "__main__":
  main()
