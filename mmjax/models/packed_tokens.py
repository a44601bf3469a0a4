"""The tokens of a packed modality (mmjax/data/packing.py): several examples in one row.

A packed text modality is one row of ids [B, N] whose tokens carry their example
(`segment`), their place in their document (`order`) and their position embedding
(`position`, restarting in every caption). A packed image modality has a slot axis,
[B, S, H, W, C]: each slot holds one image (or none: segment 0), embedded alone, and its
N tokens share the slot's segment and order (one bidirectional block, TokenInfo).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.models.model_inputs import ModelInputs
from mmjax.models.token_info import TokenInfo


def is_packed(x: ModelInputs, m: str) -> bool:
  return m in x.segment


def packed_tokens(embedder, x: ModelInputs, m: str, modality_id: int,
                  replace_bn: jax.Array | None) -> tuple[jax.Array, TokenInfo]:
  """(tokens [B, L, D], their TokenInfo) of packed modality m."""
  raw, segment, order = x.inputs[m], x.segment[m], x.order[m]
  if embedder.spec.kind == "text":
    tok = embedder(raw, replace_bn, positions_bn=x.position[m])
    valid = x.valid.get(m, segment > 0) & (segment > 0)
  else:
    b, s = raw.shape[:2]
    if replace_bn is not None:
      raise ValueError(f"masked modelling of packed {m!r} slots is not supported")
    tok = embedder(raw.reshape((b * s,) + raw.shape[2:]))
    n = tok.shape[1]
    tok = tok.reshape(b, s * n, tok.shape[-1])
    segment, order = (jnp.repeat(a, n, axis=1) for a in (segment, order))
    valid = segment > 0
  if m in x.present:
    valid = valid & x.present[m][:, None]
  info = TokenInfo.for_modality(valid, modality_id, causal=m in x.causal,
                                segment_bl=segment, order_bl=order)
  return tok, info
