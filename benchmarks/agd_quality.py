"""AGD quality: each task's own validation loss after an AGD run vs after training alone.

  python benchmarks/agd_quality.py [--steps 700] [--width 64] [--depth 2] [--batch 64]

configs/mm_world_agd.py's tasks on mm_world/default (40k training scenes: no example
repeats at these budgets), a small model, the real input pipelines. The AGD run trains all
tasks for --steps steps (the weighted schedule); then each task is trained alone, from
scratch, for exactly the number of steps it got in the AGD run, with the same optimizer
settings (its warm-up scaled to its shorter run). Every run ends with the task's own
validation loss (1,024 scenes, the eval batch fixed, so in-batch contrastive losses are
comparable): AGD minus alone < 0 means the task gained from sharing the model.
Prints a table, then (last line) one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import ml_collections  # noqa: E402
from report import print_figures  # noqa: E402

from mmjax import config as config_lib, trainer  # noqa: E402

AGD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "configs", "mm_world_agd.py") + ":default"


def quality_config(a, steps: int, tasks=None):
  config = config_lib.load(AGD, [
      f"total_steps={steps}", f"log_every_steps={max(steps // 10, 1)}",
      f"checkpoint.every_steps={steps}", "progress=False", f"eval_batch_size={a.eval_batch}",
      f"model.width={a.width}", f"model.depth={a.depth}", f"model.num_heads={a.heads}",
      f"model.mlp_dim={4 * a.width}", f"model.embed_dim={a.width}",
      f"optim.warmup_steps={max(round(a.warmup * steps / a.steps), 1)}"])
  with config.unlocked():
    keep = tasks or list(config.tasks)
    for name in list(config.tasks):
      config.tasks[name].batch_size = a.batch
      if name not in keep:
        del config.tasks[name]
    # Each task's own validation loss only, once at the end.
    config.evals = ml_collections.ConfigDict({
        f"{t}_loss": dict(type="loss", task=t, split="validation", every_steps=steps)
        for t in keep})
  return config


def run(config) -> tuple[dict, float]:
  """(final logged metrics, wall seconds) of a full trainer run."""
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    logged = trainer.train(config, workdir)
  return logged, time.perf_counter() - t0


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=700, help="steps of the AGD run")
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--heads", type=int, default=2)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--warmup", type=int, default=50, help="warm-up steps of the AGD run")
  p.add_argument("--eval_batch", type=int, default=256)
  a = p.parse_args()
  agd, agd_wall = run(quality_config(a, a.steps))
  tasks = sorted(k.split("/")[1] for k in agd if k.startswith("train/") and k.endswith("/steps"))
  fig = {"device": jax.devices()[0].device_kind, "agd_steps": a.steps, "width": a.width,
         "depth": a.depth, "batch": a.batch, "agd_wall_s": agd_wall}
  rows = []
  for t in tasks:
    n = int(agd[f"train/{t}/steps"])
    alone, wall = run(quality_config(a, n, [t]))
    key = f"{t}/{t}_loss/loss"
    rows.append((t, n, agd[key], alone[key]))
    fig.update({f"steps/{t}": n, f"agd_loss/{t}": agd[key], f"alone_loss/{t}": alone[key],
                f"alone_wall_s/{t}": wall})
  print(f"{'task':<10}{'steps':>7}{'AGD loss':>11}{'alone loss':>12}{'AGD-alone':>11}")
  for t, n, x, y in rows:
    print(f"{t:<10}{n:>7}{x:>11.4f}{y:>12.4f}{x - y:>+11.4f}")
  fig["tasks_better_with_agd"] = sum(x < y for _, _, x, y in rows)
  print_figures(fig)


if __name__ == "__main__":
  main()
