"""What travels with every token through the trunk besides its vector."""
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
  """
  valid: jax.Array
  modality: jax.Array

  @classmethod
  def for_modality(cls, valid_bl: jax.Array, modality_id: int) -> "TokenInfo":
    return cls(valid=valid_bl, modality=jnp.full(valid_bl.shape, modality_id, jnp.int32))

  @classmethod
  def concat(cls, infos: Sequence["TokenInfo"]) -> "TokenInfo":
    return cls(valid=jnp.concatenate([i.valid for i in infos], axis=1),
               modality=jnp.concatenate([i.modality for i in infos], axis=1))

  def attention_mask(self) -> jax.Array:
    """[B,1,1,L]: every query attends to the valid keys."""
    return self.valid[:, None, None, :]
