"""Classification heads that fuse the pooled vectors of several modalities themselves:
low-rank multimodal fusion (LMF) and its baseline, concatenation + MLP.

LMF (Liu et al., "Efficient Low-rank Multimodal Fusion with Modality-Specific Factors",
ACL 2018) is tensor fusion with a rank-r weight tensor. Tensor fusion scores the outer
product of every modality's vector with a 1 appended, Z = [z_1;1] (x) ... (x) [z_M;1],
with a weight tensor W of shape (d_1+1) x ... x (d_M+1) x K: h = W . Z + b. LMF writes
W = sum_r w_r F_1[r] (x) ... (x) F_M[r], with per-modality factors F_m[r] of shape
(d_m+1) x K, so that h never builds Z or W:

    h = sum_r w_r * prod_m ([z_m;1] F_m[r]) + b            (prod: elementwise over K)

Parameters: r * sum_m (d_m+1) * K + r + K, against prod_m (d_m+1) * K + K for W.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.models import logical_axes as axes
from mmjax.models.heads import Linear

KINDS = ("lmf", "concat_mlp")


@dataclasses.dataclass(frozen=True)
class FusedHead:
  """A classification head over the pooled vectors of `modalities` (in that order)."""
  kind: str                      # one of KINDS
  modalities: tuple[str, ...]
  rank: int = 4                  # lmf only


def lmf_param_counts(dims: Sequence[int], num_classes: int, rank: int) -> dict[str, int]:
  """{"lmf": parameters of LowRankFusion, "tensor": of full tensor fusion} for modality
  vectors of sizes `dims` (the module docstring's formulas)."""
  lmf = rank * sum(d + 1 for d in dims) * num_classes + rank + num_classes
  tensor = math.prod(d + 1 for d in dims) * num_classes + num_classes
  return {"lmf": lmf, "tensor": tensor}


def _with_one(z_bd: jax.Array) -> jax.Array:
  return jnp.concatenate([z_bd, jnp.ones(z_bd.shape[:-1] + (1,), z_bd.dtype)], axis=-1)


class LowRankFusion(nnx.Module):
  """h = sum_r w_r prod_m ([z_m;1] F_m[r]) + b over M modality vectors of width `width`."""

  def __init__(self, num_modalities: int, width: int, num_classes: int, rank: int, *,
               param_dtype, dtype, rngs: nnx.Rngs):
    # Each factor is a (width+1) -> K map per rank, initialised like a dense layer on its
    # input, so each modality's term starts with unit-order entries and so does their product.
    factor_init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-2,
                                                       out_axis=-1, batch_axis=(0,))
    self.factors = nnx.List([
        axes.param(rngs, factor_init, (rank, width + 1, num_classes), (None, None, None),
                   param_dtype) for _ in range(num_modalities)])
    self.rank_weights = axes.param(rngs, jax.nn.initializers.normal(rank ** -0.5), (rank,),
                                   (None,), param_dtype)
    self.bias = axes.param(rngs, jax.nn.initializers.zeros, (num_classes,), (None,),
                           param_dtype)
    self.dtype = dtype

  def __call__(self, z_list: Sequence[jax.Array]) -> jax.Array:
    product_brk = None
    for z_bd, factor in zip(z_list, self.factors, strict=True):
      term = jnp.einsum("bd,rdk->brk", _with_one(z_bd.astype(self.dtype)),
                        factor[...].astype(self.dtype))
      product_brk = term if product_brk is None else product_brk * term
    w = self.rank_weights[...].astype(self.dtype)
    return jnp.einsum("brk,r->bk", product_brk, w) + self.bias[...].astype(self.dtype)


class ConcatMlp(nnx.Module):
  """The baseline: [z_1, ..., z_M] -> Linear(M*width -> width) -> gelu -> Linear(-> K)."""

  def __init__(self, num_modalities: int, width: int, num_classes: int, *, param_dtype,
               dtype, rngs: nnx.Rngs):
    kw = dict(param_dtype=param_dtype, dtype=dtype, rngs=rngs)
    self.hidden = Linear(num_modalities * width, width, (None, "embed"), **kw)
    self.out = Linear(width, num_classes, ("embed", None), zero_init=True, **kw)

  def __call__(self, z_list: Sequence[jax.Array]) -> jax.Array:
    return self.out(jax.nn.gelu(self.hidden(jnp.concatenate(list(z_list), axis=-1))))


def build_fused_head(head: FusedHead, width: int, num_classes: int, **kw) -> nnx.Module:
  if head.kind == "lmf":
    return LowRankFusion(len(head.modalities), width, num_classes, head.rank, **kw)
  return ConcatMlp(len(head.modalities), width, num_classes, **kw)
