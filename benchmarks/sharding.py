"""Per-device bytes of params + optimizer state of a >=100M-parameter model at fsdp = 1..8.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/sharding.py

Nothing runs: each mesh's train step is lowered and compiled ahead of time, and the bytes
come from XLA's memory analysis of the compiled step (its arguments: params, optimizer
state and the batch) and from the state's shardings. Prints a table, then one JSON line.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

from mmjax import objectives  # noqa: E402
from mmjax.runtime import sharding  # noqa: E402
from mmjax.perf import memory as aot
from mmjax.training import optimizer as optim
from mmjax.models.embedders import ModalitySpec  # noqa: E402
from mmjax.models.spec import Heads, ModelSpec  # noqa: E402
from mmjax.training.step import abstract_train_state, with_shardings  # noqa: E402
from mmjax.training.step import make_train_step  # noqa: E402

WIDTH, DEPTH, MLP, HEADS = 1024, 8, 4096, 16


def main():
  if jax.device_count() < 8:
    sys.exit("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  spec = ModelSpec(modalities={"text": ModalitySpec("text", (64,), (), 32_000)},
                   width=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_dim=MLP,
                   heads=Heads(decoders={"text": "text"}))
  obj = objectives.make_objective("mlm", dict(type="masked", modality="text", ratio=0.15),
                                  {"text": "text"})
  ocfg = ml_collections.ConfigDict(dict(learning_rate=1e-4, warmup_steps=1, end_lr_fraction=0.1,
                                        weight_decay=0.1, b1=0.9, b2=0.95, clip_norm=1.0))
  optimizer = optim.make_optimizer(ocfg, 1000)
  config = ml_collections.ConfigDict(dict(seed=0))
  graphdef, _, abstract = abstract_train_state(spec, config.seed, optimizer)
  n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
  batch = {"text": jax.ShapeDtypeStruct((8, 64), jnp.int32),
           "text_mask": jax.ShapeDtypeStruct((8, 64), jnp.bool_)}
  rows = []
  for fsdp in (1, 2, 4, 8):
    mesh = sharding.make_mesh({"data": 8 // fsdp, "fsdp": fsdp})
    state_sh = sharding.state_shardings(abstract, mesh)
    abstract_sh = with_shardings(abstract, state_sh)
    batch_sh = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                        sharding=sharding.batch_sharding(mesh, len(v.shape)))
                for k, v in batch.items()}
    step = make_train_step(graphdef, (obj,), optimizer, seed=0)
    compiled = jax.jit(step, donate_argnums=0, out_shardings=(state_sh, sharding.replicated(mesh))
                       ).lower(abstract_sh, batch_sh).compile()
    r = aot.memory_report(abstract_sh, compiled)
    rows.append(dict(fsdp=fsdp, data=8 // fsdp, state_bytes=r["params_bytes"] + r["optimizer_bytes"],
                     **r))
  base = rows[0]["argument_bytes"]
  print(f"model: {n_params / 1e6:.1f}M params (width {WIDTH}, depth {DEPTH}, mlp {MLP}, vocab 32000)")
  print(f"{'fsdp':>5}{'data':>6}{'params+opt (MiB)':>18}{'XLA args (MiB)':>16}"
        f"{'XLA temp (MiB)':>16}{'args / fsdp=1':>15}")
  for r in rows:
    print(f"{r['fsdp']:>5}{r['data']:>6}{r['state_bytes'] / 2**20:>18.1f}"
          f"{r['argument_bytes'] / 2**20:>16.1f}{r['temp_bytes'] / 2**20:>16.1f}"
          f"{r['argument_bytes'] / base:>15.3f}")
  print(json.dumps({"params": n_params, "rows": rows,
                    "ratio_fsdp8_to_fsdp1": rows[-1]["argument_bytes"] / base}))


if __name__ == "__main__":
  main()
