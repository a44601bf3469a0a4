"""Expert-parallel dispatch: sharding constraints (what the model does) against an explicit
all-to-all in shard_map, for one MoE layer's forward + backward, on a (data, expert) mesh.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/moe_dispatch.py

Both run the same math on the capacity routings' slot grid [group, expert, slot, d]:
gather each slot's token, run the experts, weight and scatter-add back. They differ only
in how the grid moves from group-split (like the tokens) to expert-split (like the
expert weights) and back:
  constraints  dispatch.run_slots: two sharding constraints each way, lowered by XLA
  shard_map    all_to_all over the `expert` axis in a shard_map around the expert matmuls
The dropless rows run one routing group per device, with the experts' weights gathered
to every device (dropless has no fixed-size grid to all-to-all): vmapped over the groups
under sharding constraints, or each device's group in a shard_map (axes.map_batch_shards).
All variants run alternately in one process; the table gives the median step time and the median per-round ratio to
`constraints`, and the HLO's all-to-all / all-gather counts. Fake CPU devices share the
machine's cores, so the figures compare the work each variant adds, not a network.
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
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from mmjax.runtime import sharding  # noqa: E402
from mmjax.models import logical_axes as axes  # noqa: E402
from mmjax.models.ffn.mlp import ACTIVATIONS  # noqa: E402
from mmjax.models.ffn.moe import MoeConfig, dispatch, router  # noqa: E402
from mmjax.models.ffn.moe.layer import capacity  # noqa: E402

BATCH_AXES = ("data", "expert")


def slots_shard_map(mesh, x_gsd, slot_token_gec, slot_weight_gec, w, act):
  """run_slots with the grid moved by all_to_all: each device gathers its groups' slots,
  sends each expert shard its experts' slots, runs its experts, and sends them back."""
  def local(x_gsd, slot_token_gec, slot_weight_gec, wi, bi, wo, bo):
    x_gecd = dispatch.gather_slots(x_gsd, slot_token_gec)
    x_gecd = jax.lax.all_to_all(x_gecd, "expert", 1, 0, tiled=True)  # [4g, e/4, c, d]
    h = act(jnp.einsum("gecd,edf->gecf", x_gecd, wi) + bi[None, :, None, :])
    out = jnp.einsum("gecf,efd->gecd", h, wo) + bo[None, :, None, :]
    out = jax.lax.all_to_all(out, "expert", 0, 1, tiled=True)       # [g, e, c, d]
    return dispatch.combine_slots(out * slot_weight_gec[..., None], slot_token_gec,
                                  x_gsd.shape[1])
  g = P(BATCH_AXES)
  ex = P("expert")
  return jax.shard_map(local, mesh=mesh, in_specs=(g, g, g, ex, ex, ex, ex), out_specs=g)(
      x_gsd, slot_token_gec, slot_weight_gec, *w)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", type=int, default=2)
  p.add_argument("--expert", type=int, default=4)
  p.add_argument("--width", type=int, default=512)
  p.add_argument("--tokens", type=int, default=256)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--experts", type=int, default=8)
  p.add_argument("--top_k", type=int, default=2)
  p.add_argument("--capacity_factor", type=float, default=1.25)
  p.add_argument("--rounds", type=int, default=5)
  a = p.parse_args()
  mesh = sharding.make_mesh({"data": a.data, "expert": a.expert})
  sharder = sharding.activation_sharder(mesh)
  b, s, d, e, f = a.batch, a.tokens, a.width, a.experts, 4 * a.width // a.top_k
  act = ACTIVATIONS["gelu"]
  keys = jax.random.split(jax.random.key(0), 4)
  batch_sh = NamedSharding(mesh, P(BATCH_AXES))
  x = jax.device_put(jax.random.normal(keys[0], (b, s, d)), batch_sh)
  router_w = jax.random.normal(keys[1], (d, e)) * 0.02
  w = dispatch.ExpertWeights(
      *(jax.device_put(v, NamedSharding(mesh, P("expert"))) for v in (
          jax.random.normal(keys[2], (e, d, f)) * d ** -0.5, jnp.zeros((e, f)),
          jax.random.normal(keys[3], (e, f, d)) * f ** -0.5, jnp.zeros((e, d)))))
  valid = jnp.ones((b, s), bool)
  c = capacity(MoeConfig(num_experts=e, top_k=a.top_k, capacity_factor=a.capacity_factor), s)

  def routed(x, router_w):
    _, probs = router.probabilities(jnp.einsum("gsd,de->gse", x, router_w), None)
    expert, weight = router.token_choice(probs, valid, a.top_k, True)
    return jax.vmap(router.capacity_slots, (0, 0, 0, None, None))(expert, weight, valid, e, c)

  def constraints(x, router_w, w):
    slot_token, slot_weight, _ = routed(x, router_w)
    return dispatch.run_slots(x, slot_token, slot_weight, w, act)

  def shard_mapped(x, router_w, w):
    slot_token, slot_weight, _ = routed(x, router_w)
    return slots_shard_map(mesh, x, slot_token, slot_weight, w, act)

  shards = a.data * a.expert  # dropless: one routing group per device, as in the model

  def dropless_routed(x, router_w):
    x = x.reshape(shards, -1, d)
    _, probs = router.probabilities(jnp.einsum("gsd,de->gse", x, router_w), None)
    expert, weight = router.token_choice(probs, valid.reshape(shards, -1), a.top_k, True)
    return x, expert, weight, valid.reshape(shards, -1)

  def dropless_vmap(x, router_w, w):
    return dispatch.run_dropless(*dropless_routed(x, router_w), w, act, kernel="blocked",
                                 block=128)

  def dropless_shard_map(x, router_w, w):  # what the model runs on a mesh
    def local(x, expert, weight, valid, *w):
      return dispatch.run_dropless(x, expert, weight, valid, dispatch.ExpertWeights(*w), act,
                                   kernel="blocked", block=128)
    return axes.map_batch_shards(local, dropless_routed(x, router_w), w)

  runs = {}
  for name, fn in {"constraints": constraints, "shard_map": shard_mapped,
                   "dropless_vmap": dropless_vmap, "dropless_shard_map": dropless_shard_map}.items():
    def loss(x, router_w, w, fn=fn):
      return jnp.sum(jnp.square(fn(x, router_w, w)))
    with axes.activation_sharding(sharder):
      step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(x, router_w, w).compile()
    hlo = step.as_text()
    out = step(x, router_w, w)
    jax.block_until_ready(out)
    grad_norm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(out[1]))))
    runs[name] = dict(step=step, times=[], loss=float(out[0]), grad_norm=grad_norm,
                      all_to_all=hlo.count(" all-to-all("), all_gather=hlo.count(" all-gather("))
  for _ in range(a.rounds):
    for r in runs.values():
      t0 = time.perf_counter()
      jax.block_until_ready(r["step"](x, router_w, w))
      r["times"].append(time.perf_counter() - t0)

  base = np.asarray(runs["constraints"]["times"])
  fig = {"mesh": dict(mesh.shape), "batch": b, "tokens": s, "width": d, "experts": e,
         "top_k": a.top_k, "capacity_factor": a.capacity_factor, "rounds": a.rounds}
  print(f"{'variant':<19}{'step_s med':>11}{'ratio med':>10}{'ratio min':>10}{'ratio max':>10}"
        f"{'all-to-all':>11}{'all-gather':>11}{'loss':>12}{'grad norm':>12}")
  for name, r in runs.items():
    t = np.asarray(r["times"])
    ratio = t / base
    print(f"{name:<19}{np.median(t):>11.3f}{np.median(ratio):>10.3f}{ratio.min():>10.3f}"
          f"{ratio.max():>10.3f}{r['all_to_all']:>11}{r['all_gather']:>11}{r['loss']:>12.6g}"
          f"{r['grad_norm']:>12.6g}")
    fig.update({f"{name}/step_s": float(np.median(t)),
                f"{name}/ratio_to_constraints": float(np.median(ratio)),
                f"{name}/all_to_all": r["all_to_all"], f"{name}/all_gather": r["all_gather"]})
  print(json.dumps(fig))


if __name__ == "__main__":
  main()
