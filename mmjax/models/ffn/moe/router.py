"""Routing: which expert sees which token, with what weight; router losses and statistics.

Everything here works on one routing group at a time ([S] tokens; callers vmap over
groups) or on whole batches of groups where noted, in float32. Invalid tokens (padding,
absent modalities) are never routed and never counted.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def probabilities(logits_gse: jax.Array, allowed_gse: jax.Array | None):
  """(logits, softmax) over the experts a token may use (all, or its modality's group);
  the experts it may not use get -inf logits and probability 0."""
  if allowed_gse is not None:
    logits_gse = jnp.where(allowed_gse, logits_gse, -jnp.inf)
  return logits_gse, jax.nn.softmax(logits_gse, axis=-1)


def token_choice(probs_gse, valid_gs, top_k: int, renormalize: bool):
  """Each token's top_k experts [G,S,K] and their weights (0 for invalid tokens); with
  `renormalize` (and top_k > 1) the weights sum to 1 over the top_k choices, before any
  capacity drop (MoeConfig.renormalize_order="before_drops")."""
  weight_gsk, expert_gsk = jax.lax.top_k(probs_gse, top_k)
  if renormalize and top_k > 1:
    weight_gsk = weight_gsk / jnp.sum(weight_gsk, axis=-1, keepdims=True)
  return expert_gsk, jnp.where(valid_gs[..., None], weight_gsk, 0.0)


def position_in_expert(expert_a, valid_a, num_experts: int):
  """Each valid pair's rank among the earlier pairs of its expert [A], and the valid pairs
  per expert [E]: a cumulative count, cheaper than a sort on XLA:CPU."""
  onehot_ae = ((expert_a[:, None] == jnp.arange(num_experts)) & valid_a[:, None]).astype(
      jnp.int32)
  position_a = jnp.sum((jnp.cumsum(onehot_ae, axis=0) - 1) * onehot_ae, axis=-1)
  return position_a, jnp.sum(onehot_ae, axis=0)


def capacity_slots(expert_sk, weight_sk, valid_s, num_experts: int, capacity: int,
                   renormalize_kept: bool = False):
  """Token choice with a capacity, for one group: the token index in each expert's slots
  [E,C] (S = empty), the slots' combine weights, and which choices were kept [S,K].

  Priority is GShard's: every token's first choice before any second choice, earlier
  tokens first within a rank. With `renormalize_kept` (and K > 1) each token's kept
  weights are divided by their sum after the drops (Mesh-TF, fairseq: a token whose second
  choice was dropped gets weight 1 on its first); else the weights are used as given.
  """
  s, k = expert_sk.shape
  expert_a = expert_sk.T.reshape(-1)          # a = rank * S + token
  weight_a = weight_sk.T.reshape(-1)
  token_a = jnp.tile(jnp.arange(s), k)
  valid_a = jnp.tile(valid_s, k)
  position_a, _ = position_in_expert(expert_a, valid_a, num_experts)
  kept_a = valid_a & (position_a < capacity)
  if renormalize_kept and k > 1:
    weight_a = renormalize_over(weight_sk, kept_a.reshape(k, s).T).T.reshape(-1)
  slot_a = jnp.where(kept_a, expert_a * capacity + position_a, num_experts * capacity)
  slot_token = jnp.full((num_experts * capacity,), s, jnp.int32).at[slot_a].set(
      token_a, mode="drop")
  slot_weight = jnp.zeros((num_experts * capacity,), weight_a.dtype).at[slot_a].set(
      weight_a, mode="drop")
  return (slot_token.reshape(num_experts, capacity),
          slot_weight.reshape(num_experts, capacity), kept_a.reshape(k, s).T)


def renormalize_over(weight_sk, kept_sk):
  """Weights divided by their sum over each token's kept choices; 0 where none is kept."""
  w = jnp.where(kept_sk, weight_sk, 0.0)
  total = jnp.sum(w, axis=-1, keepdims=True)
  return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


def expert_choice(probs_se, valid_s, capacity: int, allowed_se=None):
  """Each expert's top-`capacity` valid tokens of one group: token index per slot [E,C]
  (S = empty) and the slot's weight (the token's router probability for that expert).

  allowed_se: the (token, expert) pairs that may be chosen (modality_aware="experts");
  the others are never chosen, so an expert with fewer allowed tokens than slots leaves
  slots empty rather than filling them with weight-0 tokens that the statistics would
  count as processed.
  """
  s = probs_se.shape[0]
  ok_es = valid_s[None, :] if allowed_se is None else valid_s[None, :] & allowed_se.T
  scores_es = jnp.where(ok_es, probs_se.T, -1.0)  # probabilities are >= 0
  score_ec, token_ec = jax.lax.top_k(scores_es, capacity)
  chosen = score_ec >= 0
  return jnp.where(chosen, token_ec, s).astype(jnp.int32), jnp.where(chosen, score_ec, 0.0)


def losses_and_stats(logits_gse, probs_gse, valid_gs, routed_gse, processed_gse, *,
                     lb_loss_weight: float, z_loss_weight: float, balance: bool,
                     lb_convention: str = "choices"):
  """Router losses (already weighted) and statistics over the valid tokens of the batch.

  Load balancing: lb_loss_weight * E * sum_e f_e * P_e, with P_e the mean router
  probability of expert e and f_e its share of the routed choices ("choices": sums to 1)
  or of the tokens ("switch", flaxformer/MaxText: sums to top_k, so top_k x "choices").
  Both are over the valid tokens of the whole batch (MoeConfig.lb_loss_convention).

  routed: the router's choices per token and expert (0/1, before any capacity);
  processed: the token-expert pairs an expert actually ran.
  Statistics: load (share of processed pairs per expert), drop_rate (share of valid
  tokens' routed choices not processed; for expert choice: share of valid tokens no expert
  took), router_entropy (nats, mean over tokens), dead_experts (experts that ran nothing).
  """
  num_experts = logits_gse.shape[-1]
  v = valid_gs.astype(jnp.float32)[..., None]
  n_valid = jnp.maximum(jnp.sum(v), 1.0)
  routed_e = jnp.sum(routed_gse * v, axis=(0, 1))
  processed_e = jnp.sum(processed_gse * v, axis=(0, 1))
  losses = {}
  if z_loss_weight:
    # Masked-out experts' -inf logits are excluded by logsumexp over finite entries.
    z = jax.nn.logsumexp(jnp.where(jnp.isfinite(logits_gse), logits_gse, -jnp.inf), axis=-1)
    losses["moe_z"] = z_loss_weight * jnp.sum(jnp.square(z) * v[..., 0]) / n_valid
  if balance and lb_loss_weight:
    if lb_convention == "switch":  # share of the tokens that picked e
      fraction_e = routed_e / n_valid
    else:                          # share of all the tokens' choices
      fraction_e = routed_e / jnp.maximum(jnp.sum(routed_e), 1.0)
    mean_prob_e = jnp.sum(probs_gse * v, axis=(0, 1)) / n_valid
    losses["moe_lb"] = lb_loss_weight * num_experts * jnp.sum(fraction_e * mean_prob_e)
  plogp = jnp.where(probs_gse > 0, probs_gse * jnp.log(jnp.maximum(probs_gse, 1e-30)), 0.0)
  entropy = -jnp.sum(jnp.sum(plogp, axis=-1) * v[..., 0]) / n_valid
  if balance:  # token choice: routed choices that no expert ran
    drop = 1.0 - jnp.sum(processed_e) / jnp.maximum(jnp.sum(routed_e), 1.0)
  else:        # expert choice: valid tokens that no expert took
    taken = jnp.sum((jnp.sum(processed_gse, axis=-1) > 0) * v[..., 0])
    drop = 1.0 - taken / n_valid
  stats = {"moe/load": processed_e / jnp.maximum(jnp.sum(processed_e), 1.0),
           "moe/drop_rate": drop,
           "moe/router_entropy": entropy,
           "moe/dead_experts": jnp.sum(processed_e == 0).astype(jnp.float32)}
  return losses, stats
