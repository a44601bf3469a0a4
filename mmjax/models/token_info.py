"""What travels with every token through the trunk besides its vector, and the attention
mask it implies.

The mask is data, not code: causal, prefix-LM and packed sequences are per-token facts
here, so a new objective never needs a new trunk. The rule, for a query token q and a key
token k of one sequence (positions in the trunk's concatenated order):

  q attends to k  iff  k is valid, k is in q's segment, and
                       (k comes no later than q, or q and k are in one run of
                        consecutive bidirectional tokens)

So an all-bidirectional sequence attends everywhere (every trunk's behaviour before this
mask existed), an all-causal one attends to the past, and a bidirectional prefix followed by
causal tokens is a prefix-LM: the prefix sees itself whole, never the causal rest, and each
causal token sees the prefix and the causal tokens before it. A bidirectional block in the
middle of causal text (an image in an interleaved sequence) sees itself whole and the
past, never what follows it.

Packed rows (mmjax/data/packing.py) give each token its place in its document instead
(`order`): there the trunk's concatenated order (all images, then all text) is not the
document's order (an image inline between two captions), so the rule reads

  q attends to k  iff  k is valid, k is in q's segment, and order(k) <= order(q)

with every token of one image sharing one order value (a bidirectional block). For a row
in the trunk's order the two rules agree: `order` = the index of a causal token, and the
index where its run starts for a bidirectional one.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TokenInfo:
  """Per-token facts, [B, L] each, kept aligned with the tokens through concatenation.

  valid: bool; False for padding and for tokens of a modality absent from that example.
  modality: int32; the index of the token's modality in the model's modality order
    (ModelSpec.modalities), for modality-aware layers (routers, bottleneck fusion).
  causal: bool; the token's attention kind: True = causal (sees only the tokens before it
    and itself), False = bidirectional (also sees the rest of its bidirectional run).
  segment: int32; packed sequences: tokens attend only within their own segment (one
    example of a packed row). One segment per row when nothing is packed.
  order: int32 or None; packed rows only: the token's place in its document (module
    docstring). None: the trunk's concatenated order is the document's order.
  """
  valid: jax.Array
  modality: jax.Array
  causal: jax.Array
  segment: jax.Array
  order: jax.Array | None = None

  @classmethod
  def for_modality(cls, valid_bl: jax.Array, modality_id: int, *, causal: bool = False,
                   segment_bl: jax.Array | None = None,
                   order_bl: jax.Array | None = None) -> "TokenInfo":
    """The tokens of one modality: all of one attention kind, segment 0 unless given."""
    shape = valid_bl.shape
    segment = jnp.zeros(shape, jnp.int32) if segment_bl is None else segment_bl
    order = None if order_bl is None else order_bl.astype(jnp.int32)
    return cls(valid=valid_bl, modality=jnp.full(shape, modality_id, jnp.int32),
               causal=jnp.full(shape, causal, bool), segment=segment.astype(jnp.int32),
               order=order)

  @classmethod
  def concat(cls, infos: Sequence["TokenInfo"]) -> "TokenInfo":
    if len({i.order is None for i in infos}) > 1:
      raise ValueError("TokenInfo.concat: some modalities carry document order (packed) and "
                       "some do not; a packed row packs every modality it holds")
    cat = lambda *xs: jnp.concatenate(xs, axis=1)
    return jax.tree.map(cat, *infos)

  def attention_mask(self) -> jax.Array:
    """bool [B,1,L,L] (query, key): the rule of the module docstring."""
    same_segment = self.segment[:, :, None] == self.segment[:, None, :]
    if self.order is not None:
      not_later = self.order[:, None, :] <= self.order[:, :, None]      # [B,L(q),L(k)]
      return (self.valid[:, None, :] & same_segment & not_later)[:, None]
    b, l = self.valid.shape
    q_before_k = jnp.arange(l)[:, None] < jnp.arange(l)[None, :]        # [L,L]: key later
    bidir = ~self.causal
    # Runs of consecutive bidirectional tokens, numbered by the kind changes before them.
    change = jnp.concatenate([jnp.zeros((b, 1), bool), bidir[:, 1:] != bidir[:, :-1]], 1)
    run = jnp.cumsum(change, axis=1)
    same_run = (run[:, :, None] == run[:, None, :]) & bidir[:, :, None] & bidir[:, None, :]
    mask = self.valid[:, None, :] & same_segment & (~q_before_k[None] | same_run)
    return mask[:, None]
