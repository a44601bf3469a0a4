"""Input pipeline throughput against what the compiled train step consumes.

    python benchmarks/input.py [--config configs/mm_world.py] [--task default]
        [--batches 20] [--repeats 3] [--steps 10] [--config.key=value ...]

Measures, for one task of a recipe, single process:
  - the train iterator's examples/s at data.worker_count=0 and at the auto setting (-1),
    each `--repeats` times (min/median/max: the host may be shared);
  - the compiled train step's consumption rate (examples/s) on the present backend;
  - their ratio (input / step: >= 1 means input keeps up), per round: each of `--repeats`
    rounds measures the two iterator settings and the step in an order shuffled afresh
    (benchmarks/ratios.py); `ratio` is the median of the rounds' (better input rate / step
    rate), `ratio_ci95` its bootstrap 95% interval.
Prints a table; the last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.ratios import MIN_ROUNDS, ratio_figures, round_orders  # noqa: E402
from mmjax.runtime import sharding  # noqa: E402
from mmjax.experiment import build
from mmjax.training import optimizer as optim
from mmjax import experiment  # noqa: E402
from mmjax.data import pipeline, workers  # noqa: E402
from mmjax.training.step import make_train_step  # noqa: E402
from mmjax.training.step import abstract_train_state  # noqa: E402


def iterator_rate(data_cfg, batch_size: int, seed: int, worker_count: int, batches: int) -> float:
  with data_cfg.unlocked():
    data_cfg.worker_count = worker_count
  it = pipeline.make_train_iterator(data_cfg, batch_size=batch_size, seed=seed)
  try:
    next(it)  # start-up (worker processes, caches) is not throughput
    start = time.perf_counter()
    for _ in range(batches):
      next(it)
    return batches * batch_size / (time.perf_counter() - start)
  finally:
    it.close()


def step_rate(config, task: str, batch):
  """Compiles the task's step; returns `measure(steps)` -> examples/s of that many steps."""
  mesh = sharding.make_mesh(config.mesh)
  objectives = build.task_objectives(config)
  spec = build.model_spec(config, objectives)
  optimizer = optim.make_optimizer(config.optim, config.total_steps)
  graphdef, init_fn, abstract = abstract_train_state(spec, config.seed, optimizer)
  state_sh = sharding.state_shardings(abstract, mesh)
  holder = {"state": jax.jit(init_fn, out_shardings=state_sh)()}
  step = jax.jit(make_train_step(graphdef, objectives[task], optimizer, config.seed,
                                 config.tasks[task].microbatches), donate_argnums=0)
  batch = sharding.global_batch(batch, mesh)
  holder["state"], metrics = step(holder["state"], batch)  # compile
  jax.block_until_ready(metrics)

  def measure(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)
    return steps * config.tasks[task].batch_size / (time.perf_counter() - start)
  return measure


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/mm_world.py")
  parser.add_argument("--task", default="default")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=MIN_ROUNDS, help="rounds")
  parser.add_argument("--seed", type=int, default=0, help="of the per-round order")
  parser.add_argument("--steps", type=int, default=10)
  args, overrides = parser.parse_known_args()
  config = experiment.load(args.config, [o.removeprefix("--config.") for o in overrides])
  task = config.tasks[args.task]
  auto = workers.resolve(workers.AUTO)
  batch = next(pipeline.make_train_iterator(task.data, batch_size=task.batch_size,
                                            seed=config.seed))
  measure_step = step_rate(config, args.task, batch)
  rates, steps = {0: [], -1: []}, []
  for order in round_orders(["workers0", "auto", "step"], args.repeats, args.seed):
    for kind in order:  # shuffled per round, so load changes favour no setting
      if kind == "step":
        steps.append(measure_step(args.steps))
      else:
        wc = 0 if kind == "workers0" else -1
        rates[wc].append(iterator_rate(task.data, task.batch_size, config.seed, wc, args.batches))
  consume = statistics.median(steps)
  med0, med_auto = statistics.median(rates[0]), statistics.median(rates[-1])
  ratios = ratio_figures([max(a, b) for a, b in zip(rates[0], rates[-1])], steps)
  fig = {
      "backend": jax.default_backend(), "host_cores": workers.host_cores(),
      "auto_workers": auto.workers, "auto_read_threads": auto.read_threads,
      "batch_size": task.batch_size,
      "input_examples_per_s_workers0": med0,
      "input_examples_per_s_workers0_min": min(rates[0]),
      "input_examples_per_s_workers0_max": max(rates[0]),
      "input_examples_per_s_auto": med_auto,
      "input_examples_per_s_auto_min": min(rates[-1]),
      "input_examples_per_s_auto_max": max(rates[-1]),
      "auto_over_workers0": med_auto / med0,
      "step_examples_per_s": consume,
      "input_over_step": max(med0, med_auto) / consume,
      **ratios,
      "load_average_1m": os.getloadavg()[0],
  }
  print(f"{'figure':<36}{'value':>14}")
  for k, v in fig.items():
    print(f"{k:<36}{v:>14.4g}" if isinstance(v, float) else f"{k:<36}{str(v):>14}")
  print(json.dumps(fig))


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  main()
