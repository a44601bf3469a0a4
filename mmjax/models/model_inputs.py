"""The batch contract: what the model reads of a batch, as one type.

A batch (design.md) is a dict of arrays. The model reads, per modality m:
  m            the raw input (image/video/audio arrays, text ids)
  m + "_mask"  bool [B, N] token validity (text padding), optional
  m + "_present" bool [B]: False drops m for that example, optional
and, in a packed batch (mmjax/data/packing.py), per modality m:
  m + "_segment"  int32 [B, N] (text) or [B, S] (one per image slot): the example (document)
                  of a row each token or slot belongs to, from 1; 0 = padding
  m + "_order"    int32, the same shape: the place in its document (TokenInfo.order)
  m + "_position" int32 [B, N], text: the position embedding each token takes (its place
                  in its caption)
`model_inputs(batch, modalities)` is the one function that reads them; objectives and
evaluators both call it, and nothing else looks for these keys. Token drop
(mmjax/training/token_drop.py) returns a copy with kept-token indices; it never writes
into the batch. Everything else in a batch (labels, content ids, word marks) is the
objectives' business, not the model's.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import struct

VALID_SUFFIX = "_mask"
PRESENT_SUFFIX = "_present"
PACKED_SUFFIXES = {"segment": "_segment", "order": "_order", "position": "_position"}


@struct.dataclass
class ModelInputs:
  """Per-modality inputs of one forward pass ({modality: array} each).

  inputs: the raw input of each modality, in the batch's layout.
  valid: bool [B, N] token validity, where given (absent: every token is valid).
  present: bool [B], where given; False drops the modality for that example.
  keep: int32 [B, K], token drop only: the K of N tokens (positions already added, in
    increasing order) that enter the trunk.
  causal: the modalities whose tokens attend causally (the rest are bidirectional; see
    TokenInfo); static.
  segment, order, position: packed batches only (module docstring); a packed image
    modality's input has a slot axis: [B, S, H, W, C].
  """
  inputs: Mapping[str, jax.Array]
  valid: Mapping[str, jax.Array] = struct.field(default_factory=dict)
  present: Mapping[str, jax.Array] = struct.field(default_factory=dict)
  keep: Mapping[str, jax.Array] = struct.field(default_factory=dict)
  causal: tuple[str, ...] = struct.field(pytree_node=False, default=())
  segment: Mapping[str, jax.Array] = struct.field(default_factory=dict)
  order: Mapping[str, jax.Array] = struct.field(default_factory=dict)
  position: Mapping[str, jax.Array] = struct.field(default_factory=dict)

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.inputs)

  def select(self, modalities: Sequence[str]) -> "ModelInputs":
    """These modalities only (each must be there), in the given order."""
    missing = [m for m in modalities if m not in self.inputs]
    if missing:
      raise ValueError(f"model inputs {missing} are missing; have {sorted(self.inputs)}")
    pick = lambda d: {m: d[m] for m in modalities if m in d}
    return ModelInputs(inputs=pick(self.inputs), valid=pick(self.valid),
                       present=pick(self.present), keep=pick(self.keep),
                       causal=tuple(m for m in self.causal if m in modalities),
                       segment=pick(self.segment), order=pick(self.order),
                       position=pick(self.position))

  def map_rows(self, fn: Callable[[str, jax.Array], jax.Array]) -> "ModelInputs":
    """Every per-example array x of modality m replaced by fn(m, x) (e.g. rows permuted
    or repeated); fn keeps the leading batch axis a batch axis."""
    over = lambda d: {m: fn(m, x) for m, x in d.items()}
    return ModelInputs(inputs=over(self.inputs), valid=over(self.valid),
                       present=over(self.present), keep=over(self.keep), causal=self.causal,
                       segment=over(self.segment), order=over(self.order),
                       position=over(self.position))

  def present_rows(self, modalities: Sequence[str], b: int) -> jax.Array:
    """bool [B]: the rows in which every one of `modalities` is present."""
    rows = jnp.ones((b,), bool)
    for m in modalities:
      if m in self.present:
        rows = rows & self.present[m]
    return rows


def model_inputs(batch: Mapping[str, jax.Array], modalities: Sequence[str]) -> ModelInputs:
  """The ModelInputs of `modalities` in a batch of the design.md format."""
  return ModelInputs(
      inputs={m: batch[m] for m in modalities},
      valid={m: batch[m + VALID_SUFFIX] for m in modalities if m + VALID_SUFFIX in batch},
      present={m: batch[m + PRESENT_SUFFIX] for m in modalities
               if m + PRESENT_SUFFIX in batch},
      **{field: {m: batch[m + suffix] for m in modalities if m + suffix in batch}
         for field, suffix in PACKED_SUFFIXES.items()})

