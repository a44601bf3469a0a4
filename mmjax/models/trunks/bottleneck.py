"""Bottleneck fusion (MBT, Nagrani et al. 2021) and late fusion, as one trunk.

Each modality runs in its own stream (weights shared across streams, or one tower per
modality). Up to `fusion_layer` the streams never meet. From then on, at every layer,
each stream attends to its own tokens plus `num_bottlenecks` shared bottleneck tokens,
and the bottleneck passed to the next layer is the mean of the streams' bottleneck
outputs, over the modalities present in each example. `fusion_layer = depth` is late
fusion (modalities meet only in the heads); `fusion_layer = 0` is bottlenecked early
fusion. A single-modality pass runs its stream alone (the bottleneck then only carries
that stream's own summary).

Bottleneck tokens in stream m carry m's modality id (they are processed as part of that
stream, e.g. by a modality-aware router). They are bidirectional tokens after the
stream's own: in a causal stream only they see the whole stream (TokenInfo's mask).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.config.registry import check
from mmjax.models import logical_axes as axes
from mmjax.models.aux_outputs import Aux
from mmjax.models.token_info import TokenInfo
from mmjax.models.transformer import LayerNorm
from mmjax.models.trunks.remat import block_applier


@dataclasses.dataclass(frozen=True)
class BottleneckFusionConfig:
  fusion_layer: int = 0      # first layer whose streams exchange bottleneck tokens
  num_bottlenecks: int = 4   # MBT's released config uses 4
  share_weights: bool = True  # one stack of blocks for every stream, or a tower each

  def __post_init__(self):
    check(isinstance(self.num_bottlenecks, int) and self.num_bottlenecks >= 1,
          "num_bottlenecks", "must be an integer >= 1")

  def check_model(self, depth: int, modalities) -> None:
    check(0 <= self.fusion_layer <= depth, "fusion_layer",
          f"{self.fusion_layer} is outside [0, model.depth={depth}] (0 = bottlenecked early fusion, "
          f"{depth} = late fusion)")
    check(len(modalities) >= 2, "type", f"bottleneck fusion needs >= 2 modalities in the "
          f"model; model.modalities has {list(modalities)}")

  def layer_sequences(self, lengths: Mapping[str, int], depth: int) -> list[list[int]]:
    """The attention sequences of one forward pass, layer by layer: one per stream, each
    with the bottleneck tokens from `fusion_layer` on."""
    nb = self.num_bottlenecks
    return [[n + (nb if i >= self.fusion_layer else 0) for n in lengths.values()]
            for i in range(depth)]

  def extra_flops(self, lengths: Mapping[str, int], width: int) -> float:
    del lengths, width
    return 0.0

  def causal_problem(self, depth: int, causal, modalities) -> str | None:
    """Refused where it would matter, rather than made sound: a stream's bottleneck tokens
    come after its own tokens, so a causal token never attends to them (nothing leaks, but
    nothing fuses: the text would never see the other modalities)."""
    del depth
    others = [m for m in modalities if m not in causal]
    if others:
      return (f"a causal token never attends to the bottleneck tokens after its stream, so "
              f"{list(causal)} would never see {others}; use model.fusion.type='early' "
              f"(a prefix-LM) or 'late_decoder'")
    return None

  def build(self, *, depth: int, width: int, make_block: Callable[[int], nnx.Module],
            remat: str, modalities, param_dtype, dtype, rngs: nnx.Rngs) -> nnx.Module:
    return ModalityStreams(depth, width, make_block, modalities=modalities,
                           fusion_layer=self.fusion_layer, num_bottlenecks=self.num_bottlenecks,
                           share_weights=self.share_weights, remat=remat,
                           param_dtype=param_dtype, dtype=dtype, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class LateFusionConfig:
  """Modality-specific towers fused only at the heads (the early-vs-late baseline)."""
  share_weights: bool = False

  def check_model(self, depth: int, modalities) -> None:
    del depth, modalities  # any depth and modalities

  def layer_sequences(self, lengths: Mapping[str, int], depth: int) -> list[list[int]]:
    return [list(lengths.values()) for _ in range(depth)]

  def extra_flops(self, lengths: Mapping[str, int], width: int) -> float:
    del lengths, width
    return 0.0

  def causal_problem(self, depth: int, causal, modalities) -> str | None:
    """Sound, but towers that meet only at the heads never show a causal modality the
    others: refused when the pass fuses others with it (a caption beside its image)."""
    del depth
    others = [m for m in modalities if m not in causal]
    if others:
      return (f"late fusion meets only at the heads, so {list(causal)} would never see "
              f"{others}; use model.fusion.type='late_decoder' (encoders feeding a causal "
              f"decoder, NMM's late fusion) or 'early'")
    return None

  def build(self, *, depth: int, width: int, make_block: Callable[[int], nnx.Module],
            remat: str, modalities, param_dtype, dtype, rngs: nnx.Rngs) -> nnx.Module:
    return ModalityStreams(depth, width, make_block, modalities=modalities, fusion_layer=depth,
                           num_bottlenecks=0, share_weights=self.share_weights, remat=remat,
                           param_dtype=param_dtype, dtype=dtype, rngs=rngs)


def _bottleneck_info(stream: TokenInfo, nb: int) -> TokenInfo:
  """The bottleneck tokens appended to a stream: valid, bidirectional, with the modality
  and segment of the stream's first token."""
  b = stream.valid.shape[0]
  first = lambda x: jnp.broadcast_to(x[:, :1], (b, nb))
  return TokenInfo(valid=jnp.ones((b, nb), bool), modality=first(stream.modality),
                   causal=jnp.zeros((b, nb), bool), segment=first(stream.segment))


