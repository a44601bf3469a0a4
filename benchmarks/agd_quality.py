"""AGD quality: each task's own validation loss after an AGD run vs after training alone.

  python benchmarks/agd_quality.py [--steps 700] [--width 64] [--depth 2] [--batch 64]
      [--tasks t2i_32,mlm,...] [--set model.posemb=sincos ...] [--alone t2i_32|none]
      [--alone_steps t2i_32=200] [--curve_every 100] [--keep_workdirs DIR]

configs/mm_world_agd.py's tasks on mm_world/default (40k training scenes: no example
repeats at these budgets), a small model, the real input pipelines. The AGD run trains all
tasks for --steps steps (the weighted schedule); then each task is trained alone, from
scratch, for exactly the number of steps it got in the AGD run, with the same optimizer
settings (its warm-up scaled to its shorter run). Every run ends with the task's own
validation loss (1,024 scenes, the eval batch fixed, so in-batch contrastive losses are
comparable): AGD minus alone < 0 means the task gained from sharing the model.

Ablations are flags: --tasks keeps a subset of the recipe's tasks in the AGD run, --set
applies a config override to every run (AGD and alone, e.g. model.posemb=sincos or
tasks.t2i_32.weight=3), --alone picks which tasks also train alone (none: only the AGD
run, to compare with an alone figure measured before), --alone_steps skips the AGD run
and trains only these tasks alone for these steps, --curve_every also evaluates every
task's validation loss every N steps (the curve goes into the JSON), --keep_workdirs keeps
each run's workdir (its metrics.jsonl has the per-task training loss, scale and grad norm).
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

from mmjax.training import trainer  # noqa: E402
from mmjax.config import recipe as config_lib
from mmjax import experiment

AGD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "configs", "mm_world_agd.py") + ":default"


def quality_config(a, steps: int, tasks=None):
  config = experiment.load(AGD, [
      f"total_steps={steps}", f"log_every_steps={max(steps // 10, 1)}",
      f"checkpoint.every_steps={steps}", "progress=False", f"eval_batch_size={a.eval_batch}",
      f"model.width={a.width}", f"model.depth={a.depth}", f"model.num_heads={a.heads}",
      f"model.mlp_dim={4 * a.width}", f"model.embed_dim={a.width}",
      f"optim.warmup_steps={max(round(a.warmup * steps / a.steps), 1)}", *a.set])
  with config.unlocked():
    keep = tasks or list(config.tasks)
    for name in list(config.tasks):
      config.tasks[name].batch_size = a.batch
      if name not in keep:
        del config.tasks[name]
    # Each task's own validation loss only: at the end, and every --curve_every steps.
    every = a.curve_every if 0 < a.curve_every < steps else steps
    config.evals = ml_collections.ConfigDict({
        f"{t}_loss": dict(type="loss", task=t, split="validation", every_steps=every)
        for t in keep})
  experiment.validate(config)
  return config


def run(config, keep_dir: str = "") -> tuple[dict, float, dict]:
  """(final logged metrics, wall seconds, {task: [[step, val loss], ...]}) of a trainer run
  in a fresh workdir: a temporary one, or `keep_dir` (kept for its metrics.jsonl)."""
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = keep_dir or tmp
    if keep_dir and os.path.exists(keep_dir):
      raise SystemExit(f"--keep_workdirs: {keep_dir} exists; name a fresh directory")
    logged = trainer.train(experiment.parse(config), workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f]
  curves = {t: [[r["step"], r[f"{t}/{t}_loss/loss"]] for r in rows if f"{t}/{t}_loss/loss" in r]
            for t in config.tasks}
  return logged, time.perf_counter() - t0, curves


def _names(text: str) -> list[str]:
  return [t for t in text.split(",") if t]


def _steps(text: str) -> dict[str, int]:
  return {k: int(v) for k, v in (kv.split("=") for kv in _names(text))}


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=700, help="steps of the AGD run")
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--heads", type=int, default=2)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--warmup", type=int, default=50, help="warm-up steps of the AGD run")
  p.add_argument("--eval_batch", type=int, default=256)
  p.add_argument("--tasks", default="", help="comma list: the AGD run's tasks (default all)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override for every run (repeatable), e.g. model.posemb=sincos")
  p.add_argument("--alone", default="all",
                 help="comma list of the AGD tasks also trained alone; all | none")
  p.add_argument("--alone_steps", default="", metavar="TASK=N,...",
                 help="skip the AGD run; train only these tasks alone for these steps")
  p.add_argument("--curve_every", type=int, default=0,
                 help="also evaluate the validation losses every N steps (0: at the end only)")
  p.add_argument("--keep_workdirs", default="", metavar="DIR",
                 help="keep each run's workdir under DIR (agd, alone_<task>) to read its metrics")
  return p


def main():
  a = parser().parse_args()
  keep = lambda name: os.path.join(a.keep_workdirs, name) if a.keep_workdirs else ""
  fig = {"device": jax.devices()[0].device_kind, "agd_steps": a.steps, "width": a.width,
         "depth": a.depth, "batch": a.batch, "overrides": " ".join(a.set)}
  agd, curves = {}, {}
  alone_steps = _steps(a.alone_steps)
  if not alone_steps:
    agd, fig["agd_wall_s"], agd_curves = run(
        quality_config(a, a.steps, _names(a.tasks)), keep("agd"))
    tasks = sorted(k.split("/")[1] for k in agd if k.startswith("train/") and k.endswith("/steps"))
    alone = tasks if a.alone == "all" else [t for t in _names(a.alone) if t != "none"]
    alone_steps = {t: int(agd[f"train/{t}/steps"]) for t in alone}
    for t in tasks:
      fig[f"steps/{t}"] = int(agd[f"train/{t}/steps"])
      fig[f"agd_loss/{t}"] = agd[f"{t}/{t}_loss/loss"]
      curves[f"agd/{t}"] = agd_curves[t]
  for t, n in alone_steps.items():
    alone_run, wall, alone_curves = run(quality_config(a, n, [t]), keep(f"alone_{t}"))
    fig.update({f"alone_steps/{t}": n, f"alone_loss/{t}": alone_run[f"{t}/{t}_loss/loss"],
                f"alone_wall_s/{t}": wall})
    curves[f"alone/{t}"] = alone_curves[t]
  rows = sorted({k.split("/", 1)[1] for k in fig if "_loss/" in k})
  print(f"{'task':<10}{'steps':>7}{'AGD loss':>11}{'alone loss':>12}{'AGD-alone':>11}")
  for t in rows:
    x, y = fig.get(f"agd_loss/{t}", float("nan")), fig.get(f"alone_loss/{t}", float("nan"))
    n = fig.get(f"steps/{t}", fig.get(f"alone_steps/{t}"))
    print(f"{t:<10}{n:>7}{x:>11.4f}{y:>12.4f}{x - y:>+11.4f}")
  both = [t for t in rows if f"agd_loss/{t}" in fig and f"alone_loss/{t}" in fig]
  fig["tasks_better_with_agd"] = sum(fig[f"agd_loss/{t}"] < fig[f"alone_loss/{t}"] for t in both)
  if a.curve_every:
    fig["curves"] = curves
  print_figures(fig)


if __name__ == "__main__":
  main()
