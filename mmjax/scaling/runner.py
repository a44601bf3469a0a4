"""Running a validated sweep: which runs are finished, and launching the others.

A run is finished when its workdir holds the final checkpoint AND the final eval row
(a metrics.jsonl row at total_steps carrying evaluator metrics). Anything else is rerun
with the same train command, which resumes: after the final checkpoint it only writes the
missing eval row. Finished runs are never started again, so no eval row is ever written
twice and no finished workdir is touched.
Launchers: `local` (K processes at a time here), `slurm` (one job array through
launch/slurm.sbatch), `print` (the command lines, for any other scheduler).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Mapping, Sequence

from mmjax.checkpoint import workdir as workdir_lib
from mmjax.scaling.sweep import Run, SweepError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWEEP_JSON = "sweep.json"  # the runs of the sweep, as planned: collect reads it
LOG = "sweep.log"          # a run's train output, appended across attempts


def eval_prefixes(exp) -> tuple[str, ...]:
  """Metric name prefixes of the experiment's evaluators: `<task>/<eval name>/`."""
  return tuple(f"{ev.task}/{name}/" for name, ev in exp.evals.items())


def read_rows(workdir: str) -> list[dict]:
  """metrics.jsonl rows; a torn last line (killed mid-write) is ignored."""
  path = os.path.join(workdir, "metrics.jsonl")
  rows = []
  if os.path.isfile(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          continue
  return rows


def final_eval_row(rows: Sequence[Mapping], exp) -> dict | None:
  """The eval row written at the last step, merged if the evaluators wrote several."""
  prefixes = eval_prefixes(exp)
  merged = {}
  for r in rows:
    if r.get("step") == exp.total_steps and any(k.startswith(prefixes) for k in r):
      merged.update(r)
  return merged or None


def checkpoint_steps(workdir: str) -> list[int]:
  """Completed checkpoint steps (Orbax renames a finished save to its bare step number)."""
  d = workdir_lib.checkpoint_dir(workdir)
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def status(workdir: str, exp) -> str:
  """'finished', 'unfinished' (started, or final eval missing) or 'missing'."""
  if not os.path.isdir(workdir):
    return "missing"
  done = exp.total_steps in checkpoint_steps(workdir)
  return "finished" if done and final_eval_row(read_rows(workdir), exp) else "unfinished"


def train_command(run: Run, workdir: str, python: str = sys.executable) -> list[str]:
  return [python, "-m", "mmjax.train", "--config", run.config, "--workdir", workdir,
          *(f"--config.{o}" for o in run.overrides)]


def write_plan(out: str, runs: Sequence[Run]) -> None:
  workdir_lib.write_json(os.path.join(out, SWEEP_JSON), [r.to_dict() for r in runs])


def read_plan(out: str) -> list[Run]:
  path = os.path.join(out, SWEEP_JSON)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [Run.from_dict(d) for d in json.load(f)]


def prepare_data(experiments: Mapping) -> None:
  """Builds the built-in world once, before parallel runs would all race to build it."""
  from mmjax.data import sources, world
  done = set()
  for exp in experiments.values():
    for task in exp.tasks.values():
      name, data_dir = task.data.name, sources.default_data_dir(task.data.data_dir)
      if name.startswith(sources.WORLD) and (name, data_dir) not in done:
        world.prepare(name.partition("/")[2] or "default", data_dir)
        done.add((name, data_dir))


# ------------------------------------------------------------------ local

def estimated_cost(exp) -> float:
  """Relative training cost, for ordering runs: parameters x examples of all steps."""
  from mmjax.scaling import counts
  batch = sum(t.batch_size for t in exp.tasks.values()) / len(exp.tasks)
  return float(counts.param_count(exp)) * exp.total_steps * batch


class _Stop:
  """SIGTERM/SIGINT: stop launching, forward SIGTERM to the running trainers (they save)."""

  def __init__(self):
    self.signum = None
    self.procs: list[subprocess.Popen] = []

  def handle(self, signum, frame):
    del frame
    self.signum = signum
    for p in self.procs:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)


