"""A query decoder: predicts tokens at chosen positions from an encoder's outputs (4M's).

4M (Mizrahi et al., 2023) encodes only a subset of the tokens and has a separate, small
decoder predict another subset: each target position enters the decoder as a query (the
modality's [MASK] embedding plus its position and type embeddings, made by
MultimodalModel.query_tokens) and reads the encoder's outputs. Here the decoder is a stack
of the model's own pre-LN blocks over one sequence [context; queries] with the TokenInfo
mask (token_info.py): the context is a bidirectional prefix, the queries are causal. So each
query sees every valid context token, itself and the queries before it (which hold no
target content, only positions and what they read from the context), and the context never
sees a query: a query's prediction cannot depend on any target's value. Unlike 4M's
cross-attention decoder the context tokens are also updated from layer to layer (a prefix-LM
decoder); with depth 1 the two are the same computation up to the context's own update,
which no query reads.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.models import logical_axes as axes
from mmjax.models.ffn.mlp import Mlp
from mmjax.models.token_info import TokenInfo
from mmjax.models.transformer import Block, LayerNorm


class QueryDecoder(nnx.Module):

  def __init__(self, depth: int, width: int, num_heads: int, mlp_dim: int, *, param_dtype,
               dtype, rngs: nnx.Rngs):
    kw = dict(param_dtype=param_dtype, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([Block(width, num_heads, Mlp(width, mlp_dim, **kw), **kw)
                            for _ in range(depth)])
    self.final_ln = LayerNorm(width, **kw)

  def __call__(self, context_bcd: jax.Array, context_valid_bc: jax.Array,
               queries_bqd: jax.Array, queries_valid_bq: jax.Array) -> jax.Array:
    """The decoded queries [B, Q, D]; invalid context tokens are never attended to."""
    info = TokenInfo.concat([
        TokenInfo.for_modality(context_valid_bc, 0),
        TokenInfo.for_modality(queries_valid_bq, 0, causal=True)])
    c = context_bcd.shape[1]
    x_bld = jnp.concatenate([context_bcd, queries_bqd.astype(context_bcd.dtype)], axis=1)
    x_bld = axes.constrain(x_bld, ("batch", "length", "embed"))
    for block in self.blocks:
      x_bld, _ = block(x_bld, info)  # a dense MLP: no auxiliary outputs
    return self.final_ln(x_bld[:, c:])
