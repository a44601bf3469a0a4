"""Moving tokens to their experts and back.

Capacity routing (token choice with a capacity, expert choice) fills a fixed [G,E,C] grid
of slots: a gather brings each slot its token, one batched matmul per weight runs every
expert, and a scatter-add returns the weighted outputs. Dropless routing has no fixed
grid: its tokens are sorted by expert and run through a grouped matmul, by one of two
kernels, chosen per backend by measurement (benchmarks/moe.py; NOTES-moe.md):
  blocked  sort, pad each expert's run of rows to a multiple of `block` rows, and run the
           blocks one after another, each against its expert's weights (XLA:CPU);
  ragged   jax.lax.ragged_dot (GPU/TPU; XLA:CPU pads it to a dense batched matmul, about
           E x the useful FLOPs).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mmjax.models import axes


class ExpertWeights(NamedTuple):
  wi: jax.Array  # [E, D, F]
  bi: jax.Array  # [E, F]
  wo: jax.Array  # [E, F, D]
  bo: jax.Array  # [E, D]


def default_kernel() -> str:
  return "blocked" if jax.default_backend() == "cpu" else "ragged"


def _with_zero_row(x_gsd):
  """Row S of each group is zeros: the token index of empty slots."""
  return jnp.pad(x_gsd, ((0, 0), (0, 1), (0, 0)))


# ---------------------------------------------------------------- capacity slots

def run_slots(x_gsd, slot_token_gec, slot_weight_gec, w: ExpertWeights,
              act: Callable) -> jax.Array:
  """Gather -> every expert on its slots -> weighted scatter-add back to the tokens.

  The slot grid is resharded from group-split (like the tokens) to expert-split (like the
  weights) and back: with experts on the `expert` mesh axis that is an all-to-all each way.
  """
  g, s, d = x_gsd.shape
  _, e, c = slot_token_gec.shape
  idx = slot_token_gec.reshape(g, e * c, 1)
  x_gecd = jnp.take_along_axis(_with_zero_row(x_gsd), idx, axis=1).reshape(g, e, c, d)
  x_gecd = axes.constrain(x_gecd, ("batch", None, None, None))
  x_gecd = axes.constrain(x_gecd, ("slot_batch", "slot_expert", None, None))
  h_gecf = act(jnp.einsum("gecd,edf->gecf", x_gecd, w.wi) + w.bi[None, :, None, :])
  h_gecf = axes.constrain(h_gecf, ("slot_batch", "slot_expert", None, "mlp"))
  out_gecd = jnp.einsum("gecf,efd->gecd", h_gecf, w.wo) + w.bo[None, :, None, :]
  out_gecd = axes.constrain(out_gecd, ("slot_batch", "slot_expert", None, None))
  out_gecd = axes.constrain(out_gecd, ("batch", None, None, None))
  out_gecd = out_gecd * slot_weight_gec[..., None].astype(out_gecd.dtype)

  def combine(out_ecd, token_ec):
    y = jnp.zeros((s + 1, d), out_ecd.dtype).at[token_ec.reshape(-1)].add(
        out_ecd.reshape(e * c, d))
    return y[:s]
  return jax.vmap(combine)(out_gecd, slot_token_gec)


# ---------------------------------------------------------------- dropless

class Sorted(NamedTuple):
  """One group's (token, choice) pairs sorted by expert; invalid pairs last."""
  token: jax.Array    # [A] token index of each sorted pair
  expert: jax.Array   # [A] its expert (E for invalid pairs)
  counts: jax.Array   # [E] valid pairs per expert
  inverse: jax.Array  # [A] position in sorted order of pair a = rank * S + token


def sort_by_expert(expert_sk, valid_s, num_experts: int) -> Sorted:
  s, k = expert_sk.shape
  key_a = jnp.where(jnp.tile(valid_s, k), expert_sk.T.reshape(-1), num_experts)
  order = jnp.argsort(key_a, stable=True)
  expert = key_a[order]
  counts = jnp.sum(expert[:, None] == jnp.arange(num_experts), axis=0).astype(jnp.int32)
  inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
  return Sorted(token=jnp.tile(jnp.arange(s), k)[order], expert=expert, counts=counts,
                inverse=inverse)


