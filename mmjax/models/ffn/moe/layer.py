"""The MoE feed-forward module: router -> dispatch -> experts -> combine, plus Aux.

It reads its settings from a MoeConfig (config.py), which builds it: this module does not
import config.py, so the two form no cycle.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.errors import ConfigError
from mmjax.models import logical_axes as axes
from mmjax.models.aux_outputs import Aux
from mmjax.models.ffn.mlp import ACTIVATIONS, Mlp
from mmjax.models.ffn.moe import dispatch, router


def capacity(cfg, tokens_per_group: int) -> int:
  """Slots per expert and group (cfg: a MoeConfig); never more than the group's tokens (an
  expert gets each token at most once)."""
  c = math.ceil(cfg.capacity_factor * cfg.top_k * tokens_per_group / cfg.num_experts)
  return max(1, min(tokens_per_group, c))


class MoeFfn(nnx.Module):
  """Experts in place of a block's Mlp; `cfg` is the MoeConfig that builds it."""

  def __init__(self, cfg, width: int, expert_dim: int, *, num_modalities: int,
               param_dtype, dtype, rngs: nnx.Rngs):
    e = cfg.num_experts
    routers = num_modalities if cfg.modality_aware == "routers" else 1
    self.router = axes.param(rngs, jax.nn.initializers.normal(0.02), (routers, width, e),
                             (None, "embed", None), param_dtype)
    init = jax.nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,))
    self.wi = axes.param(rngs, init, (e, width, expert_dim), ("expert", "embed", "mlp"),
                         param_dtype)
    self.bi = axes.param(rngs, jax.nn.initializers.zeros, (e, expert_dim), ("expert", "mlp"),
                         param_dtype)
    self.wo = axes.param(rngs, init, (e, expert_dim, width), ("expert", "mlp", "embed"),
                         param_dtype)
    self.bo = axes.param(rngs, jax.nn.initializers.zeros, (e, width), ("expert", "embed"),
                         param_dtype)
    self.shared = (Mlp(width, expert_dim, activation=cfg.activation, param_dtype=param_dtype,
                       dtype=dtype, rngs=rngs) if cfg.shared_expert else None)
    self.cfg = cfg
    self.num_modalities = num_modalities
    self.dtype = dtype

  def route(self, x_gsd, modality_gs):
    """Masked router logits and probabilities [G,S,E], float32."""
    cfg = self.cfg
    logits_gsme = jnp.einsum("gsd,mde->gsme", x_gsd.astype(jnp.float32),
                             self.router[...].astype(jnp.float32))
    if logits_gsme.shape[2] == 1:
      logits_gse = logits_gsme[:, :, 0]
    else:  # one router per modality: each token reads its own modality's row
      which = jnp.clip(modality_gs, 0, logits_gsme.shape[2] - 1)[..., None, None]
      logits_gse = jnp.take_along_axis(logits_gsme, which, axis=2)[:, :, 0]
    allowed = None
    if cfg.modality_aware == "experts":
      per_group = cfg.num_experts // self.num_modalities
      allowed = (jnp.arange(cfg.num_experts) // per_group) == modality_gs[..., None]
    return router.probabilities(logits_gse, allowed)

  def __call__(self, x_bld, info):
    cfg = self.cfg
    b, l, d = x_bld.shape
    e = cfg.num_experts
    if cfg.routing == "dropless":
      # Dropless math does not depend on the grouping: one group per batch shard keeps
      # each device's sort local and its blocks large.
      g = axes.num_shards("batch")
      g = g if b % g == 0 else 1
    else:
      if b % cfg.group_size:
        raise ConfigError(f"a batch of {b} examples does not split into routing groups of "
                          f"config.model.ffn.group_size={cfg.group_size} examples; use a "
                          f"divisor of every batch size")
      g = b // cfg.group_size
    s = b * l // g
    x_gsd = x_bld.reshape(g, s, d)
    valid_gs = info.valid.reshape(g, s)
    logits, probs = self.route(x_gsd, info.modality.reshape(g, s))
    dt = self.dtype
    w = dispatch.ExpertWeights(*(p[...].astype(dt) for p in (self.wi, self.bi, self.wo,
                                                               self.bo)))
    act = ACTIVATIONS[cfg.activation]
    if cfg.routing == "expert_choice":
      c = capacity(cfg, s)
      slot_token, slot_weight = jax.vmap(router.expert_choice, (0, 0, None, 0))(
          probs, valid_gs, c, jnp.isfinite(logits))  # -inf: outside the modality's group
      routed = processed = jax.vmap(_slot_counts, (0, None, None))(slot_token, s, e)
      y_gsd = dispatch.run_slots(x_gsd, slot_token, slot_weight, w, act)
    else:
      after = cfg.routing == "token_choice" and cfg.renormalize_order == "after_drops"
      expert_gsk, weight_gsk = router.token_choice(probs, valid_gs, cfg.top_k,
                                                   cfg.renormalize and not after)
      routed = jnp.sum(jax.nn.one_hot(expert_gsk, e), axis=-2)
      if cfg.routing == "token_choice":
        slot_token, slot_weight, kept_gsk = jax.vmap(
            router.capacity_slots, (0, 0, 0, None, None, None))(
                expert_gsk, weight_gsk, valid_gs, e, capacity(cfg, s), after and cfg.renormalize)
        processed = jnp.sum(jax.nn.one_hot(expert_gsk, e) * kept_gsk[..., None], axis=-2)
        y_gsd = dispatch.run_slots(x_gsd, slot_token, slot_weight, w, act)
      else:
        processed = routed
        kernel = dispatch.default_kernel() if cfg.kernel == "auto" else cfg.kernel

        def experts(x, expert, weight, valid, *w):
          return dispatch.run_dropless(x, expert, weight, valid, dispatch.ExpertWeights(*w),
                                       act, kernel=kernel, block=cfg.block_size)
        split = (x_gsd, expert_gsk, weight_gsk, valid_gs)
        if g > 1:  # one group per device, run there unvmapped (benchmarks/moe_dispatch.py)
          y_gsd = axes.map_batch_shards(experts, split, w)
        else:
          y_gsd = experts(*split, *w)
    losses, stats = router.losses_and_stats(
        logits, probs, valid_gs, routed, processed, lb_loss_weight=cfg.lb_loss_weight,
        z_loss_weight=cfg.z_loss_weight, balance=cfg.routing != "expert_choice",
        lb_convention=cfg.lb_loss_convention)
    y_bld = y_gsd.reshape(b, l, d).astype(dt)
    if self.shared is not None:
      y_bld = y_bld + self.shared(x_bld, info)[0]
    return axes.constrain(y_bld, ("batch", "length", "embed")), Aux(losses=losses, stats=stats)


def _slot_counts(slot_token_ec, s: int, e: int):
  """[S,E]: 1 where expert e took token s (the empty-slot index S falls off the end)."""
  expert_ec = jnp.broadcast_to(jnp.arange(e)[:, None], slot_token_ec.shape)
  return jnp.zeros((s, e), jnp.float32).at[slot_token_ec, expert_ec].add(1.0, mode="drop")
