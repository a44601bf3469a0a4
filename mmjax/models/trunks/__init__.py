"""Fusion trunks, selected by `model.fusion.type`: how the tokens of several modalities meet.

A trunk's config builds it with `build(depth=, width=, make_block=, remat=, modalities=,
param_dtype=, dtype=, rngs=)`, where `make_block(layer)` returns one transformer block
(attention + that layer's feed-forward). The trunk is called as
`trunk(tokens, infos) -> (tokens, Aux)` with {modality: [B,N,D]} tokens and
{modality: TokenInfo}, in the model's modality order. To add one: a new file with a frozen
dataclass config (defaults + checks) and its module, and one line in TRUNKS.
"""
from mmjax.components import Registry
from mmjax.models.trunks.early import EarlyFusionConfig

TRUNKS = Registry("fusion", {"early": EarlyFusionConfig})