class ModalityStreams(nnx.Module):

  def __init__(self, depth: int, width: int, make_block: Callable[[int], nnx.Module], *,
               modalities, fusion_layer: int, num_bottlenecks: int, share_weights: bool,
               remat: str, param_dtype, dtype, rngs: nnx.Rngs):
    kw = dict(param_dtype=param_dtype, dtype=dtype, rngs=rngs)
    self.depth, self.fusion_layer, self.dtype = depth, fusion_layer, dtype
    self.share_weights = share_weights
    self.apply_block = block_applier(remat)
    if share_weights:
      self.blocks = nnx.List([make_block(i) for i in range(depth)])
      self.final_ln = LayerNorm(width, **kw)
    else:
      self.towers = nnx.Dict({m: nnx.List([make_block(i) for i in range(depth)])
                              for m in modalities})
      self.final_lns = nnx.Dict({m: LayerNorm(width, **kw) for m in modalities})
    self.num_bottlenecks = num_bottlenecks if fusion_layer < depth else 0
    if self.num_bottlenecks:
      self.bottleneck = axes.param(rngs, jax.nn.initializers.normal(0.02),
                                   (self.num_bottlenecks, width), ("length", "embed"),
                                   param_dtype)

  def _block(self, layer: int, m: str):
    return self.blocks[layer] if self.share_weights else self.towers[m][layer]

  def _final_ln(self, m: str):
    return self.final_ln if self.share_weights else self.final_lns[m]

  def __call__(self, tokens: dict[str, jax.Array],
               infos: dict[str, TokenInfo]) -> tuple[dict[str, jax.Array], Aux]:
    names = list(tokens)
    x = {m: axes.constrain(tokens[m], ("batch", "length", "embed")) for m in names}
    b = x[names[0]].shape[0]
    nb = self.num_bottlenecks
    aux = Aux()
    if nb:
      z_bnd = jnp.broadcast_to(self.bottleneck[...].astype(self.dtype)[None],
                               (b, nb, self.bottleneck.shape[-1]))
      # Per example, the modalities that are there (any valid token): the bottleneck is
      # averaged over those only.
      present_mb = jnp.stack([infos[m].valid.any(axis=1) for m in names]).astype(jnp.float32)
      fused_infos = {m: TokenInfo.concat([infos[m], _bottleneck_info(infos[m], nb)])
                     for m in names}
    for i in range(self.depth):
      fused = nb > 0 and i >= self.fusion_layer
      z_outs = []
      for m in names:
        prefix = f"layer{i}/{m}/"
        if fused:
          n = x[m].shape[1]
          y, block_aux = self.apply_block(self._block(i, m), jnp.concatenate([x[m], z_bnd], 1),
                                          fused_infos[m])
          x[m], z = y[:, :n], y[:, n:]
          z_outs.append(z.astype(jnp.float32))
        else:
          x[m], block_aux = self.apply_block(self._block(i, m), x[m], infos[m])
        aux = aux.merge(block_aux, prefix=prefix)
      if fused:
        total = jnp.einsum("mb,mbnd->bnd", present_mb, jnp.stack(z_outs))
        z_bnd = (total / jnp.maximum(present_mb.sum(0), 1.0)[:, None, None]).astype(self.dtype)
    return {m: self._final_ln(m)(x[m]) for m in names}, aux
