"""The blocked grouped expert FFN for XLA:CPU: each expert runs over its own blocks of rows.

Rows arrive sorted by expert, each expert's run padded to whole blocks of `block` rows
(dispatch.expert_rows). For each expert, a loop whose trip count is that expert's block
count applies the expert's weights block by block, so no FLOPs go to other experts' rows
or to blocks past the last expert's: the work is the useful rows plus under one block of
padding per expert.

The backward pass is written out (custom_vjp) because JAX's own transpose of such a loop
is slow on XLA:CPU (benchmarks/moe.py, NOTES-moe-speed.md): it would accumulate each
block's weight gradient into the full [E, D, F] tensor (E x the traffic) and scatter-add
the input gradient. Here each expert's weight gradient is a [D, F] loop carry and each
block's input gradient is written into its own rows.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp


def _loop_over_blocks(block: int, start, count, body, init):
  """fori_loop over an expert's blocks; body(row_offset, carry) -> carry."""
  return jax.lax.fori_loop(0, count, lambda i, c: body((start + i) * block, c), init)


def _rows(x, r, block):
  return jax.lax.dynamic_slice_in_dim(x, r, block, axis=0)


def _put(x, y, r):
  return jax.lax.dynamic_update_slice_in_dim(x, y.astype(x.dtype), r, axis=0)


def _forward(act, block, x_rd, wi, bi, wo, bo, block_start, block_count):
  """(out [R, D], pre-activations [R, F]); rows outside every expert's blocks stay 0."""
  r_rows, f = x_rd.shape[0], wi.shape[-1]
  out = jnp.zeros((r_rows, wo.shape[-1]), x_rd.dtype)
  pre = jnp.zeros((r_rows, f), x_rd.dtype)
  for e in range(wi.shape[0]):
    def body(r, carry, e=e):
      out, pre = carry
      p = _rows(x_rd, r, block) @ wi[e] + bi[e]
      return _put(out, act(p) @ wo[e] + bo[e], r), _put(pre, p, r)
    out, pre = _loop_over_blocks(block, block_start[e], block_count[e], body, (out, pre))
  return out, pre


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def grouped_ffn(act: Callable, block: int, x_rd, wi, bi, wo, bo, block_start, block_count):
  """act(x @ wi[e] + bi[e]) @ wo[e] + bo[e] for the rows of each expert e's blocks
  (blocks block_start[e] .. block_start[e] + block_count[e] - 1)."""
  return _forward(act, block, x_rd, wi, bi, wo, bo, block_start, block_count)[0]


def _grouped_ffn_fwd(act, block, x_rd, wi, bi, wo, bo, block_start, block_count):
  out, pre = _forward(act, block, x_rd, wi, bi, wo, bo, block_start, block_count)
  return out, (x_rd, wi, bi, wo, pre, block_start, block_count)


def _grouped_ffn_bwd(act, block, res, d_out):
  x_rd, wi, bi, wo, pre, block_start, block_count = res
  dx = jnp.zeros_like(x_rd)
  grads = []
  for e in range(wi.shape[0]):
    def body(r, carry, e=e):
      dx, dwi, dbi, dwo, dbo = carry
      dy = _rows(d_out, r, block)
      h, act_vjp = jax.vjp(act, _rows(pre, r, block))
      dp, = act_vjp(dy @ wo[e].T)
      x = _rows(x_rd, r, block)
      return (_put(dx, dp @ wi[e].T, r), dwi + x.T @ dp, dbi + dp.sum(0),
              dwo + h.T @ dy, dbo + dy.sum(0))
    init = (dx, jnp.zeros_like(wi[e]), jnp.zeros_like(bi[e]), jnp.zeros_like(wo[e]),
            jnp.zeros((wo.shape[-1],), wo.dtype))
    dx, *g = _loop_over_blocks(block, block_start[e], block_count[e], body, init)
    grads.append(g)
  dwi, dbi, dwo, dbo = (jnp.stack(g) for g in zip(*grads))
  return dx, dwi, dbi, dwo, dbo, None, None


grouped_ffn.defvjp(_grouped_ffn_fwd, _grouped_ffn_bwd)
