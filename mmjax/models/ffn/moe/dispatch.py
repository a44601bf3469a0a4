"""Moving tokens to their experts and back.

Capacity routing (token choice with a capacity, expert choice) fills a fixed [G,E,C] grid
of slots: a gather brings each slot its token, one batched matmul per weight runs every
expert, and a scatter-add returns the weighted outputs. Dropless routing has no fixed
grid: each (choice, token) pair gets a row in an expert-sorted layout (a cumulative count,
no sort), and a grouped matmul runs the rows, by one of two kernels, chosen per backend by
measurement (benchmarks/moe.py; the README's MoE section):
  blocked  each expert's run of rows padded to whole blocks of `block` rows; per expert, a
           loop over its own blocks (grouped.py, XLA:CPU)
  ragged   jax.lax.ragged_dot over unpadded runs (GPU/TPU; XLA:CPU pads it to a dense
           batched matmul, about E x the useful FLOPs).
Dispatch into rows and combine out of them are permutations, so their backward passes are
gathers by the inverse permutation, not scatter-adds.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mmjax.models import logical_axes as axes
from mmjax.models.ffn.moe import grouped, router


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

def gather_slots(x_gsd, slot_token_gec):
  """[G,E,C,D]: each slot's token (zeros for empty slots)."""
  g, _, d = x_gsd.shape
  _, e, c = slot_token_gec.shape
  idx = slot_token_gec.reshape(g, e * c, 1)
  return jnp.take_along_axis(_with_zero_row(x_gsd), idx, axis=1).reshape(g, e, c, d)


def combine_slots(out_gecd, slot_token_gec, tokens_per_group: int):
  """[G,S,D]: each token's sum of its (already weighted) slots' outputs."""
  _, e, c, d = out_gecd.shape

  def combine(out_ecd, token_ec):
    y = jnp.zeros((tokens_per_group + 1, d), out_ecd.dtype).at[token_ec.reshape(-1)].add(
        out_ecd.reshape(e * c, d))
    return y[:tokens_per_group]
  return jax.vmap(combine)(out_gecd, slot_token_gec)


def run_slots(x_gsd, slot_token_gec, slot_weight_gec, w: ExpertWeights,
              act: Callable) -> jax.Array:
  """Gather -> every expert on its slots -> weighted scatter-add back to the tokens.

  The slot grid is resharded from group-split (like the tokens) to expert-split (like the
  weights) and back: with experts on the `expert` mesh axis XLA lowers that to an
  all-to-all each way (as fast as an explicit one in shard_map: benchmarks/moe_dispatch.py).
  """
  x_gecd = gather_slots(x_gsd, slot_token_gec)
  x_gecd = axes.constrain(x_gecd, ("batch", None, None, None))
  x_gecd = axes.constrain(x_gecd, ("slot_batch", "slot_expert", None, None))
  h_gecf = act(jnp.einsum("gecd,edf->gecf", x_gecd, w.wi) + w.bi[None, :, None, :])
  h_gecf = axes.constrain(h_gecf, ("slot_batch", "slot_expert", None, "mlp"))
  out_gecd = jnp.einsum("gecf,efd->gecd", h_gecf, w.wo) + w.bo[None, :, None, :]
  out_gecd = axes.constrain(out_gecd, ("slot_batch", "slot_expert", None, None))
  out_gecd = axes.constrain(out_gecd, ("batch", None, None, None))
  out_gecd = out_gecd * slot_weight_gec[..., None].astype(out_gecd.dtype)
  return combine_slots(out_gecd, slot_token_gec, x_gsd.shape[1])


# ---------------------------------------------------------------- dropless

class Rows(NamedTuple):
  """One group's (choice, token) pairs laid out as rows sorted by expert, each expert's
  run starting at a multiple of `block` rows; pair a = choice * S + token."""
  row_a: jax.Array        # [A] row of each pair (R, past the end, for invalid pairs)
  pair_r: jax.Array       # [R] pair of each row (A for padding rows)
  counts: jax.Array       # [E] rows (valid pairs) per expert
  block_start: jax.Array  # [E] first block of each expert's run
  block_count: jax.Array  # [E] blocks in it


