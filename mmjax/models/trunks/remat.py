"""How a block is applied: directly, or rematerialised (recomputed in the backward pass)."""
from __future__ import annotations

import jax
from flax import nnx

POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,       # keep only block inputs
    "save_matmuls": jax.checkpoint_policies.dots_saveable,  # recompute norms/activations
}
CHOICES = ("none",) + tuple(POLICIES)


def _call_block(block, x_bld, info):
  return block(x_bld, info)


def block_applier(remat: str):
  """fn(block, x_bld, info) -> (x_bld, Aux), rematerialised under `remat`'s policy."""
  if remat == "none":
    return _call_block
  return nnx.remat(_call_block, policy=POLICIES[remat])
