"""Feed-forward layers, selected by `model.ffn.type`.

A feed-forward layer is built per block by its config's
`build(layer, width=, mlp_dim=, num_modalities=, ...)` and called as `ffn(x_bld, info) -> (y_bld, Aux)`, where `info` is the blocks' TokenInfo
(validity and modality id of every token). To add one: a new file with a frozen dataclass
config (defaults + checks) and its module, and one line in FFNS.
"""
from mmjax.config.registry import Registry
from mmjax.models.ffn.mlp import MlpConfig
from mmjax.models.ffn.moe import MoeConfig

FFNS = Registry("feed-forward", {"mlp": MlpConfig, "moe": MoeConfig})