def num_rows(pairs: int, num_experts: int, block: int) -> int:
  """Rows of the padded layout: enough for any routing of `pairs` pairs."""
  return -(-(pairs + num_experts * (block - 1)) // block) * block


def expert_rows(expert_sk, valid_s, num_experts: int, block: int) -> Rows:
  """Each pair's row without a sort: its expert's first row plus its position among the
  expert's pairs (router.position_in_expert)."""
  s, k = expert_sk.shape
  a = s * k
  expert_a = expert_sk.T.reshape(-1)
  valid_a = jnp.tile(valid_s, k)
  position_a, counts = router.position_in_expert(expert_a, valid_a, num_experts)
  block_count = -(-counts // block)
  block_start = jnp.cumsum(block_count) - block_count
  r = num_rows(a, num_experts, block)
  row_a = jnp.where(valid_a, block_start[jnp.minimum(expert_a, num_experts - 1)] * block
                    + position_a, r)
  pair_r = jnp.full((r,), a, jnp.int32).at[row_a].set(jnp.arange(a, dtype=jnp.int32),
                                                      mode="drop")
  return Rows(row_a=row_a, pair_r=pair_r, counts=counts, block_start=block_start,
              block_count=block_count)


def _take_rows(x_nd, idx):
  """x_nd[idx] where idx == len(x_nd) (and beyond) reads a zero row."""
  return jnp.take(x_nd, idx, axis=0, mode="fill", fill_value=0)


# Dispatch and combine are permutations of rows (each token has K rows, each row at most one
# token), so each one's backward is the inverse permutation's gather. JAX's transpose of a
# gather is a scatter-add, which XLA:CPU runs row by row.

@jax.custom_vjp
def dispatch_rows(x_sd, rows: Rows):
  """[R, D]: row r holds its pair's token (zeros for padding rows)."""
  s = x_sd.shape[0]
  return _take_rows(x_sd, jnp.where(rows.pair_r < rows.row_a.shape[0], rows.pair_r % s, s))


def _dispatch_fwd(x_sd, rows):
  return dispatch_rows(x_sd, rows), (rows, x_sd.shape[0])


def _dispatch_bwd(res, d_rd):
  rows, s = res
  d_ksd = _take_rows(d_rd, rows.row_a).reshape(-1, s, d_rd.shape[-1])
  return jnp.sum(d_ksd, axis=0), None


dispatch_rows.defvjp(_dispatch_fwd, _dispatch_bwd)


@jax.custom_vjp
def combine_rows(out_rd, weight_sk, rows: Rows):
  """[S, D]: each token's sum over its choices of weight * its row's output."""
  s, k = weight_sk.shape
  y_ksd = _take_rows(out_rd, rows.row_a).reshape(k, s, -1)
  return jnp.einsum("ksd,sk->sd", y_ksd, weight_sk.astype(y_ksd.dtype))


def _combine_fwd(out_rd, weight_sk, rows):
  return combine_rows(out_rd, weight_sk, rows), (out_rd, weight_sk, rows)


def _combine_bwd(res, dy_sd):
  out_rd, weight_sk, rows = res
  s, k = weight_sk.shape
  y_ksd = _take_rows(out_rd, rows.row_a).reshape(k, s, -1)
  d_weight = jnp.einsum("ksd,sd->sk", y_ksd, dy_sd).astype(weight_sk.dtype)
  weight_r = _take_rows(weight_sk.T.reshape(-1), rows.pair_r).astype(dy_sd.dtype)
  d_out = _take_rows(dy_sd, jnp.where(rows.pair_r < s * k, rows.pair_r % s, s))
  return d_out * weight_r[:, None], d_weight, None


combine_rows.defvjp(_combine_fwd, _combine_bwd)


def dropless_group(x_sd, expert_sk, weight_sk, valid_s, w: ExpertWeights, act, *,
                   kernel: str, block: int):
  """One routing group through the experts, dropless."""
  e = w.wi.shape[0]
  if kernel == "ragged":  # rows without padding: ragged_dot takes each expert's row count
    rows = expert_rows(expert_sk, valid_s, e, 1)
    x_rd = dispatch_rows(x_sd, rows)
    expert_r = jnp.minimum(jnp.searchsorted(jnp.cumsum(rows.counts),
                                            jnp.arange(x_rd.shape[0]), side="right"), e - 1)
    h = act(jax.lax.ragged_dot(x_rd, w.wi, rows.counts) + w.bi[expert_r])
    out_rd = jax.lax.ragged_dot(h, w.wo, rows.counts) + w.bo[expert_r]
  else:
    rows = expert_rows(expert_sk, valid_s, e, block)
    out_rd = grouped.grouped_ffn(act, block, dispatch_rows(x_sd, rows), *w,
                                 rows.block_start, rows.block_count)
  return combine_rows(out_rd, weight_sk, rows)


def run_dropless(x_gsd, expert_gsk, weight_gsk, valid_gs, w: ExpertWeights, act, *,
                 kernel: str, block: int):
  fn = functools.partial(dropless_group, w=w, act=act, kernel=kernel,
                         block=min(block, max(8, expert_gsk[0].size)))
  if kernel == "ragged" or x_gsd.shape[0] == 1:
    # ragged_dot has no batching rule over groups (jax 0.10), and dropless math does not
    # depend on the grouping: the groups run as one. One group also runs unvmapped, so
    # each expert's loop runs its own trip count.
    g, s, d = x_gsd.shape
    y = fn(x_gsd.reshape(g * s, d), expert_gsk.reshape(g * s, -1),
           weight_gsk.reshape(g * s, -1), valid_gs.reshape(g * s))
    return y.reshape(g, s, d)
  return jax.vmap(fn)(x_gsd, expert_gsk, weight_gsk, valid_gs)
