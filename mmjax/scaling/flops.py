"""Analytic parameter and FLOP counts for the transformer trunk (feeds MFU and sweeps).

Counted per token, forward pass, multiply-add = 2 FLOPs:
  attention projections  2 * 4 * d^2          (q, k, v and output, each d x d)
  attention scores       2 * 2 * L * d        (Q K^T and A V over L keys: the part
                                               6N-style estimates leave out)
  MLP                    2 * 2 * d * m        (d -> m -> d)
Training costs 3x the forward pass (backward = 2x forward). Embeddings, norms, softmax
and heads are left out: they are small next to the matmuls at the widths we report.
"""
from __future__ import annotations


def trunk_params(width: int, depth: int, mlp_dim: int) -> int:
  """Matmul weights of the trunk (what the FLOP count multiplies)."""
  return depth * (4 * width * width + 2 * width * mlp_dim)


def forward_flops_per_token(width: int, depth: int, mlp_dim: int, seq_len: int) -> float:
  per_layer = 2 * 4 * width * width + 2 * 2 * seq_len * width + 2 * 2 * width * mlp_dim
  return float(depth * per_layer)


def train_flops(width: int, depth: int, mlp_dim: int, seq_len: int, batch: int) -> float:
  """FLOPs of one training step (forward + backward) over batch x seq_len tokens."""
  return 3.0 * batch * seq_len * forward_flops_per_token(width, depth, mlp_dim, seq_len)
