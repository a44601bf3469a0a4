"""4M's token budgets: per example, a fixed number of tokens split across modalities by a
Dirichlet draw, chosen at random within each modality, with static shapes.

4M (Mizrahi et al., 2023, sec. 3.2) draws per example the modality shares p ~ Dir(alpha)
and takes about p_m * budget tokens of modality m, at random. Here the split is an
apportionment, so the budget is met exactly whatever the rounding and whatever tokens are
missing: the j-th token (in a random order) of modality m gets the key (j + o_m) / q_m, with
q_m = p_m * budget its quota and o_m ~ U(0, 1) a random offset, and the `budget` smallest
keys of the example win. A modality whose tokens run out (text padding, an absent modality,
a small modality with a large share) simply has no more keys, and the next smallest keys,
those of the other modalities in proportion to their quotas, fill its place. Without that,
modality m's count is floor(q_m - o_m) + 1, whose mean over o_m is q_m: the shares are
unbiased up to the few slots that the exact total moves (tests/test_multimodal_masked.py
measures them against the Dirichlet means).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def dirichlet_quotas(rng, alpha: Sequence[float], batch: int, budget: int) -> jax.Array:
  """float [B, M]: each example's Dirichlet(alpha) shares times the budget."""
  shares = jax.random.dirichlet(rng, jnp.asarray(alpha, jnp.float32), (batch,))
  return shares * budget


def _rank_in_row(rng, eligible_bn: jax.Array) -> jax.Array:
  """int32 [B, N]: each eligible token's place in a random order of the row's eligible
  tokens (0, 1, ...); the ineligible come after them."""
  scores = jnp.where(eligible_bn, jax.random.uniform(rng, eligible_bn.shape), 2.0)
  return jnp.argsort(jnp.argsort(scores, axis=1), axis=1).astype(jnp.int32)


def choose_tokens(rng, quotas_bm: jax.Array, eligible: Sequence[jax.Array],
                  budget: int) -> list[jax.Array]:
  """Per modality, bool [B, N_m]: the tokens chosen, exactly `budget` per example where the
  row has that many eligible tokens (else all of them), apportioned by the quotas (module
  docstring). eligible: per modality, bool [B, N_m], the tokens that may be chosen."""
  keys = []
  for m, elig in enumerate(eligible):
    r_rank, r_offset = jax.random.split(jax.random.fold_in(rng, m))
    rank = _rank_in_row(r_rank, elig).astype(jnp.float32)
    offset = jax.random.uniform(r_offset, (elig.shape[0], 1))
    quota = jnp.maximum(quotas_bm[:, m:m + 1], 1e-6)  # a zero share still fills spare room
    keys.append(jnp.where(elig, (rank + offset) / quota, jnp.inf))
  keys_bl = jnp.concatenate(keys, axis=1)
  _, idx = jax.lax.top_k(-keys_bl, budget)
  rows = jnp.arange(keys_bl.shape[0])[:, None]
  chosen = jnp.zeros(keys_bl.shape, bool).at[rows, idx].set(True)
  chosen = chosen & jnp.concatenate(list(eligible), axis=1)
  sizes = [e.shape[1] for e in eligible]
  return list(jnp.split(chosen, np.cumsum(sizes)[:-1].tolist(), axis=1))


def slots(chosen_bn: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The first k token indices of each row with the chosen ones among them, in increasing
  order (int32 [B, k]), and whether each is chosen (bool [B, k]). A row must have at most
  k chosen tokens (the budget bounds them), so none is left out."""
  n = chosen_bn.shape[1]
  # Chosen tokens first, then the rest by position: a strict order, so top_k is exact.
  score = chosen_bn.astype(jnp.float32) * n + (n - 1 - jnp.arange(n, dtype=jnp.float32))
  _, idx = jax.lax.top_k(score, k)
  idx = jnp.sort(idx, axis=1).astype(jnp.int32)
  return idx, jnp.take_along_axis(chosen_bn, idx, axis=1)
