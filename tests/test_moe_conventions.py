"""MoE conventions against numpy ports of the published formulas: the load-balancing loss
(flaxformer's, top_k x mmjax's default), the order of top-k renormalisation and capacity
drops (lingvo legacy vs Mesh-TF/fairseq), and expert choice that never picks a token for an
expert outside its modality's group (the statistics count only what ran)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import experiment
from mmjax.experiment import build
from mmjax.config.recipe import ConfigError
from mmjax.models.ffn.moe import MoeConfig, dispatch, router
from mmjax.models.ffn.moe.layer import capacity
from tests.conftest import TINY

B, L, D, F, E = 4, 12, 16, 24, 4


class Info(NamedTuple):
  """What the MoE layer reads of the model's token info."""
  valid: jax.Array
  modality: jax.Array


def make(**kw):
  cfg = MoeConfig(**{"num_experts": E, "top_k": 2, "block_size": 8, "z_loss_weight": 0.0,
                     **kw})
  return cfg.build(0, width=D, mlp_dim=F, num_modalities=2, param_dtype=jnp.float32,
                   dtype=jnp.float32, rngs=nnx.Rngs(0))


def inputs(b=B, seed=1, padded=True, modality=None):
  x = jax.random.normal(jax.random.key(seed), (b, L, D))
  valid = jnp.ones((b, L), bool)
  if padded:
    valid = valid.at[1, 8:].set(False).at[3, :2].set(False)
  if modality is None:
    modality = jnp.zeros((b, L), jnp.int32).at[:, L // 2:].set(1)
  return x, Info(valid=valid, modality=modality)


@nnx.jit
def call(m, x, info):
  return m(x, info)


def probs_of(m, x, info):
  return np.asarray(m.route(x, info.modality)[1], np.float64)  # [B, L, E]


def expert_out(m, e, x_d):
  h = jax.nn.gelu(x_d @ m.wi[...][e] + m.bi[...][e])
  return np.asarray(h @ m.wo[...][e] + m.bo[...][e], np.float64)


# ------------------------------------------------------------- load-balancing loss

def flaxformer_lb_loss(router_probs, expert_indices):
  """flaxformer's _load_balancing_loss in numpy: probs [G,S,E], indices [G,S,K]."""
  num_experts = router_probs.shape[-1]
  mask = np.eye(num_experts)[expert_indices].max(axis=-2)        # [G,S,E] chose e
  tokens_per_group_and_expert = mask.mean(axis=-2)
  router_prob_per_group_and_expert = router_probs.mean(axis=-2)
  return np.mean(tokens_per_group_and_expert * router_prob_per_group_and_expert) \
      * num_experts ** 2


@pytest.mark.parametrize("routing, extra", [
    ("dropless", {}),
    # one routing group = flaxformer's group; the loss is on the choices before drops
    ("token_choice", {"group_size": B, "capacity_factor": 0.5}),
])
def test_switch_lb_loss_equals_flaxformer_and_top_k_times_the_default(routing, extra):
  x, info = inputs(padded=False)
  switch = make(routing=routing, lb_loss_weight=1.0, lb_loss_convention="switch", **extra)
  choices = make(routing=routing, lb_loss_weight=1.0, **extra)
  assert choices.cfg.lb_loss_convention == "choices"  # the default
  p = probs_of(switch, x, info).reshape(1, B * L, E)  # the batch as one group of tokens
  top2 = np.argsort(-p, axis=-1, kind="stable")[..., :2]
  want = flaxformer_lb_loss(p, top2)
  got_switch = float(call(switch, x, info)[1].losses["moe_lb"])
  got_choices = float(call(choices, x, info)[1].losses["moe_lb"])
  assert got_switch == pytest.approx(want, rel=1e-6)
  assert got_switch == pytest.approx(2 * got_choices, rel=1e-6)
  assert abs(want - 2.0) > 1e-3  # not balanced: the factor is not read off a constant


def test_the_conventions_agree_at_top_1_as_in_nmm():
  # NMM's setting: top-1, dropless, load-balancing weight 0.01.
  x, info = inputs(padded=False)
  nmm = dict(routing="dropless", top_k=1, lb_loss_weight=0.01)
  got = [float(call(make(lb_loss_convention=c, **nmm), x, info)[1].losses["moe_lb"])
         for c in ("choices", "switch")]
  p = probs_of(make(**nmm), x, info).reshape(1, B * L, E)
  want = 0.01 * flaxformer_lb_loss(p, np.argmax(p, axis=-1)[..., None])
  assert got[0] == pytest.approx(want, rel=1e-6)
  assert got[1] == pytest.approx(want, rel=1e-6)


def test_switch_lb_loss_skips_padding():
  # Padding is in neither f nor P: the loss equals flaxformer's over the valid tokens.
  x, info = inputs()
  m = make(routing="dropless", lb_loss_weight=1.0, lb_loss_convention="switch")
  p = probs_of(m, x, info)[np.asarray(info.valid)][None]
  want = flaxformer_lb_loss(p, np.argsort(-p, axis=-1, kind="stable")[..., :2])
  assert float(call(m, x, info)[1].losses["moe_lb"]) == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------ renormalisation and drops

def capacity_reference(m, x, info, order, group):
  """Token choice with a capacity in numpy: per group of `group` examples, first choices
  of all tokens (in order) before second ones; weights renormalised over the top-2
  before the drops, or over the kept choices after them."""
  p = probs_of(m, x, info)
  c = capacity(m.cfg, group * L)
  y = np.zeros((B, L, D))
  for g in range(B // group):
    tokens = [(b, t) for b in range(g * group, (g + 1) * group) for t in range(L)
              if info.valid[b, t]]
    top = {bt: np.argsort(-p[bt], kind="stable")[:2] for bt in tokens}
    used, kept = np.zeros(E, int), {bt: [] for bt in tokens}
    for rank in range(2):
      for bt in tokens:
        e = top[bt][rank]
        if used[e] < c:
          used[e] += 1
          kept[bt].append(e)
    for bt in tokens:
      denom = p[bt][top[bt]].sum() if order == "before_drops" else p[bt][kept[bt]].sum()
      for e in kept[bt]:
        y[bt] += p[bt][e] / denom * expert_out(m, e, np.asarray(x[bt]))
  return y


def test_renormalisation_before_and_after_drops_against_numpy():
  x, info = inputs()
  kw = dict(routing="token_choice", capacity_factor=0.5, group_size=2)
  ys = {}
  for order in ("before_drops", "after_drops"):
    m = make(renormalize_order=order, **kw)
    ys[order], aux = call(m, x, info)
    np.testing.assert_allclose(ys[order], capacity_reference(m, x, info, order, 2),
                               rtol=1e-5, atol=1e-5)
    assert float(aux.stats["moe/drop_rate"]) > 0.3
  assert make(**kw).cfg.renormalize_order == "before_drops"  # the default
  # The case tells them apart: tokens that lost their second choice differ.
  assert float(jnp.abs(ys["before_drops"] - ys["after_drops"]).max()) > 1e-2


def test_without_drops_the_orders_agree():
  x, info = inputs()
  y = [call(make(routing=r, renormalize_order=o, capacity_factor=100.0), x, info)[0]
       for r in ("token_choice", "dropless") for o in ("before_drops", "after_drops")]
  for other in y[1:]:
    np.testing.assert_allclose(other, y[0], rtol=1e-5, atol=1e-5)


def test_renormalize_kept_in_the_router():
  # One group, 2 tokens, capacity 1: token 1's first choice (expert 0) is dropped.
  expert = jnp.array([[0, 1], [0, 2]])
  weight = jnp.array([[0.6, 0.4], [0.3, 0.2]])
  valid = jnp.array([True, True])
  _, w_before, kept = router.capacity_slots(expert, weight, valid, 3, 1)
  _, w_after, _ = router.capacity_slots(expert, weight, valid, 3, 1, True)
  np.testing.assert_array_equal(kept, [[True, True], [False, True]])
  # slots [expert, capacity]: expert 0 <- token 0, expert 1 <- token 0, expert 2 <- token 1
  np.testing.assert_allclose(w_before, [[0.6], [0.4], [0.2]], rtol=1e-6)
  np.testing.assert_allclose(w_after, [[0.6], [0.4], [1.0]], rtol=1e-6)


# ----------------------------------------- expert choice within modality groups

def modality_case():
  """The issue's case: 4 experts, 2 modalities, 8 tokens all of modality 0, capacity 2.
  Experts 0 and 1 prefer tokens {0, 2} and {3, 4}; experts 2 and 3 may take no token."""
  m = make(routing="expert_choice", top_k=1, capacity_factor=1.0, modality_aware="experts")
  d = np.array([3, 0, 2, -3, -2, 0.5, -0.5, 0.1], np.float32)  # logit 0 - logit 1
  r = np.zeros((1, D, E), np.float32)
  r[0, :8, 0] = d
  m.router[...] = jnp.asarray(r)
  x = jnp.asarray(np.eye(8, D, dtype=np.float32))[None]       # token t reads row t
  info = Info(valid=jnp.ones((1, 8), bool), modality=jnp.zeros((1, 8), jnp.int32))
  return m, x, info


def test_expert_choice_never_fills_slots_outside_the_modality_group():
  m, x, info = modality_case()
  assert capacity(m.cfg, 8) == 2
  _, aux = call(m, x, info)
  s = {k: np.asarray(v) for k, v in aux.stats.items()}
  np.testing.assert_allclose(s["moe/load"], [0.5, 0.5, 0.0, 0.0], rtol=1e-6)
  assert s["moe/dead_experts"] == 2
  assert s["moe/drop_rate"] == pytest.approx(0.5)  # tokens 1, 5, 6, 7 ran nowhere
  # Before the fix, experts 2 and 3 filled their slots with tokens 0 and 1 (score 0):
  logits, probs = m.route(x, info.modality)
  old_slots, _ = router.expert_choice(probs[0], info.valid[0], 2)
  assert set(np.asarray(old_slots[2:]).ravel()) == {0, 1}
  slots, _ = router.expert_choice(probs[0], info.valid[0], 2, jnp.isfinite(logits[0]))
  np.testing.assert_array_equal(slots, [[0, 2], [3, 4], [8, 8], [8, 8]])  # 8 = empty


def test_modality_expert_choice_output_is_the_direct_reference_and_the_pre_fix_output():
  m = make(routing="expert_choice", top_k=1, capacity_factor=1.0, modality_aware="experts")
  # Example 2 is all modality 0: experts 2 and 3 have no token there.
  x, info = inputs(modality=jnp.zeros((B, L), jnp.int32).at[:, L // 2:].set(1).at[2].set(0))
  y, _ = call(m, x, info)
  p, c = probs_of(m, x, info), capacity(m.cfg, L)
  ref = np.zeros((B, L, D))
  for b in range(B):
    for e in range(E):
      ok = np.flatnonzero(np.asarray(info.valid[b]) & (np.asarray(info.modality[b]) == e // 2))
      for t in ok[np.argsort(-p[b, ok, e], kind="stable")[:c]]:
        ref[b, t] += p[b, t, e] * expert_out(m, e, np.asarray(x[b, t]))
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
  # The pre-fix routing (weight-0 tokens in the spare slots) gave the same output, exactly.
  _, probs = m.route(x, info.modality)
  slots, weights = jax.vmap(router.expert_choice, (0, 0, None))(probs, info.valid, c)
  w = dispatch.ExpertWeights(m.wi[...], m.bi[...], m.wo[...], m.bo[...])
  old = jax.jit(dispatch.run_slots, static_argnums=4)(x, slots, weights, w, jax.nn.gelu)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(old))


# ------------------------------------------------------------------- the config

def test_conventions_are_recipe_options_with_checked_values():
  ffn = build.model_spec(experiment.load(TINY, [
      "model.ffn.type=moe", "model.ffn.top_k=1", "model.ffn.routing=dropless",
      "model.ffn.lb_loss_weight=0.01", "model.ffn.lb_loss_convention=switch",
      "model.ffn.renormalize_order=after_drops"])).ffn
  assert (ffn.top_k, ffn.routing, ffn.lb_loss_weight) == (1, "dropless", 0.01)
  assert (ffn.lb_loss_convention, ffn.renormalize_order) == ("switch", "after_drops")
  with pytest.raises(ConfigError, match="lb_loss_convention='flaxformer': valid: 'choices'"):
    build.model_spec(experiment.load(TINY, ["model.ffn.type=moe",
                                            "model.ffn.lb_loss_convention=flaxformer"]))
  with pytest.raises(ConfigError, match="renormalize_order='after': valid: 'before_drops'"):
    build.model_spec(experiment.load(TINY, ["model.ffn.type=moe",
                                            "model.ffn.renormalize_order=after"]))