def _combine_sorted(out_ad, st: Sorted, weight_sk, row_a):
  """Sum over each token's choices of weight * its output row (row_a: pair -> row)."""
  s, k = weight_sk.shape
  out = jnp.pad(out_ad, ((0, 1), (0, 0)))  # the last row is zeros (invalid pairs)
  y_ksd = out[row_a].reshape(k, s, -1)
  return jnp.einsum("ksd,sk->sd", y_ksd, weight_sk.astype(y_ksd.dtype))


def dropless_ragged(x_sd, expert_sk, weight_sk, valid_s, w: ExpertWeights, act):
  e = w.wi.shape[0]
  st = sort_by_expert(expert_sk, valid_s, e)
  x_ad = jnp.pad(x_sd, ((0, 1), (0, 0)))[jnp.where(st.expert < e, st.token, x_sd.shape[0])]
  bias = jnp.minimum(st.expert, e - 1)
  h = act(jax.lax.ragged_dot(x_ad, w.wi, st.counts) + w.bi[bias])
  out = jax.lax.ragged_dot(h, w.wo, st.counts) + w.bo[bias]
  out = jnp.where((st.expert < e)[:, None], out, 0)
  return _combine_sorted(out, st, weight_sk, st.inverse)


def dropless_blocked(x_sd, expert_sk, weight_sk, valid_s, w: ExpertWeights, act, block: int):
  s, k = expert_sk.shape
  e = w.wi.shape[0]
  st = sort_by_expert(expert_sk, valid_s, e)
  a = s * k
  block = min(block, max(8, a))
  num_blocks = math.ceil((a + e * (block - 1)) / block)  # the most any routing can need
  rows = num_blocks * block
  padded = -(-st.counts // block) * block
  padded_end = jnp.cumsum(padded)
  padded_start = padded_end - padded
  start = jnp.cumsum(st.counts) - st.counts
  expert = jnp.minimum(st.expert, e - 1)
  row_sorted = jnp.where(st.expert < e,
                         padded_start[expert] + jnp.arange(a) - start[expert], rows)
  row_token = jnp.full((rows,), s, jnp.int32).at[row_sorted].set(st.token, mode="drop")
  x_nbd = jnp.pad(x_sd, ((0, 1), (0, 0)))[row_token].reshape(num_blocks, block, -1)
  block_expert = jnp.minimum(
      jnp.searchsorted(padded_end, jnp.arange(num_blocks) * block, side="right"), e - 1)
  live = jnp.arange(num_blocks) * block < padded_end[-1]

  def one_block(_, inputs):
    # Blocks past the last expert's rows hold only padding: skipped (unless vmapped, where
    # the cond becomes a select and they run; the bound keeps them under E blocks).
    x_bd, j, run = inputs
    def ffn(x_bd):
      h = act(x_bd @ w.wi[j] + w.bi[j])
      return h @ w.wo[j] + w.bo[j]
    return None, jax.lax.cond(run, ffn, jnp.zeros_like, x_bd)
  # A scan over blocks measured faster on XLA:CPU than gathering every block's weights for
  # one batched einsum (NOTES-moe.md).
  _, out_nbd = jax.lax.scan(one_block, None, (x_nbd, block_expert, live))
  return _combine_sorted(out_nbd.reshape(rows, -1), st, weight_sk, row_sorted[st.inverse])


def run_dropless(x_gsd, expert_gsk, weight_gsk, valid_gs, w: ExpertWeights, act, *,
                 kernel: str, block: int):
  if kernel == "ragged":
    # ragged_dot has no batching rule over groups (jax 0.10): the groups run as one.
    # Dropless math does not depend on the grouping.
    g, s, d = x_gsd.shape
    y = dropless_ragged(x_gsd.reshape(g * s, d), expert_gsk.reshape(g * s, -1),
                        weight_gsk.reshape(g * s, -1), valid_gs.reshape(g * s), w, act)
    return y.reshape(g, s, d)
  fn = lambda x, ex, wt, v: dropless_blocked(x, ex, wt, v, w, act, block)
  if x_gsd.shape[0] == 1:  # one group (one device): unvmapped, so empty blocks are skipped
    return fn(x_gsd[0], expert_gsk[0], weight_gsk[0], valid_gs[0])[None]
  return jax.vmap(fn)(x_gsd, expert_gsk, weight_gsk, valid_gs)
