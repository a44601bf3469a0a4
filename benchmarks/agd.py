"""AGD overhead: time per step of alternating-gradient stretches against the same tasks run
alone, interleaved in one trainer run.

  python benchmarks/agd.py [--variant tiny] [--batch 32] [--segment 20] [--cycles 8]
                           [--set model.width=128 ...]

configs/mm_world_agd.py on one device (evals and checkpoints off), fed from in-memory
copies of a few real batches of each task, so every task has its own shapes and keys and
no input work competes; with --real_input, from each task's own input pipeline instead (as
a real AGD run is), so switching between the six pipelines is in the figures. What it measures:

  1. Start-up compile of every task's step, with the persistent compilation cache off:
     one after the other (compile_threads=1, a compile_only run) and concurrently (a
     thread per task: the training run's own start-up); compile seconds per task, and
     the training run's compile count (one per task: no recompiles).
  2. ONE training run whose schedule (`schedule.type=sequence`) runs cycles of
     stretches of 2 x segment steps: an AGD stretch -- the recipe's weighted schedule's
     own order -- and one stretch of each task alone, in an order shuffled afresh every
     cycle (benchmarks/ratios.py), so no kind of stretch always follows the same one. The trainer logs every `segment`
     steps, so each log window is one half of a stretch: the first half takes the switch
     into the stretch and is left out; the second half is its steady state. A window's
     time is the trainer's own (perf/steps_per_s, from its step-end stamps).
  Per cycle: overhead = AGD s/step / (sum over tasks of share_t * alone s/step of t) - 1,
  with share_t the task's share of the AGD window. Same process, same compiled programs,
  same shapes, same trainer loop (prefetch, hooks, logging): the only difference is the
  order of the steps. Stretches of one cycle are seconds apart, so machine drift largely
  cancels within a cycle; the figure is the median over cycles after the first (warm-up),
  with a bootstrap 95% interval: `ratio` (AGD s/step over the share-weighted alone s/step)
  and `ratio_ci95`, and the same as `overhead` = ratio - 1 and `overhead_ci95`.
  Also printed: the same ratio from each kind's fastest window over the cycles
  (`overhead_fastest_windows`), since load from other processes only adds time.

Step time: the tiny model at batch 32 steps in ~10 ms on 2 CPU cores, where the host's
share of a step is large; `--variant default --batch 32` (width 128, depth 4) is nearer
a realistic step (tens of ms). Prints a table, then (last line) one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import ml_collections  # noqa: E402
from ratios import median_ci95, round_orders  # noqa: E402
from report import print_figures  # noqa: E402

from mmjax import schedules  # noqa: E402
from mmjax.training import trainer  # noqa: E402
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.data import pipeline  # noqa: E402
from mmjax.data.memory import InMemoryIterator  # noqa: E402

AGD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "configs", "mm_world_agd.py")


def agd_config(variant: str, batch: int, steps: int, overrides=(), log_every: int = 10,
               threads: int = 0):
  """The recipe on one device, evals and checkpoints off, every task at `batch`."""
  config = experiment.load(f"{AGD}:{variant}", [
      f"total_steps={steps}", f"log_every_steps={log_every}", "checkpoint.every_steps=10000000",
      "mesh.data=1", "optim.warmup_steps=2", "progress=False", *overrides])
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()
    config.compile_threads = threads
    for name in config.tasks:
      config.tasks[name].batch_size = batch
  return config


def stretches(config, segment: int) -> list[tuple[str, list[str]]]:
  """One cycle: ("agd", the weighted schedule's first 2*segment tasks), then (task, task
  repeated 2*segment times) for each task."""
  order = experiment.parse(config).schedule
  agd = [order.task_at(s) for s in range(2 * segment)]
  return [("agd", agd)] + [(t, [t] * (2 * segment)) for t in config.tasks]


def real_batches(config, n: int = 4) -> dict[str, list]:
  out = {}
  for name, task in config.tasks.items():
    it = pipeline.make_train_iterator(task.data, batch_size=task.batch_size, seed=config.seed)
    out[name] = [next(it) for _ in range(n)]
    it.close()
  return out


def iterators(batches, tasks) -> dict | None:
  """In-memory iterators over `batches`; None (the tasks' own pipelines) for --real_input."""
  if batches is None:
    return None
  return {t: InMemoryIterator(batches[t]) for t in tasks}


def train_rows(config, batches) -> tuple[list[dict], dict]:
  """(metrics rows with throughput, accounting.json) of one trainer run."""
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train(experiment.parse(config), workdir, iterators=iterators(batches, config.tasks))
    acct = json.load(open(os.path.join(workdir, "accounting.json")))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f if "perf/steps_per_s" in line]
  return rows, acct


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="tiny")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--segment", type=int, default=20, help="steps of each half-stretch")
  p.add_argument("--cycles", type=int, default=12,
                 help="cycles (the first is warm-up; at least 6 for 5 rounds)")
  p.add_argument("--seed", type=int, default=0, help="of the stretches' order in each cycle")
  p.add_argument("--real_input", action="store_true",
                 help="feed every task from its real input pipeline, not in-memory batches")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override, e.g. model.width=128 (repeatable)")
  a = p.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)  # compile times are a figure

  base = agd_config(a.variant, a.batch, 2, a.set)
  tasks = list(base.tasks)
  cycle = dict(stretches(base, a.segment))
  orders = round_orders(list(cycle), a.cycles, a.seed)  # a fresh order of stretches per cycle
  sequence = [t for order in orders for name in order for t in cycle[name]]
  steps = len(sequence)
  config = agd_config(a.variant, a.batch, steps, a.set, log_every=a.segment)
  with config.unlocked():  # the whole run's sequence: it never repeats
    config.schedule = ml_collections.ConfigDict(dict(type="sequence", cycle=tuple(sequence)))
  # --real_input: the six tasks' own grain pipelines, which AGD switches between, so the
  # input's share of the step is in both the AGD and the alone figures.
  batches = None if a.real_input else real_batches(config)

  fig = {"device": jax.devices()[0].device_kind, "tasks": len(tasks), "batch": a.batch,
         "input": "real pipelines" if a.real_input else "in-memory batches",
         "segment": a.segment, "cycles": a.cycles}
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    seq = trainer.train(experiment.parse(agd_config(a.variant, a.batch, steps, a.set, threads=1)), workdir,
                        compile_only=True, iterators=iterators(batches, tasks))
    seq_wall = time.perf_counter() - t0
  rows, acct = train_rows(config, batches)
  threaded = {t: c["total_s"] for t, c in acct["compile"].items()}

  # Window k covers steps (k*segment, (k+1)*segment]: the second half of stretch j ends at
  # step 2*segment*(j+1). Cycle 0 (warm-up) is left out.
  by_end = {r["step"]: r for r in rows}
  end = lambda c, name: 2 * a.segment * (c * len(cycle) + orders[c].index(name) + 1)
  s_per_step = {name: [1.0 / by_end[end(c, name)]["perf/steps_per_s"]
                       for c in range(1, a.cycles)]
                for name in cycle}
  second_half = cycle["agd"][a.segment:]  # the AGD windows' task mix
  shares = {t: second_half.count(t) / len(second_half) for t in tasks}
  weighted = lambda alone: sum(shares[t] * alone[t] for t in tasks)
  ratios = [s_per_step["agd"][c] / weighted({t: s_per_step[t][c] for t in tasks})
            for c in range(a.cycles - 1)]
  overheads = [r - 1.0 for r in ratios]
  ratio, ratio_ci95 = median_ci95(ratios)
  # Load from other processes only ever adds time: the fastest window of each kind is the
  # least disturbed one. (Conservative for AGD: its estimate is one window's minimum, the
  # alone estimate a sum of six.)
  fastest = min(s_per_step["agd"]) / weighted({t: min(s_per_step[t]) for t in tasks}) - 1.0

  print(f"{'task':<10}{'AGD share':>10}{'alone s/step':>14}{'compile s':>11}{'threaded':>10}")
  for t in tasks:
    alone = statistics.median(s_per_step[t])
    print(f"{t:<10}{shares[t]:>10.3f}{alone:>14.5f}{seq[t]['compile_s']:>11.2f}"
          f"{threaded[t]:>10.2f}")
    fig[f"alone_s_per_step/{t}"] = alone
    fig[f"compile_s/{t}"] = seq[t]["compile_s"]
    fig[f"compile_s_threaded/{t}"] = threaded[t]
  print("per-cycle overhead: " + " ".join(f"{o:+.1%}" for o in overheads))
  fig.update(agd_s_per_step=statistics.median(s_per_step["agd"]),
             compile_wall_sequential_s=seq_wall,
             compile_wall_threaded_s=rows[-1]["time/compile_s"],
             agd_compiles=rows[-1]["perf/compiles"],
             device_wait_fraction=statistics.median(r["perf/device_wait_fraction"]
                                                    for r in rows[2:]),
             ratio=ratio, ratio_ci95=ratio_ci95, ratio_rounds=ratios,
             overhead=ratio - 1.0, overhead_ci95=[ratio_ci95[0] - 1.0, ratio_ci95[1] - 1.0],
             overhead_min=min(overheads),
             overhead_max=max(overheads), overhead_fastest_windows=fastest)
  print_figures(fig)


if __name__ == "__main__":
  main()
