"""Fusion families side by side: early vs bottleneck vs late at equal width and depth.

  python benchmarks/fusion.py [--width 256] [--depth 4] [--batch 16]

For 2 modalities (text + image) and 3 (text + image + audio), one classification
objective that fuses all of them in one pass, prints per fusion type: the analytic
attention FLOPs of one training step (mmjax/perf/flops.py: early fusion attends over
sum L_m tokens at once, bottleneck per stream over L_m + n_b, late per stream over L_m),
the analytic FLOPs of the whole step, XLA's count of the compiled step (CPU) and the step
time (median of --steps, the three fusion types alternating so the machine's drift hits
each alike). Last line: one JSON object of the figures.
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
from mmjax.perf import peak as perf  # noqa: E402
from mmjax.training import optimizer as optim
from mmjax.models.embedders import ModalitySpec  # noqa: E402
from mmjax.models.model import build_model  # noqa: E402
from mmjax.models.spec import ModelSpec  # noqa: E402
from mmjax.models.trunks import TRUNKS  # noqa: E402
from mmjax.perf import flops as flops_lib  # noqa: E402
from mmjax.training.step import init_state, make_train_step  # noqa: E402
from report import print_figures  # noqa: E402

MODALITIES = {"text": ModalitySpec("text", (64,), (), 259),
              "image": ModalitySpec("image", (64, 64, 3), (8,)),       # 64 patches
              "audio": ModalitySpec("audio", (64, 64), (8, 8))}         # 64 patches
FUSIONS = {"early": dict(type="early"),
           "bottleneck": dict(type="bottleneck", fusion_layer=0, num_bottlenecks=4),
           "late": dict(type="late")}


def attention_flops(spec, tokens: dict) -> float:
  """Training FLOPs per example of attention alone (3x forward), as the trunk runs it."""
  return 3.0 * sum(flops_lib.attention_flops(n, spec.width, spec.num_heads)
                   for layer in spec.fusion.layer_sequences(tokens, spec.depth) for n in layer)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--width", type=int, default=256)
  p.add_argument("--depth", type=int, default=4)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=5)
  a = p.parse_args()
  ocfg = ml_collections.ConfigDict(dict(learning_rate=1e-4, warmup_steps=1, end_lr_fraction=0.1,
                                        weight_decay=0.0, b1=0.9, b2=0.95, clip_norm=1.0))
  optimizer = optim.make_optimizer(ocfg, 1000)
  rng = np.random.default_rng(0)
  fig = {"device": jax.devices()[0].device_kind, "width": a.width, "depth": a.depth,
         "batch": a.batch}
  for names in (("text", "image"), ("text", "image", "audio")):
    mods = {m: MODALITIES[m] for m in names}
    kinds = {m: s.kind for m, s in mods.items()}
    obj = objectives.make_objective(
        "cls", dict(type="classification", inputs=names, num_classes=10), kinds)
    batch = {m: jnp.asarray(rng.normal(size=(a.batch, *s.shape)), jnp.float32)
             for m, s in mods.items() if s.kind != "text"}
    batch["text"] = jnp.asarray(rng.integers(3, 259, (a.batch, 64)), jnp.int32)
    batch["label"] = jnp.asarray(rng.integers(0, 10, a.batch), jnp.int32)
    shapes = {k: v.shape for k, v in batch.items()}
    runs = {}
    for fusion, fcfg in FUSIONS.items():
      spec = ModelSpec(modalities=mods, width=a.width, depth=a.depth, num_heads=a.width // 64,
                       mlp_dim=4 * a.width, dtype="float32",
                       fusion=TRUNKS.parse(fcfg, "fusion"), heads=objectives.heads_for((obj,)))
      graphdef, params = nnx.split(build_model(spec, 0), nnx.Param)
      state = init_state(lambda: params, optimizer)
      compiled = jax.jit(make_train_step(graphdef, (obj,), optimizer, 0),
                         donate_argnums=0).lower(state, batch).compile()
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
      tokens = flops_lib.pass_tokens(spec, names, shapes)
      runs[fusion] = dict(compiled=compiled, state=state, times=[],
                          attention=a.batch * attention_flops(spec, tokens),
                          analytic=flops_lib.train_step_flops(spec, (obj,), shapes),
                          xla=perf.compiled_flops(compiled))
    for _ in range(a.steps):
      for r in runs.values():
        t0 = time.perf_counter()
        r["state"], m = r["compiled"](r["state"], batch)
        jax.block_until_ready(m)
        r["times"].append(time.perf_counter() - t0)
    key = f"{len(names)}mod"
    print(f"\n{len(names)} modalities ({', '.join(names)}; {sum(tokens.values())} tokens)")
    print(f"{'fusion':<12}{'attn GFLOP':>12}{'step GFLOP':>12}{'XLA GFLOP':>12}"
          f"{'analytic/XLA':>14}{'step s':>9}")
    for fusion, r in runs.items():
      step_s = statistics.median(r["times"])
      print(f"{fusion:<12}{r['attention'] / 1e9:>12.2f}{r['analytic'] / 1e9:>12.2f}"
            f"{r['xla'] / 1e9:>12.2f}{r['analytic'] / r['xla']:>14.3f}{step_s:>9.3f}")
      fig.update({f"{key}/{fusion}/attention_flops": r["attention"],
                  f"{key}/{fusion}/analytic_flops": r["analytic"],
                  f"{key}/{fusion}/xla_flops": r["xla"], f"{key}/{fusion}/step_s": step_s})
  print()
  print_figures(fig)


if __name__ == "__main__":
  main()
