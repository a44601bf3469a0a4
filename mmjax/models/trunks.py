"""Fusion trunks: how the tokens of several modalities meet in the transformer.

A trunk maps {modality: tokens [B,N,D]} and {modality: valid [B,N]} to the same
structure after `depth` blocks. Only the early-fusion trunk exists today; bottleneck
and late fusion plug in here with the same signature.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.models import axes
from mmjax.models.transformer import Block, LayerNorm

FUSIONS = ("early",)


REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,   # keep only block inputs
    "save_matmuls": jax.checkpoint_policies.dots_saveable,  # recompute norms/activations
}


def _call_block(block, x_bld, mask):
  return block(x_bld, mask)


def remat_block(remat: str):
  """How a block is applied: directly, or rematerialised (activations recomputed in the
  backward pass) under a policy saying which intermediates to keep."""
  if remat == "none":
    return _call_block
  if remat not in REMAT_POLICIES:
    raise ValueError(f"model.remat={remat!r}; valid: 'none', {', '.join(map(repr, REMAT_POLICIES))}")
  return nnx.remat(_call_block, policy=REMAT_POLICIES[remat])


def key_mask(valid_bn: jax.Array) -> jax.Array:
  """[B,N] token validity -> attention mask [B,1,1,N] (every query sees valid keys)."""
  return valid_bn[:, None, None, :]


class EarlyFusion(nnx.Module):
  """One pre-LN transformer over the concatenated tokens of all present modalities."""

  def __init__(self, width: int, depth: int, num_heads: int, mlp_dim: int, *, param_dtype,
               dtype, rngs: nnx.Rngs, remat: str = "none"):
    kw = dict(param_dtype=param_dtype, dtype=dtype, rngs=rngs)
    self.apply_block = remat_block(remat)
    self.blocks = nnx.List([Block(width, num_heads, mlp_dim, **kw) for _ in range(depth)])
    self.final_ln = LayerNorm(width, **kw)

  def __call__(self, tokens: dict[str, jax.Array], valid: dict[str, jax.Array]):
    names = list(tokens)
    sizes = [tokens[m].shape[1] for m in names]
    x_bld = jnp.concatenate([tokens[m] for m in names], axis=1)
    valid_bl = jnp.concatenate([valid[m] for m in names], axis=1)
    x_bld = axes.constrain(x_bld, ("batch", "length", "embed"))
    mask = key_mask(valid_bl)
    for block in self.blocks:
      x_bld = self.apply_block(block, x_bld, mask)
    x_bld = self.final_ln(x_bld)
    out, start = {}, 0
    for m, n in zip(names, sizes):
      out[m] = x_bld[:, start:start + n]
      start += n
    return out


def make_trunk(fusion: str, **kw) -> nnx.Module:
  if fusion == "early":
    return EarlyFusion(**kw)
  raise ValueError(f"model.fusion={fusion!r}; valid: {FUSIONS}")
