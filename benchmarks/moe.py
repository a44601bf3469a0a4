"""MoE train step time against a dense model with the same active FLOPs, in one process.

  python benchmarks/moe.py             # CPU: width 512, 8 layers, 256 tokens, batch 16, f32
  python benchmarks/moe.py --dtype bfloat16 --batch 64   # an accelerator

Dense: mlp_dim 4*width. MoE: 8 experts of expert_dim 2*width, top-2, in every block, so
each token's FFN matmul FLOPs equal the dense model's (the router adds width*8 per token).
Variants: dropless with each grouped-matmul kernel (blocked, ragged), token choice with
capacity factor 1.25, expert choice (2 experts per token on average). Each round times
--steps_per_round steps of every variant, in an order shuffled afresh per round
(benchmarks/ratios.py), so neither the machine's drift nor going first favours one; the
table gives the median and range of step times and of the per-round ratio to dense, and
each ratio's bootstrap 95% interval (`ratio`, `ratio_ci95`: the fastest dropless kernel).
The last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.mfu import add_shape_args, classification_task  # noqa: E402
from benchmarks.ratios import MIN_ROUNDS, median_ci95, ratio_figures, round_orders  # noqa: E402
from mmjax.perf import peak as perf  # noqa: E402
from mmjax.models.embedders import ModalitySpec  # noqa: E402
from mmjax.models.ffn.mlp import MlpConfig  # noqa: E402
from mmjax.models.ffn.moe import MoeConfig  # noqa: E402
from mmjax.models.model import build_model  # noqa: E402
from mmjax.models.spec import Heads, ModelSpec  # noqa: E402
from mmjax.perf import flops as flops_lib  # noqa: E402
from mmjax.training.step import init_state, make_train_step  # noqa: E402


def variants(a) -> dict:
  moe = dict(num_experts=a.experts, top_k=a.top_k, expert_dim=4 * a.width // a.top_k,
             block_size=a.blocks[0])
  out = {"dense": MlpConfig()}
  for kernel in a.kernels:
    if kernel == "blocked" and len(a.blocks) > 1:  # the block size, chosen by measurement
      for block in a.blocks:
        out[f"dropless_blocked{block}"] = MoeConfig(
            routing="dropless", kernel=kernel, **{**moe, "block_size": block})
    else:
      out[f"dropless_{kernel}"] = MoeConfig(routing="dropless", kernel=kernel, **moe)
  out["token_choice_cf1.25"] = MoeConfig(routing="token_choice", capacity_factor=1.25, **moe)
  out["expert_choice_cf1.0"] = MoeConfig(routing="expert_choice", capacity_factor=1.0, **moe)
  return out


def main():
  p = add_shape_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
  p.add_argument("--experts", type=int, default=8)
  p.add_argument("--top_k", type=int, default=2)
  p.add_argument("--blocks", type=int, nargs="+", default=[128],
                 help="rows per block of the blocked kernel (several: one variant each)")
  p.add_argument("--kernels", nargs="+", default=["blocked", "ragged"])
  p.add_argument("--rounds", type=int, default=MIN_ROUNDS)
  p.add_argument("--steps_per_round", type=int, default=10,
                 help="steps of each variant timed together in one round")
  p.add_argument("--seed", type=int, default=0, help="of the per-round order")
  a = p.parse_args()

  side = int(round(a.tokens ** 0.5))
  patch = 8
  obj, optimizer = classification_task()
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(a.batch, side * patch, side * patch, 3)),
                                jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, a.batch), jnp.int32)}
  runs = {}
  for name, ffn in variants(a).items():
    spec = ModelSpec(
        modalities={"image": ModalitySpec("image", (side * patch, side * patch, 3), (patch,))},
        width=a.width, depth=a.depth, num_heads=a.heads, mlp_dim=4 * a.width, dtype=a.dtype,
        ffn=ffn, heads=Heads(class_heads={"label": 10}))
    graphdef, params = nnx.split(build_model(spec, seed=0), nnx.Param)
    state = init_state(lambda: params, optimizer)
    step = jax.jit(make_train_step(graphdef, (obj,), optimizer, seed=0), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, batch)  # warm-up
    jax.block_until_ready(m)
    shapes = {k: v.shape for k, v in batch.items()}
    runs[name] = dict(compiled=compiled, state=state, times=[], compile_s=compile_s,
                      metrics=m, flops=flops_lib.train_step_flops(spec, (obj,), shapes))

  for order in round_orders(list(runs), a.rounds, a.seed):
    for name in order:  # a fresh order each round: drift and going first favour no variant
      r = runs[name]
      t0 = time.perf_counter()
      for _ in range(a.steps_per_round):
        r["state"], r["metrics"] = r["compiled"](r["state"], batch)
      jax.block_until_ready(r["metrics"])
      r["times"].append((time.perf_counter() - t0) / a.steps_per_round)

  dense = np.asarray(runs["dense"]["times"])
  fig = {"device": jax.devices()[0].device_kind, "dtype": a.dtype, "width": a.width,
         "depth": a.depth, "tokens": a.tokens, "batch": a.batch, "experts": a.experts,
         "top_k": a.top_k, "rounds": a.rounds, "steps_per_round": a.steps_per_round,
         "blocks": a.blocks,
         "default_dropless_kernel": "blocked" if jax.default_backend() == "cpu" else "ragged"}
  print(f"{'variant':<22}{'step_s med':>11}{'min':>8}{'max':>8}{'ratio med':>11}"
        f"{'ratio min':>10}{'ratio max':>10}{'drop':>7}{'compile_s':>10}")
  for name, r in runs.items():
    t = np.asarray(r["times"])
    ratio = t / dense
    drop = [float(v) for k, v in r["metrics"].items() if k.endswith("moe/drop_rate")]
    drop_rate = float(np.mean(drop)) if drop else 0.0
    print(f"{name:<22}{np.median(t):>11.3f}{t.min():>8.3f}{t.max():>8.3f}"
          f"{np.median(ratio):>11.3f}{ratio.min():>10.3f}{ratio.max():>10.3f}"
          f"{drop_rate:>7.3f}{r['compile_s']:>10.1f}")
    fig[f"{name}/step_s"] = float(np.median(t))
    fig[f"{name}/ratio_to_dense"], fig[f"{name}/ratio_ci95"] = median_ci95(ratio)
    fig[f"{name}/ratio_range"] = [float(ratio.min()), float(ratio.max())]
    if name != "dense":
      fig[f"{name}/drop_rate"] = drop_rate
  peak = perf.measured_peak(a.dtype, (1024, 2048), seconds=1.0)
  fig["dense_mfu"] = runs["dense"]["flops"] / float(np.median(dense)) / peak
  best = min((k for k in runs if k.startswith("dropless")), key=lambda k: fig[f"{k}/step_s"])
  # Active FLOPs only (mmjax/perf/flops.py counts the experts a token is sent to).
  fig["moe_mfu_active"] = runs[best]["flops"] / fig[f"{best}/step_s"] / peak
  fig["dropless_ratio_to_dense"] = fig[f"{best}/ratio_to_dense"]
  # The headline: the fastest dropless kernel over dense, per round.
  fig.update(ratio_of=best, **ratio_figures(runs[best]["times"], runs["dense"]["times"]))
  print(json.dumps(fig))


if __name__ == "__main__":
  main()
