"""AGD overhead: time per step of an alternating-gradient run against its tasks run alone.

  python benchmarks/agd.py [--variant tiny] [--batch 32] [--steps 240] [--rounds 2]

configs/mm_world_agd.py (one device, evals off), fed from in-memory copies of a few real
batches of each task (so every task has its own shapes and keys and no input work
competes). In one process:
  1. start-up compile of every task's step, one after the other (compile_threads=1) and
     concurrently (compile_threads=0: a thread per task), each from fresh lowerings with
     the persistent compilation cache off: wall seconds of each, compile time per task;
  2. each task trained alone: the same config with every other task's weight 0 (the same
     model and compiled programs) -> steady-state s/step from its metrics windows after
     the first;
  3. the AGD run over all the tasks -> its steady-state s/step, the same way;
  then 2 and 3 alternate for --rounds, ending with 2.
Overhead = AGD s/step / (sum of w_t * alone s/step of t) - 1, w_t the AGD run's realised
task shares, alone s/step the mean of the alone runs either side; the median over rounds
(with 2 rounds, their mean).
Prints a table, then (last line) one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import ml_collections  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402
from report import print_figures  # noqa: E402

from mmjax import config as config_lib, trainer  # noqa: E402
from mmjax.data import pipeline  # noqa: E402
from mmjax.data.memory import InMemoryIterator  # noqa: E402

AGD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "configs", "mm_world_agd.py")


def agd_config(variant: str, batch: int, steps: int, only: str | None = None,
               threads: int = 0):
  """The recipe on one device, evals off; `only`: every other task's weight 0, so the run
  trains that task alone on the same model (every task's heads: the same parameter and
  optimizer shapes, the same compiled programs) -- what AGD is compared with."""
  config = config_lib.load(f"{AGD}:{variant}", [
      f"total_steps={steps}", "log_every_steps=10", "checkpoint.every_steps=100000",
      "mesh.data=1", "optim.warmup_steps=2", "progress=False"])
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()
    config.compile_threads = threads
    for name in config.tasks:
      config.tasks[name].batch_size = batch
      if only is not None:
        config.tasks[name].weight = float(name == only)
  return config


def real_batches(config, n: int = 4) -> dict[str, list]:
  out = {}
  for name, task in config.tasks.items():
    it = pipeline.make_train_iterator(task.data, batch_size=task.batch_size, seed=config.seed)
    out[name] = [next(it) for _ in range(n)]
    it.close()
  return out


def iterators(batches, tasks) -> dict:
  return {t: InMemoryIterator(batches[t]) for t in tasks}


def compile_wall(config, batches) -> tuple[float, dict]:
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    out = trainer.train(config, workdir, compile_only=True,
                        iterators=iterators(batches, config.tasks))
    return time.perf_counter() - t0, {t: r["compile_s"] for t, r in out.items()}


def agd_run(config, batches) -> tuple[float, dict]:
  """(steps/s, accounting.json) of a full trainer run."""
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train(config, workdir, iterators=iterators(batches, config.tasks))
    acct = json.load(open(os.path.join(workdir, "accounting.json")))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f if "perf/steps_per_s" in line]
  windows = rows[1:]
  steps = sum(b["step"] - a["step"] for a, b in zip(rows, windows))
  seconds = sum((b["step"] - a["step"]) / b["perf/steps_per_s"] for a, b in zip(rows, windows))
  return steps / seconds, dict(acct, last_row=rows[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="tiny")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=240, help="steps of each run")
  p.add_argument("--rounds", type=int, default=2, help="(tasks alone, AGD) pairs")
  a = p.parse_args()
  # Compile times are a figure: the start-up compiles run with the persistent cache off;
  # the training runs after them reuse programs from a cache of this run's own (every
  # run has the same model and settings, so the same programs).
  jax.config.update("jax_enable_compilation_cache", False)
  compilation_cache.reset_cache()
  full = agd_config(a.variant, a.batch, a.steps)
  tasks = list(full.tasks)
  batches = real_batches(full)

  fig = {"device": jax.devices()[0].device_kind, "tasks": len(tasks), "batch": a.batch,
         "steps": a.steps}
  seq_s, per_task_seq = compile_wall(agd_config(a.variant, a.batch, a.steps, threads=1), batches)
  par_s, per_task = compile_wall(full, batches)
  fig.update(compile_wall_sequential_s=seq_s, compile_wall_threaded_s=par_s,
             compile_speedup=seq_s / par_s)

  cache = tempfile.TemporaryDirectory()
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  jax.config.update("jax_enable_compilation_cache", True)
  compilation_cache.reset_cache()  # JAX decides once per process whether to use it
  compilation_cache.set_cache_dir(cache.name)

  def alone() -> dict[str, float]:
    return {t: 1.0 / agd_run(agd_config(a.variant, a.batch, a.steps, only=t), batches)[0]
            for t in tasks}

  # Alone and AGD runs alternate (A, G, A, G, ..., A): each AGD run is compared with the
  # mean of the alone runs either side of it, since the machine's speed drifts.
  alone_runs, agd_runs = [alone()], []
  for _ in range(a.rounds):
    steps_per_s, acct = agd_run(full, batches)
    agd_runs.append((1.0 / steps_per_s, acct))
    alone_runs.append(alone())
  acct = agd_runs[-1][1]
  taken = {t: acct["last_row"][f"train/{t}/steps"] for t in tasks}  # the AGD run's mix
  shares = {t: n / sum(taken.values()) for t, n in taken.items()}
  overheads = []
  for r, (agd_s, _) in enumerate(agd_runs):
    around = {t: (alone_runs[r][t] + alone_runs[r + 1][t]) / 2 for t in tasks}
    weighted = sum(shares[t] * around[t] for t in tasks)
    overheads.append(agd_s / weighted - 1.0)
    fig[f"round{r}/agd_s_per_step"] = agd_s
    fig[f"round{r}/weighted_alone_s_per_step"] = weighted
    fig[f"round{r}/overhead"] = overheads[-1]
  mean_alone = {t: sum(run[t] for run in alone_runs) / len(alone_runs) for t in tasks}
  print(f"{'task':<10}{'share':>7}{'alone s/step':>14}{'compile s':>11}{'threaded':>10}")
  for t in tasks:
    print(f"{t:<10}{shares[t]:>7.3f}{mean_alone[t]:>14.5f}{per_task_seq[t]:>11.2f}"
          f"{per_task[t]:>10.2f}")
    fig[f"alone_s_per_step/{t}"] = mean_alone[t]
    fig[f"compile_s/{t}"] = per_task_seq[t]
    fig[f"compile_s_threaded/{t}"] = per_task[t]
  fig.update(agd_compiles=acct["last_row"]["perf/compiles"],
             overhead=statistics.median(overheads))
  print_figures(fig)
  cache.cleanup()


if __name__ == "__main__":
  main()
