"""DEQ fusion against stacked fusion layers of equal parameters: iterations and step time.

  python benchmarks/deq.py [--width 64] [--depth 2] [--batch 16] [--rounds 5]

Two models with exactly the same parameters (mmjax/models/trunks/deq.py): `deq`, whose
fused tokens are the fixed point of the `depth` weight-tied blocks (Anderson to --tol,
at most --max_iterations forward and as many adjoint iterations backward), and
`stacked`, early fusion over the same `depth` blocks applied once each. One
classification objective over text + image fused in one pass, a fixed random batch
(float32). Each round times one train step of each, in an order shuffled afresh per round
(benchmarks/ratios.py); `deq_over_stacked_step_time` is the median of the per-round
ratios (`_ci95` its bootstrap interval). The DEQ's forward iterations are the step's own
metric (`deq/iterations`, mean and max over the rounds), with its residual and how many
steps did not converge. The analytic FLOP count charges the documented upper bound (the
caps), so `analytic_flops_ratio` is that bound, not a measurement. Last line: one JSON
object of the figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from mmjax import objectives  # noqa: E402
from mmjax.models.embedders import ModalitySpec  # noqa: E402
from mmjax.models.model import build_model  # noqa: E402
from mmjax.models.spec import ModelSpec  # noqa: E402
from mmjax.models.trunks import TRUNKS  # noqa: E402
from mmjax.perf import flops as flops_lib  # noqa: E402
from mmjax.training import optimizer as optim  # noqa: E402
from mmjax.training.step import init_state, make_train_step  # noqa: E402
from ratios import ratio_figures, round_orders  # noqa: E402
from report import print_figures  # noqa: E402

MODALITIES = {"text": ModalitySpec("text", (32,), (), 259),
              "image": ModalitySpec("image", (32, 32, 3), (8,))}       # 16 patches


def _batch(size: int) -> dict:
  rng = np.random.default_rng(0)
  return {"image": jnp.asarray(rng.normal(size=(size, 32, 32, 3)), jnp.float32),
          "text": jnp.asarray(rng.integers(3, 259, (size, 32)), jnp.int32),
          "label": jnp.asarray(rng.integers(0, 10, size), jnp.int32)}


def _compiled_step(a, fusion: dict, obj, batch, optimizer):
  """(compiled step, its state, analytic FLOPs, params) of one trunk type."""
  spec = ModelSpec(modalities=MODALITIES, width=a.width, depth=a.depth, num_heads=2,
                   mlp_dim=4 * a.width, dtype="float32", fusion=TRUNKS.parse(fusion, "fusion"),
                   heads=objectives.heads_for((obj,)))
  graphdef, params = nnx.split(build_model(spec, 0), nnx.Param)
  state = init_state(lambda: params, optimizer)
  compiled = jax.jit(make_train_step(graphdef, (obj,), optimizer, 0),
                     donate_argnums=0).lower(state, batch).compile()
  shapes = {k: v.shape for k, v in batch.items()}
  return (compiled, state, flops_lib.train_step_flops(spec, (obj,), shapes),
          flops_lib.param_count(params))


def _stat(metrics: dict, name: str) -> float:
  return float(next(v for k, v in metrics.items() if k.endswith(name)))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--depth", type=int, default=2)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--tol", type=float, default=1e-3)
  p.add_argument("--max_iterations", type=int, default=20)
  a = p.parse_args()
  ocfg = ml_collections.ConfigDict(dict(learning_rate=1e-4, warmup_steps=1, end_lr_fraction=0.1,
                                        weight_decay=0.0, b1=0.9, b2=0.95, clip_norm=1.0))
  optimizer = optim.make_optimizer(ocfg, 1000)
  kinds = {m: s.kind for m, s in MODALITIES.items()}
  obj = objectives.make_objective(
      "cls", dict(type="classification", inputs=("text", "image"), num_classes=10), kinds)
  batch = _batch(a.batch)
  fusions = {"deq": dict(type="deq", tol=a.tol, max_iterations=a.max_iterations,
                         backward_tol=a.tol, backward_max_iterations=a.max_iterations),
             "stacked": dict(type="early")}
  runs = {}
  for name, fusion in fusions.items():
    compiled, state, flops, n_params = _compiled_step(a, fusion, obj, batch, optimizer)
    state, m = compiled(state, batch)  # warm-up
    jax.block_until_ready(m)
    runs[name] = dict(compiled=compiled, state=state, flops=flops, params=n_params, times=[],
                      metrics=[])
  for order in round_orders(list(runs), a.rounds):
    for name in order:
      r = runs[name]
      t0 = time.perf_counter()
      r["state"], m = r["compiled"](r["state"], batch)
      jax.block_until_ready(m)
      r["times"].append(time.perf_counter() - t0)
      r["metrics"].append(jax.device_get(m))
  deq, stacked = runs["deq"], runs["stacked"]
  iterations = [_stat(m, "deq/iterations") for m in deq["metrics"]]
  ratio = ratio_figures(deq["times"], stacked["times"], prefix="deq_over_stacked_step_time_")
  fig = {"device": jax.devices()[0].device_kind, "width": a.width, "depth": a.depth,
         "batch": a.batch, "rounds": a.rounds, "tol": a.tol, "max_iterations": a.max_iterations,
         "params_deq": deq["params"], "params_stacked": stacked["params"],
         "deq_step_s": statistics.median(deq["times"]),
         "stacked_step_s": statistics.median(stacked["times"]),
         "deq_over_stacked_step_time": ratio["deq_over_stacked_step_time_ratio"],
         "deq_over_stacked_step_time_ci95": ratio["deq_over_stacked_step_time_ratio_ci95"],
         "deq_forward_iterations_mean": float(np.mean(iterations)),
         "deq_forward_iterations_max": float(np.max(iterations)),
         "deq_residual_max": max(_stat(m, "deq/residual") for m in deq["metrics"]),
         "deq_not_converged_steps": sum(_stat(m, "deq/not_converged") > 0
                                        for m in deq["metrics"]),
         "analytic_flops_ratio": deq["flops"] / stacked["flops"]}
  print_figures(fig)


if __name__ == "__main__":
  main()
