"""The dense feed-forward layer: d -> mlp_dim -> d with one activation."""
from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from mmjax.config.registry import check
from mmjax.models import logical_axes as axes
from mmjax.models.aux_outputs import Aux

ACTIVATIONS = {"gelu": jax.nn.gelu, "relu": jax.nn.relu, "silu": jax.nn.silu}


def mlp_flops_per_token(width: int, hidden: int) -> float:
  return 2.0 * 2 * width * hidden + 10.0 * hidden


@dataclasses.dataclass(frozen=True)
class MlpConfig:
  activation: str = "gelu"

  def __post_init__(self):
    check(self.activation in ACTIVATIONS, "activation",
          f"valid: {', '.join(map(repr, ACTIVATIONS))}")

  def flops_per_token(self, layer: int, *, width: int, mlp_dim: int) -> float:
    """Forward FLOPs per token (mmjax/perf/flops.py): two matmuls, then one FLOP per
    elementwise op (the activation ~9 per unit, its bias 1)."""
    del layer
    return mlp_flops_per_token(width, mlp_dim)

  def param_counts(self, *, width: int, mlp_dim: int, depth: int,
                   num_modalities: int = 1) -> dict[str, int]:
    """Feed-forward parameters of the trunk: all of them are used by every token."""
    del num_modalities
    n = depth * (2 * width * mlp_dim + mlp_dim + width)
    return {"total": n, "active": n}

  def build(self, layer: int, *, width: int, mlp_dim: int, num_modalities: int = 1,
            param_dtype, dtype, rngs: nnx.Rngs) -> nnx.Module:
    del layer, num_modalities  # the same layer at every depth, for every modality
    return Mlp(width, mlp_dim, activation=self.activation, param_dtype=param_dtype, dtype=dtype,
               rngs=rngs)


class Mlp(nnx.Module):

  def __init__(self, width: int, mlp_dim: int, *, activation: str = "gelu", param_dtype, dtype,
               rngs: nnx.Rngs):
    self.wi = axes.param(rngs, jax.nn.initializers.lecun_normal(), (width, mlp_dim),
                         ("embed", "mlp"), param_dtype)
    self.bi = axes.param(rngs, jax.nn.initializers.zeros, (mlp_dim,), ("mlp",), param_dtype)
    self.wo = axes.param(rngs, jax.nn.initializers.lecun_normal(), (mlp_dim, width),
                         ("mlp", "embed"), param_dtype)
    self.bo = axes.param(rngs, jax.nn.initializers.zeros, (width,), ("embed",), param_dtype)
    self.activation = activation
    self.dtype = dtype

  def __call__(self, x_bld, info=None):
    del info  # a dense layer treats every token alike
    h = x_bld @ self.wi[...].astype(self.dtype) + self.bi[...].astype(self.dtype)
    h = axes.constrain(ACTIVATIONS[self.activation](h), ("batch", "length", "mlp"))
    return h @ self.wo[...].astype(self.dtype) + self.bo[...].astype(self.dtype), Aux()
