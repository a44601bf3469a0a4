"""Trainer overhead: the full trainer loop against a bare loop over the same compiled step.

  python benchmarks/trainer_overhead.py [--steps 300] [--batch 16] [--rounds 3]

The tiny recipe's model at batch 16 on CPU (one device), fed from a pre-filled in-memory
iterator. The trainer runs with the default recipe's hook periods (log every 25 steps,
checkpoint every 200, stop agreement every 10, watchdog and input prefetch on; evals
removed: they are not training); its steps/s is read from its own metrics.jsonl, over the
log windows after the first (which holds the compile). The bare loop calls the compiled
step of the same program (built by the same functions, same shardings, donated state)
on the same batches, each put on the device as the trainer does, and waits once at the
end. Each round runs one bare and one trainer run, in an order shuffled afresh per round
(benchmarks/ratios.py), since the machine's speed drifts (a single bare run after the
trainer once read 13% slower than the one before it); the figure is the median of the
per-round trainer/bare ratios with its bootstrap 95% interval.

The loop's own host time per step (`host_us_per_step`): the same two loops with a trivial
compiled step (it only counts the step and returns constant metrics), so the device is never
what the host waits for; each round's figure is the trainer's time per step minus the bare
loop's, both over --host_steps steps, and the figure is the median over --rounds rounds with
its bootstrap 95% interval. Every per-step hook, progress update, signature lookup, metrics
row, input thread and accounting call of the trainer is in it; the step's dispatch and the
batch's transfer are in both loops and cancel. Checkpoint saves are not: they are periodic
I/O (a save every 200 trivial steps would be one every ~0.3 s), so this mode saves only at
the end, and the save's own time is reported beside it (`save_ms`, the mean time the loop
spent in one save in the full-step runs).

Prints a table, then (last line) one JSON object: {"ratio": median trainer/bare steps/s,
"ratio_ci95": [low, high], "ratio_min", "ratio_max", "host_us_per_step",
"host_us_per_step_ci95", ...}.
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
from ratios import MIN_ROUNDS, median_ci95, ratio_figures, round_orders  # noqa: E402
from report import print_figures  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

from mmjax.training import trainer  # noqa: E402
from mmjax.training import saver, setup, step as step_lib  # noqa: E402
from mmjax.experiment import build
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.training import optimizer as optim
from mmjax.runtime import sharding
from mmjax.data.memory import InMemoryIterator, synthetic_batch  # noqa: E402
from mmjax.models import logical_axes as axes  # noqa: E402
from mmjax.training.step import make_train_step  # noqa: E402

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "configs", "mm_world.py") + ":tiny"


def overhead_config(steps: int, batch: int):
  config = experiment.load(TINY, [
      f"total_steps={steps}", "log_every_steps=25", "checkpoint.every_steps=200",
      f"tasks.default.batch_size={batch}", "mesh.data=1", "optim.warmup_steps=2"])
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()
  return config


def batches_for(config, n: int = 8) -> list[dict]:
  task = config.tasks.default
  return [synthetic_batch(config.model.modalities, task.batch_size, seed=i) for i in range(n)]


def trivial_step(graphdef, objectives, optimizer, seed, microbatches=1,
                 freeze_after_nonfinite=False, **unused):
  """make_train_step's signature, for a step that only counts: the loops' host time alone."""
  def step(state, batch):
    del batch
    zero = jnp.zeros((), jnp.float32)
    return state.replace(step=state.step + 1), {"loss": zero, "grad_norm": zero,
                                                 "finite": jnp.ones((), jnp.float32)}
  return step


def bare_steps_per_s(config, batches, steps: int, make_step=make_train_step) -> float:
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  objectives = build.task_objectives(config)
  spec = build.model_spec(config, objectives)
  optimizer = optim.make_optimizer(config.optim, config.total_steps)
  graphdef, init_fn, abstract = step_lib.abstract_train_state(spec, config.seed, optimizer)
  rules = sharding.rules_from_config(config.sharding.rules)
  state_sh = sharding.state_shardings(abstract, mesh, rules)
  fn = make_step(graphdef, objectives["default"], optimizer, config.seed,
                 freeze_after_nonfinite=True)
  first = sharding.global_batch(batches[0], mesh)
  with axes.activation_sharding(sharding.activation_sharder(mesh, rules)):
    jitted = jax.jit(fn, donate_argnums=0, out_shardings=(state_sh, sharding.replicated(mesh)))
    compiled = jitted.lower(step_lib.with_shardings(abstract, state_sh), first).compile()
  state = jax.jit(init_fn, out_shardings=state_sh)()
  state, metrics = compiled(state, first)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for i in range(steps):
    state, metrics = compiled(state, sharding.global_batch(batches[i % len(batches)], mesh))
  jax.block_until_ready((state, metrics))
  return steps / (time.perf_counter() - t0)


def trainer_steps_per_s(config, batches, make_step=make_train_step, saves=None) -> float:
  """The trainer's steps/s, from its metrics.jsonl; `make_step` replaces the update step the
  set-up compiles (setup.make_train_step), for the trivial-step measurement; `saves`, a
  list, gets the seconds of each checkpoint save."""
  real, setup.make_train_step = setup.make_train_step, make_step
  real_save = saver.Saver.save

  def timed_save(self, step, state):
    start = time.perf_counter()
    real_save(self, step, state)
    if saves is not None:
      saves.append(time.perf_counter() - start)
  saver.Saver.save = timed_save
  try:
    with tempfile.TemporaryDirectory() as workdir:
      trainer.train(experiment.parse(config), workdir,
                    iterators={"default": InMemoryIterator(batches)})
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if "perf/steps_per_s" in line]
  finally:
    setup.make_train_step, saver.Saver.save = real, real_save
  windows = rows[1:]  # the first window holds the compile
  steps = sum(b["step"] - a["step"] for a, b in zip(rows, rows[1:]))
  seconds = sum((b["step"] - a["step"]) / b["perf/steps_per_s"] for a, b in zip(rows, windows))
  return steps / seconds


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--rounds", type=int, default=MIN_ROUNDS,
                 help="rounds of one bare and one trainer run each, in shuffled order")
  p.add_argument("--seed", type=int, default=0, help="of the per-round order")
  p.add_argument("--host_steps", type=int, default=2000,
                 help="steps of each trivial-step run (host_us_per_step)")
  a = p.parse_args()
  config = overhead_config(a.steps, a.batch)
  batches = batches_for(config)
  bare_steps_per_s(config, batches, min(a.steps, 20))  # warm-up: the first compile is slower
  bare, full, saves = [], [], []
  for order in round_orders(["bare", "trainer"], a.rounds, a.seed):
    for kind in order:
      if kind == "bare":
        bare.append(bare_steps_per_s(config, batches, a.steps))
      else:
        full.append(trainer_steps_per_s(config, batches, saves=saves))
  fig = {"device": jax.devices()[0].device_kind, "batch": a.batch, "steps": a.steps,
         "rounds": a.rounds, "bare_steps_per_s": statistics.median(bare),
         "trainer_steps_per_s": statistics.median(full), **ratio_figures(full, bare)}
  fig.update(host_time(a), save_ms=1e3 * statistics.mean(saves), saves=len(saves))
  ratios = fig["ratio_rounds"]
  fig.update(ratio_min=min(ratios), ratio_max=max(ratios))
  print(f"{'round':<7}{'order':<16}{'bare':>10}{'trainer':>10}{'ratio':>8}")
  for r, (order, ratio) in enumerate(zip(round_orders(["bare", "trainer"], a.rounds, a.seed),
                                         ratios)):
    print(f"{r:<7}{','.join(order):<16}{bare[r]:>10.1f}{full[r]:>10.1f}{ratio:>8.3f}")
  print(f"host time per step, trivial step: {fig['host_us_per_step']:.1f} us "
        f"(95% {fig['host_us_per_step_ci95'][0]:.1f}..{fig['host_us_per_step_ci95'][1]:.1f}); "
        f"trainer {fig['trivial_trainer_us_per_step']:.1f} us, bare "
        f"{fig['trivial_bare_us_per_step']:.1f} us")
  print_figures(fig)


def host_time(a) -> dict:
  """The trainer's host time per step over a bare loop's, both with the trivial step."""
  config = overhead_config(a.host_steps, a.batch)
  with config.unlocked():
    config.checkpoint.every_steps = a.host_steps  # one save, after the last window
  batches = batches_for(config)
  bare_steps_per_s(config, batches, 20, trivial_step)  # warm-up
  bare, full = [], []
  for order in round_orders(["bare", "trainer"], a.rounds, a.seed + 1):
    for kind in order:
      if kind == "bare":
        bare.append(1e6 / bare_steps_per_s(config, batches, a.host_steps, trivial_step))
      else:
        full.append(1e6 / trainer_steps_per_s(config, batches, trivial_step))
  host, ci = median_ci95([t - b for t, b in zip(full, bare)])
  return {"host_us_per_step": host, "host_us_per_step_ci95": ci,
          "host_us_rounds": [t - b for t, b in zip(full, bare)],
          "trivial_trainer_us_per_step": statistics.median(full),
          "trivial_bare_us_per_step": statistics.median(bare)}


if __name__ == "__main__":
  main()