def run_local(out: str, todo: Sequence[Run], configs: Mapping, parallel: int) -> int:
  """Runs `todo`, `parallel` at a time. Returns 0 when every run finished (or the sweep was
  stopped by a signal: the trainers saved, rerunning resumes), 1 when some run failed."""
  stop = _Stop()
  previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGTERM, signal.SIGINT)}
  queue, running, failed = list(todo), {}, []
  try:
    while queue or running:
      while queue and len(running) < parallel and stop.signum is None:
        run = queue.pop(0)
        wd = os.path.join(out, run.name)
        os.makedirs(wd, exist_ok=True)
        log = open(os.path.join(wd, LOG), "a")
        log.write(f"\n$ {shlex.join(train_command(run, wd))}\n")
        log.flush()
        p = subprocess.Popen(train_command(run, wd), stdout=log, stderr=subprocess.STDOUT,
                             env=_env(), start_new_session=True)
        running[p.pid] = (run, p, log, time.time())
        stop.procs.append(p)
        print(f"started {run.name} (pid {p.pid})", file=sys.stderr)
      for pid, (run, p, log, t0) in list(running.items()):
        if p.poll() is None:
          continue
        log.close()
        del running[pid]
        stop.procs.remove(p)
        wd = os.path.join(out, run.name)
        state = status(wd, configs[run.name])
        print(f"{run.name}: exit {p.returncode}, {state} after {time.time() - t0:.0f}s",
              file=sys.stderr)
        if state != "finished" and stop.signum is None:
          failed.append(run.name)
      if stop.signum is not None and not running:
        queue.clear()
      time.sleep(0.2)
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
  if stop.signum is not None:
    print(f"signal {stop.signum}: runs saved and stopped; rerun the same command to resume",
          file=sys.stderr)
    return 0
  if failed:
    print(f"{len(failed)} run(s) did not finish: {', '.join(failed)}; their output is in "
          f"{out}/<run>/{LOG}", file=sys.stderr)
    return 1
  return 0


def _env() -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


# ------------------------------------------------------------------ slurm

def slurm_submission(out: str, todo: Sequence[Run], sbatch_args: Sequence[str] = ()) -> list[str]:
  """The sbatch command of one job array over `todo`: task i runs the train command whose
  arguments launch/slurm.sbatch reads from <out>/slurm/args/<i> (one per line)."""
  if not todo:
    raise SweepError("nothing to submit")
  return ["sbatch", "--parsable", f"--array=0-{len(todo) - 1}", "--job-name=sweep",
          *sbatch_args, os.path.join(ROOT, "launch", "slurm.sbatch"),
          "--array-args", os.path.join(os.path.abspath(out), "slurm", "args")]


def write_array_args(out: str, todo: Sequence[Run]) -> None:
  d = os.path.join(os.path.abspath(out), "slurm", "args")
  os.makedirs(d, exist_ok=True)
  for i, run in enumerate(todo):
    wd = os.path.abspath(os.path.join(out, run.name))
    path, colon, variant = run.config.partition(":")
    # The job starts in the repository root, wherever the sweep was submitted from.
    run = dataclasses.replace(run, config=os.path.abspath(path) + colon + variant)
    args = train_command(run, wd)[3:]  # what follows `python -m mmjax.train`
    if any("\n" in a for a in args):
      raise SweepError(f"run {run.name!r}: an override holds a newline, which the array's "
                       f"one-argument-per-line files cannot carry")
    with open(os.path.join(d, str(i)), "w") as f:
      f.write("\n".join(args) + "\n")


def submit_slurm(out: str, todo: Sequence[Run], sbatch_args: Sequence[str] = ()) -> str:
  write_array_args(out, todo)
  cmd = slurm_submission(out, todo, sbatch_args)
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60)
  if proc.returncode != 0:
    raise SweepError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
  return proc.stdout.strip().split(";")[0]
