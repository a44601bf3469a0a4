"""Late fusion as the NMM study defines it (Shukor et al. 2025): modality encoders feed a
decoder.

Every modality but `decoder_modality` (text) has its own encoder: `encoder_depth` blocks
with their own weights, always bidirectional, then a final norm and a linear projection
(the connector). The projected tokens are a prefix to the decoder: `model.depth` blocks
over [the encoders' outputs in the order given; the decoder modality's tokens]. With the
decoder modality causal (a next-token objective) that is a prefix-LM: the prefix sees
itself whole, each text token the prefix and the text before it (TokenInfo's mask).

A pass without the decoder modality (an image encoded alone, for a contrastive side) runs
the encoder and then the decoder over the prefix alone; a pass without encoder modalities
is a decoder-only transformer. The outputs of every modality are the decoder's.

Why a trunk of its own and not an option of `late`: `late` keeps each modality in its own
tower and fuses only at the heads (the contrastive baseline), so its towers' outputs never
meet; here one modality's tokens enter another's stack, with a connector between, and the
parameters, the FLOPs and what each output sees all differ.
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
from mmjax.models.heads import Linear
from mmjax.models.token_info import TokenInfo
from mmjax.models.transformer import LayerNorm
from mmjax.models.trunks.early import EarlyFusion
from mmjax.models.trunks.remat import block_applier


@dataclasses.dataclass(frozen=True)
class LateDecoderConfig:
  decoder_modality: str = "text"  # the modality the decoder runs over; the others get encoders
  encoder_depth: int = 0          # blocks of each encoder; 0 = model.depth

  def __post_init__(self):
    check(isinstance(self.encoder_depth, int) and self.encoder_depth >= 0, "encoder_depth",
          "must be an integer >= 0 (0 = model.depth)")

  def check_model(self, depth: int, modalities) -> None:
    del depth
    check(self.decoder_modality in modalities, "decoder_modality",
          f"{self.decoder_modality!r} is not in model.modalities {list(modalities)}")

  def causal_problem(self, depth: int, causal, modalities) -> str | None:
    del depth, modalities
    encoded = [m for m in causal if m != self.decoder_modality]
    if encoded:
      return (f"late_decoder runs {encoded} through bidirectional encoders; only "
              f"model.fusion.decoder_modality={self.decoder_modality!r} is decoded causally: "
              f"set decoder_modality to the predicted modality")
    return None

  def encoders_depth(self, depth: int) -> int:
    return self.encoder_depth or depth

  def layer_sequences(self, lengths: Mapping[str, int], depth: int) -> list[list[int]]:
    """Per layer index (the feed-forward layer `make_block` gives): the decoder's sequence
    of every token, and each encoder's sequence while the encoders have that layer."""
    encoded = [n for m, n in lengths.items() if m != self.decoder_modality]
    deep = self.encoders_depth(depth)
    return [([sum(lengths.values())] if i < depth else []) + (encoded if i < deep else [])
            for i in range(max(depth, deep))]

  def extra_flops(self, lengths: Mapping[str, int], width: int) -> float:
    """Per example, forward: each encoder's final norm (8 d) and connector (2 d^2 + d)."""
    encoded = sum(n for m, n in lengths.items() if m != self.decoder_modality)
    return encoded * (8.0 * width + 2.0 * width * width + width)

  def build(self, *, depth: int, width: int, make_block: Callable[[int], nnx.Module],
            remat: str, modalities, param_dtype, dtype, rngs: nnx.Rngs) -> nnx.Module:
    return LateDecoder(depth, self.encoders_depth(depth), width, make_block,
                       encoded=tuple(m for m in modalities if m != self.decoder_modality),
                       remat=remat, param_dtype=param_dtype, dtype=dtype, rngs=rngs)


def _bidirectional(info: TokenInfo) -> TokenInfo:
  return info.replace(causal=jnp.zeros_like(info.causal))


class LateDecoder(nnx.Module):

  def __init__(self, depth: int, encoder_depth: int, width: int,
               make_block: Callable[[int], nnx.Module], *, encoded: tuple[str, ...],
               remat: str, param_dtype, dtype, rngs: nnx.Rngs):
    kw = dict(param_dtype=param_dtype, dtype=dtype, rngs=rngs)
    self.apply_block = block_applier(remat)
    self.encoders = nnx.Dict({m: nnx.List([make_block(i) for i in range(encoder_depth)])
                              for m in encoded})
    self.encoder_lns = nnx.Dict({m: LayerNorm(width, **kw) for m in encoded})
    self.connectors = nnx.Dict({m: Linear(width, width, ("embed", None), **kw)
                                for m in encoded})
    self.decoder = EarlyFusion(depth, width, make_block, remat=remat, **kw)

  def _encode(self, m: str, x_bnd: jax.Array, info: TokenInfo) -> tuple[jax.Array, Aux]:
    aux = Aux()
    x_bnd = axes.constrain(x_bnd, ("batch", "length", "embed"))
    for i, block in enumerate(self.encoders[m]):
      x_bnd, block_aux = self.apply_block(block, x_bnd, info)
      aux = aux.merge(block_aux, prefix=f"encoder/{m}/layer{i}/")
    return self.connectors[m](self.encoder_lns[m](x_bnd)), aux

  def prefix(self, tokens: dict[str, jax.Array], infos: dict[str, TokenInfo]):
    """(tokens, infos, aux) as the decoder takes them: each encoded modality through its
    encoder and connector (bidirectional), first; the decoder modality's tokens after."""
    aux = Aux()
    prefix, prefix_infos = {}, {}
    for m in tokens:
      if m in self.encoders:
        prefix_infos[m] = _bidirectional(infos[m])
        prefix[m], enc_aux = self._encode(m, tokens[m], prefix_infos[m])
        aux = aux.merge(enc_aux)
    rest = [m for m in tokens if m not in self.encoders]
    order = list(prefix) + rest  # the encoders' outputs first: they are the decoder's prefix
    return ({m: prefix.get(m, tokens[m]) for m in order},
            {m: prefix_infos.get(m, infos[m]) for m in order}, aux)

  def causal_stack(self) -> EarlyFusion:
    """The stack whose blocks see the causal tokens: the decoder."""
    return self.decoder

  def __call__(self, tokens: dict[str, jax.Array],
               infos: dict[str, TokenInfo]) -> tuple[dict[str, jax.Array], Aux]:
    dec_tokens, dec_infos, aux = self.prefix(tokens, infos)
    out, dec_aux = self.decoder(dec_tokens, dec_infos)
    return {m: out[m] for m in tokens}, aux.merge(dec_aux, prefix="decoder/")
