"""The trainer's logged perf/mfu against benchmarks/mfu.py, on 1 and on 8 (fake) devices.

  python benchmarks/mfu_agreement.py [--depth 8] [--steps 6]

Each device count runs in its own process (the count is fixed when JAX starts): there the
benchmark measures its MFU, then the real trainer trains the same model (same shape,
same batch, same objective) from an in-memory iterator and logs perf/mfu; the trainer's
figure is the median over its log windows after the first (which holds the compile).
Each process runs --rounds rounds of (benchmark, trainer run) in an order shuffled afresh
per round (benchmarks/ratios.py); `ratio` is the median of the 1-device rounds' trainer /
benchmark MFU, `ratio_ci95` its bootstrap 95% interval.
Bars: trainer within 15% of the benchmark on 1 device (the whole interval); the 8-device
(data=8) trainer figure within 10x of the 1-device one (8 fake devices share the host's
cores, so they really are slower; the peak is the host's, not multiplied by 8).
Prints a table, then (last line) one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from ratios import MIN_ROUNDS, ratio_figures, round_orders  # noqa: E402
from report import print_figures  # noqa: E402


def trainer_config(width, depth, heads, tokens, batch, steps, devices):
  import ml_collections
  from mmjax import experiment
  from mfu import PATCH
  side = int(round(tokens ** 0.5)) * PATCH
  config = experiment.load(os.path.join(os.path.dirname(HERE), "configs", "mm_world.py:tiny"), [
      f"model.width={width}", f"model.depth={depth}", f"model.num_heads={heads}",
      f"model.mlp_dim={4 * width}", f"total_steps={steps}", "log_every_steps=2",
      "checkpoint.every_steps=100000", f"tasks.default.batch_size={batch}",
      f"mesh.data={devices}", "optim.warmup_steps=1"])
  with config.unlocked():
    config.model.modalities = ml_collections.ConfigDict(
        {"image": dict(kind="image", shape=(side, side, 3), patch=(PATCH,))})
    config.tasks.default.objectives = ml_collections.ConfigDict(
        {"cls": dict(type="classification", inputs=("image",), label="label", num_classes=10)})
    config.evals = ml_collections.ConfigDict()
  experiment.validate(config)
  return config


def child(a) -> dict:
  import jax
  from mfu import measure
  from mmjax.training import trainer
  from mmjax import experiment
  from mmjax.data.memory import InMemoryIterator, synthetic_batch
  config = trainer_config(a.width, a.depth, a.heads, a.tokens, a.batch, a.steps,
                          jax.device_count())
  batches = [synthetic_batch(config.model.modalities, a.batch, seed=i) for i in range(2)]
  bench_mfus, trainer_mfus = [], []
  for order in round_orders(["benchmark", "trainer"], a.rounds, a.seed):
    for kind in order:
      if kind == "benchmark":
        bench_mfus.append(measure(a.width, a.depth, a.heads, a.tokens, a.batch, "float32",
                                  a.bench_steps)["mfu"])
        continue
      with tempfile.TemporaryDirectory() as workdir:
        trainer.train(experiment.parse(config), workdir, iterators={"default": InMemoryIterator(batches)})
        rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
      # The median over the log windows after the first (which holds the compile).
      trainer_mfus.append(statistics.median([r["perf/mfu"] for r in rows if "perf/mfu" in r][1:]))
  return {"devices": jax.device_count(), "benchmark_mfu": statistics.median(bench_mfus),
          "trainer_mfu": statistics.median(trainer_mfus), "benchmark_mfus": bench_mfus,
          "trainer_mfus": trainer_mfus}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--width", type=int, default=512)
  p.add_argument("--depth", type=int, default=8)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--tokens", type=int, default=256)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=6, help="trainer steps (log every 2)")
  p.add_argument("--bench_steps", type=int, default=3)
  p.add_argument("--rounds", type=int, default=MIN_ROUNDS,
                 help="rounds of one benchmark and one trainer run, in shuffled order")
  p.add_argument("--seed", type=int, default=0, help="of the per-round order")
  p.add_argument("--child", action="store_true")
  a = p.parse_args()
  if a.child:
    print(json.dumps(child(a)))
    return
  figs = {}
  for n in (1, 8):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    out = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
      sys.stderr.write(out.stderr[-3000:])
      sys.exit(f"error: the {n}-device run exited {out.returncode} (its stderr is above)")
    figs[n] = json.loads(out.stdout.strip().splitlines()[-1])
  fig = {"benchmark_mfu_1": figs[1]["benchmark_mfu"], "trainer_mfu_1": figs[1]["trainer_mfu"],
         "trainer_over_benchmark_1": figs[1]["trainer_mfu"] / figs[1]["benchmark_mfu"],
         "benchmark_mfu_8": figs[8]["benchmark_mfu"], "trainer_mfu_8": figs[8]["trainer_mfu"],
         "trainer_1_over_8": figs[1]["trainer_mfu"] / figs[8]["trainer_mfu"],
         **ratio_figures(figs[1]["trainer_mfus"], figs[1]["benchmark_mfus"]),
         **ratio_figures(figs[8]["trainer_mfus"], figs[8]["benchmark_mfus"], prefix="devices8_")}
  print_figures(fig)


if __name__ == "__main__":
  main()
