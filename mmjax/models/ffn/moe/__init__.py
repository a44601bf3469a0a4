"""Mixture-of-Experts feed-forward layers (`model.ffn.type = "moe"`).

config.py   MoeConfig: the recipe's fields, their checks, and parameter counts
router.py   router probabilities, token-/expert-choice selection, aux losses and statistics
dispatch.py moving tokens to experts and back: capacity slots, and the dropless kernels
layer.py    the MoeFfn module a transformer block calls
"""
from mmjax.models.ffn.moe.config import MoeConfig, moe_param_counts

__all__ = ["MoeConfig", "moe_param_counts"]
