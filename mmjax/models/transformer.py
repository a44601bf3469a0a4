"""Pre-LN transformer blocks with logical axis names on every parameter."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.models import logical_axes as axes
from mmjax.models.aux_outputs import Aux
from mmjax.models.token_info import TokenInfo


class LayerNorm(nnx.Module):
  """LayerNorm computed in float32 whatever the compute dtype (stability in bf16)."""

  def __init__(self, width: int, *, param_dtype, dtype, rngs: nnx.Rngs):
    self.scale = axes.param(rngs, jax.nn.initializers.ones, (width,), ("embed",), param_dtype)
    self.bias = axes.param(rngs, jax.nn.initializers.zeros, (width,), ("embed",), param_dtype)
    self.dtype = dtype

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + 1e-6)
    return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class Attention(nnx.Module):
  """Multi-head self-attention through jax.nn.dot_product_attention (fused kernels on GPU)."""

  def __init__(self, width: int, num_heads: int, *, param_dtype, dtype, rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"model.width={width} is not divisible by model.num_heads={num_heads}")
    head_dim = width // num_heads
    self.qkv = axes.param(rngs, jax.nn.initializers.lecun_normal(in_axis=1, out_axis=(2, 3)),
                          (3, width, num_heads, head_dim), (None, "embed", "heads", "kv"),
                          param_dtype)
    self.out = axes.param(rngs, jax.nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
                          (num_heads, head_dim, width), ("heads", "kv", "embed"), param_dtype)
    self.dtype = dtype

  def project(self, x_bld: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(q, k, v), each [B,L,H,K]. Cached decoding (mmjax/models/decoding.py) keeps k and v."""
    # One matmul for q, k and v: a 3x wider matmul runs closer to peak than three.
    qkv_tblhk = jnp.einsum("bld,tdhk->tblhk", x_bld, self.qkv[...].astype(self.dtype))
    q_blhk, k_blhk, v_blhk = qkv_tblhk[0], qkv_tblhk[1], qkv_tblhk[2]
    return axes.constrain(q_blhk, ("batch", "length", "heads", "kv")), k_blhk, v_blhk

  def attend(self, q_bqhk, k_bkhk, v_bkhk, mask_b1qk: jax.Array | None) -> jax.Array:
    """Queries over keys and values (mask: bool [B,1,Q,K]) -> [B,Q,D]."""
    o_bqhk = jax.nn.dot_product_attention(q_bqhk, k_bkhk, v_bkhk, mask=mask_b1qk)
    return jnp.einsum("blhk,hkd->bld", o_bqhk, self.out[...].astype(self.dtype))

  def __call__(self, x_bld: jax.Array, mask_b1ll: jax.Array | None) -> jax.Array:
    return self.attend(*self.project(x_bld), mask_b1ll)


class Block(nnx.Module):
  """x + Attn(LN(x)); x + FFN(LN(x)). Returns the tokens and the FFN's auxiliary outputs."""

  def __init__(self, width: int, num_heads: int, ffn: nnx.Module, *, param_dtype, dtype,
               rngs: nnx.Rngs):
    kw = dict(param_dtype=param_dtype, dtype=dtype, rngs=rngs)
    self.ln1 = LayerNorm(width, **kw)
    self.attn = Attention(width, num_heads, **kw)
    self.ln2 = LayerNorm(width, **kw)
    self.mlp = ffn  # attribute name kept: checkpoints store this layer under "mlp"

  def __call__(self, x_bld, info: TokenInfo) -> tuple[jax.Array, Aux]:
    x_bld = x_bld + self.attn(self.ln1(x_bld), info.attention_mask())
    y_bld, aux = self.mlp(self.ln2(x_bld), info)
    return axes.constrain(x_bld + y_bld, ("batch", "length", "embed")), aux
