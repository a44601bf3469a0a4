"""Early fusion: one transformer over the concatenated tokens of every modality present."""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.models import logical_axes as axes
from mmjax.models.aux_outputs import Aux
from mmjax.models.token_info import TokenInfo
from mmjax.models.transformer import LayerNorm
from mmjax.models.trunks.remat import block_applier


@dataclasses.dataclass(frozen=True)
class EarlyFusionConfig:
  """No settings of its own: width, depth, heads and remat are the model's."""

  def check_model(self, depth: int, modalities) -> None:
    del depth, modalities  # any depth and modalities

  def layer_sequences(self, lengths: Mapping[str, int], depth: int) -> list[list[int]]:
    """One sequence of all the pass's tokens at every layer."""
    return [[sum(lengths.values())] for _ in range(depth)]

  def extra_flops(self, lengths: Mapping[str, int], width: int) -> float:
    del lengths, width  # nothing beyond the blocks and the final norm
    return 0.0

  def causal_problem(self, depth: int, causal, modalities) -> str | None:
    """Sound for any causal modalities: the model puts them after the bidirectional ones
    (MultimodalModel.trunk_inputs), so those are a prefix (a prefix-LM)."""
    del depth, causal, modalities
    return None

  def build(self, *, depth: int, width: int, make_block: Callable[[int], nnx.Module],
            remat: str, modalities, param_dtype, dtype, rngs: nnx.Rngs) -> nnx.Module:
    del modalities  # one shared stack whatever the modalities
    return EarlyFusion(depth, width, make_block, remat=remat, param_dtype=param_dtype,
                       dtype=dtype, rngs=rngs)


class EarlyFusion(nnx.Module):

  def __init__(self, depth: int, width: int, make_block: Callable[[int], nnx.Module], *,
               remat: str, param_dtype, dtype, rngs: nnx.Rngs):
    self.apply_block = block_applier(remat)
    self.blocks = nnx.List([make_block(i) for i in range(depth)])
    self.final_ln = LayerNorm(width, param_dtype=param_dtype, dtype=dtype, rngs=rngs)

  def prefix(self, tokens: dict[str, jax.Array], infos: dict[str, TokenInfo]):
    """(tokens, infos, aux) as this stack's blocks take them: unchanged here (cached
    decoding, mmjax/models/decoding.py, runs the stack's blocks itself)."""
    return tokens, infos, Aux()

  def causal_stack(self) -> "EarlyFusion":
    """The stack whose blocks see the causal tokens: this one."""
    return self

  def __call__(self, tokens: dict[str, jax.Array],
               infos: dict[str, TokenInfo]) -> tuple[dict[str, jax.Array], Aux]:
    names = list(tokens)
    sizes = [tokens[m].shape[1] for m in names]
    x_bld = jnp.concatenate([tokens[m] for m in names], axis=1)
    x_bld = axes.constrain(x_bld, ("batch", "length", "embed"))
    info = TokenInfo.concat([infos[m] for m in names])
    aux = Aux()
    for i, block in enumerate(self.blocks):
      x_bld, block_aux = self.apply_block(block, x_bld, info)
      aux = aux.merge(block_aux, prefix=f"layer{i}/")
    x_bld = self.final_ln(x_bld)
    out, start = {}, 0
    for m, n in zip(names, sizes):
      out[m] = x_bld[:, start:start + n]
      start += n
    return out, aux
