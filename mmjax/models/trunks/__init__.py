"""Fusion trunks, selected by `model.fusion.type`: how the tokens of several modalities meet.

A trunk's config builds it with `build(depth=, width=, make_block=, remat=, modalities=,
param_dtype=, dtype=, rngs=)`, where `make_block(layer)` returns one transformer block
(attention + that layer's feed-forward). The trunk is called as
`trunk(tokens, infos) -> (tokens, Aux)` with {modality: [B,N,D]} tokens and
{modality: TokenInfo}, in the model's modality order. A trunk config also checks itself
against the model (`check_model(depth, modalities)`) and lists the attention sequences one
forward pass runs (`layer_sequences(lengths, depth)`, and `extra_flops(lengths, width)`
for what is not a block, for FLOP accounting), and says why a pass with causal tokens would
not be a sound causal model on it (`causal_problem(depth, causal, modalities)`, None when
it is; checked where the experiment is parsed). To add one: a new file with a frozen
dataclass config (defaults + checks) and its module, and one line in TRUNKS.
"""
from mmjax.config.registry import Registry
from mmjax.models.trunks.bottleneck import BottleneckFusionConfig, LateFusionConfig
from mmjax.models.trunks.deq import DeqFusionConfig
from mmjax.models.trunks.early import EarlyFusionConfig
from mmjax.models.trunks.late_decoder import LateDecoderConfig

TRUNKS = Registry("fusion", {
    "early": EarlyFusionConfig, "bottleneck": BottleneckFusionConfig, "late": LateFusionConfig,
    "late_decoder": LateDecoderConfig, "deq": DeqFusionConfig})
