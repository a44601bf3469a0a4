"""MoE feed-forward layers against direct references, router statistics and losses, and
the MoE bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import objectives
from mmjax.experiment import build
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.config.recipe import ConfigError
from mmjax.models.ffn.mlp import Mlp
from mmjax.models.ffn.moe import MoeConfig, dispatch, moe_param_counts, router
from mmjax.models.ffn.moe.layer import MoeFfn, capacity
from mmjax.models.model import build_model
from mmjax.models.spec import ModelSpec
from mmjax.models.token_info import TokenInfo
from tests.conftest import TINY
from tests.test_models import MODALITIES
from tests.test_objectives import batch

B, L, D, F, E = 4, 12, 16, 24, 4


def make(**kw) -> MoeFfn:
  cfg = MoeConfig(**{"num_experts": E, "top_k": 2, "block_size": 8, **kw})
  return cfg.build(0, width=D, mlp_dim=F, num_modalities=2, param_dtype=jnp.float32,
                   dtype=jnp.float32, rngs=nnx.Rngs(0))


def inputs(seed=1, modality=None):
  x = jax.random.normal(jax.random.key(seed), (B, L, D))
  valid = jnp.ones((B, L), bool).at[1, 8:].set(False).at[3, :2].set(False)
  if modality is None:
    modality = jnp.zeros((B, L), jnp.int32).at[:, L // 2:].set(1)
  zeros = jnp.zeros((B, L), jnp.int32)
  return x, TokenInfo(valid=valid, modality=modality, causal=zeros.astype(bool), segment=zeros)


@nnx.jit
def call(m, x, info):
  return m(x, info)


def expert_out(m, e, x_d):
  h = jax.nn.gelu(x_d @ m.wi[...][e] + m.bi[...][e])
  return h @ m.wo[...][e] + m.bo[...][e]


def router_probs(m, x_bld, info):
  _, p = m.route(x_bld.reshape(B, L, D), info.modality)
  return np.asarray(p)


def token_loop(m, x, info, top_k, capacity_per_group=None, group=1):
  """Plain per-token loop: each valid token's top-k experts, weights renormalised;
  with a capacity, first choices of the whole group before second ones, in token order."""
  p = router_probs(m, x, info)
  y = np.zeros((B, L, D), np.float32)
  for g in range(B // group):
    rows = range(g * group, (g + 1) * group)
    tokens = [(b, t) for b in rows for t in range(L) if info.valid[b, t]]
    used = np.zeros(E, int)
    for rank in range(top_k):
      for b, t in tokens:
        order = np.argsort(-p[b, t], kind="stable")[:top_k]
        e = order[rank]
        w = p[b, t, e] / p[b, t, order].sum()
        if capacity_per_group is not None:
          if used[e] >= capacity_per_group:
            continue
          used[e] += 1
        y[b, t] += w * np.asarray(expert_out(m, e, x[b, t]))
  return y


@pytest.mark.parametrize("kernel", ["blocked", "ragged"])
def test_dropless_equals_a_per_token_loop_over_experts(kernel):
  m = make(routing="dropless", kernel=kernel)
  x, info = inputs()
  y, aux = call(m, x, info)
  np.testing.assert_allclose(y, token_loop(m, x, info, 2), rtol=1e-5, atol=1e-5)
  assert float(aux.stats["moe/drop_rate"]) == 0.0


def test_capacity_routing_with_a_huge_capacity_equals_dropless():
  x, info = inputs()
  y_dropless, _ = call(make(routing="dropless"), x, info)
  y_cap, aux = call(make(routing="token_choice", capacity_factor=100.0), x, info)
  np.testing.assert_allclose(y_cap, y_dropless, rtol=1e-5, atol=1e-5)
  assert float(aux.stats["moe/drop_rate"]) == 0.0


@pytest.mark.parametrize("kernel", ["blocked", "ragged"])
def test_dropless_gradients_equal_plain_autodiff_of_a_huge_capacity(kernel):
  # The blocked kernel, dispatch and combine have hand-written backward passes; the slot
  # grid of capacity routing is differentiated by JAX itself.
  x, info = inputs()

  def grads(m):
    graphdef, params = nnx.split(m, nnx.Param)

    def loss(p, x):
      y, aux = nnx.merge(graphdef, p)(x, info)
      return jnp.sum(jnp.sin(y)) + aux.total_loss()
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  got = grads(make(routing="dropless", kernel=kernel))
  want = grads(make(routing="token_choice", capacity_factor=100.0))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_dropless_groups_run_vmapped_equal_one_group():
  # With the batch split over devices each shard is one routing group, run under vmap:
  # the blocked kernel's per-expert loops then have a trip count per group.
  m = make(routing="dropless", kernel="blocked")
  x, info = inputs()
  _, probs = m.route(x.reshape(2, B * L // 2, D), info.modality.reshape(2, -1))
  expert, weight = router.token_choice(probs, info.valid.reshape(2, -1), 2, True)
  w = dispatch.ExpertWeights(m.wi[...], m.bi[...], m.wo[...], m.bo[...])

  def run(x_gsd, expert, weight, valid):
    y = dispatch.run_dropless(x_gsd, expert, weight, valid, w, jax.nn.gelu,
                              kernel="blocked", block=8)
    return jnp.sum(jnp.sin(y)), y
  args = (x.reshape(2, -1, D), expert, weight, info.valid.reshape(2, -1))
  (_, y2), g2 = jax.jit(jax.value_and_grad(run, argnums=(0, 2), has_aux=True))(*args)
  flat = [a.reshape(1, -1, *a.shape[2:]) for a in args]
  (_, y1), g1 = jax.jit(jax.value_and_grad(run, argnums=(0, 2), has_aux=True))(*flat)
  np.testing.assert_allclose(y2.reshape(y1.shape), y1, rtol=1e-5, atol=1e-5)
  for a, b in zip(g2, g1):
    np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-5, atol=1e-5)


def test_capacity_routing_drops_by_gshard_priority_and_reports_it():
  m = make(routing="token_choice", capacity_factor=0.5, group_size=2)
  x, info = inputs()
  y, aux = call(m, x, info)
  c = capacity(m.cfg, 2 * L)
  np.testing.assert_allclose(y, token_loop(m, x, info, 2, c, group=2), rtol=1e-5, atol=1e-5)
  n_valid = int(info.valid.sum())
  assert float(aux.stats["moe/drop_rate"]) >= 1 - (B // 2) * E * c / (2 * n_valid) - 1e-6
  assert float(aux.stats["moe/drop_rate"]) > 0.3


def test_expert_choice_equals_a_direct_top_c_reference():
  m = make(routing="expert_choice", top_k=1, capacity_factor=1.0)
  x, info = inputs()
  y, aux = call(m, x, info)
  p = router_probs(m, x, info)
  c = capacity(m.cfg, L)
  ref = np.zeros((B, L, D), np.float32)
  for b in range(B):
    valid = np.flatnonzero(info.valid[b])
    for e in range(E):
      for t in valid[np.argsort(-p[b, valid, e], kind="stable")[:c]]:
        ref[b, t] += p[b, t, e] * np.asarray(expert_out(m, e, x[b, t]))
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
  assert "moe_lb" not in aux.losses  # balanced by construction (IMP uses no aux loss)


@pytest.mark.parametrize("routing", ["dropless", "token_choice", "expert_choice"])
def test_gradients_reach_every_router(routing):
  m = make(routing=routing, modality_aware="routers")
  x, info = inputs()
  graphdef, params = nnx.split(m, nnx.Param)

  def loss(p):
    y, aux = nnx.merge(graphdef, p)(x, info)
    return jnp.sum(jnp.sin(y)) + aux.total_loss()
  g = jax.jit(jax.grad(loss))(params)["router"][...]
  assert g.shape[0] == 2  # one router per modality id
  assert all(float(jnp.abs(g[i]).max()) > 0 for i in range(2))


def test_per_modality_routers_use_each_tokens_modality_id():
  m = make(routing="dropless", modality_aware="routers")
  x, info = inputs()
  y, _ = call(m, x, info)
  m.router[...] = m.router[...].at[0].set(jax.random.normal(jax.random.key(9), (D, E)))
  y2, _ = call(m, x, info)
  changed = np.abs(np.asarray(y2 - y)).max(-1) > 1e-6
  is0 = np.asarray(info.modality == 0) & np.asarray(info.valid)
  assert changed[is0].all() and not changed[~is0].any()


def test_modality_expert_groups_keep_each_modality_to_its_experts():
  m = make(routing="dropless", modality_aware="experts", top_k=1)
  x, info = inputs(modality=jnp.ones((B, L), jnp.int32))  # every token is modality 1
  _, aux = call(m, x, info)
  load = np.asarray(aux.stats["moe/load"])
  assert load[:2].sum() == 0 and load[2:].sum() == pytest.approx(1.0)
  with pytest.raises(ConfigError, match="splits num_experts=4 into 2 equal groups"):
    make(modality_aware="experts", top_k=3)


def test_shared_expert_adds_an_always_on_mlp():
  x, info = inputs()
  m = make(routing="dropless", shared_expert=True)
  y, _ = call(m, x, info)
  assert isinstance(m.shared, Mlp)
  m_without = make(routing="dropless")
  y0, _ = call(m_without, x, info)  # same seed: same router and experts (shared built last)
  np.testing.assert_allclose(y - y0, m.shared(x)[0], rtol=1e-5, atol=1e-5)


def test_every_token_to_one_expert_shows_in_the_statistics():
  m = make(routing="dropless", top_k=1)
  x, info = inputs()
  x = jnp.abs(x)
  m.router[...] = jnp.zeros((1, D, E)).at[0, :, 3].set(10.0)
  _, aux = call(m, x, info)
  s = {k: np.asarray(v) for k, v in aux.stats.items()}
  np.testing.assert_allclose(s["moe/load"], [0, 0, 0, 1])
  assert s["moe/dead_experts"] == E - 1 and s["moe/router_entropy"] < 1e-3
  balanced = call(make(routing="dropless", top_k=1), inputs()[0], info)[1].stats
  assert float(balanced["moe/dead_experts"]) == 0
  assert float(balanced["moe/router_entropy"]) > 1.0
  assert float(aux.losses["moe_lb"]) > float(make(routing="dropless", top_k=1)(
      inputs()[0], info)[1].losses["moe_lb"])


def test_invalid_tokens_are_neither_routed_nor_counted():
  m = make(routing="dropless")
  x, info = inputs()
  y, aux = call(m, x, info)
  assert float(jnp.abs(y[~info.valid]).max()) == 0.0
  x2 = x.at[~info.valid].set(100.0)  # garbage in padding changes nothing
  y2, aux2 = call(m, x2, info)
  np.testing.assert_allclose(y2[info.valid], y[info.valid], rtol=1e-6, atol=1e-6)
  for k in aux.stats:
    np.testing.assert_allclose(aux2.stats[k], aux.stats[k], rtol=1e-6)


def test_moe_every_kth_block_and_aux_losses_added_once_per_forward_pass():
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  obj = objectives.make_objective("o", dict(type="contrastive", a="text", b="image",
                                            weight=0.5), kinds)
  spec = ModelSpec(modalities=MODALITIES, width=32, depth=4, num_heads=4, mlp_dim=64,
                   embed_dim=16, ffn=MoeConfig(every=2, num_experts=4, lb_loss_weight=0.3,
                                               z_loss_weight=0.2),
                   heads=objectives.heads_for((obj,)))
  model = build_model(spec, 0)
  kinds_of = [type(b.mlp).__name__ for b in model.trunk.blocks]
  assert kinds_of == ["Mlp", "MoeFfn", "Mlp", "MoeFfn"]
  total, metrics = nnx.jit(lambda m: objectives.total_loss((obj,), m, batch(), jax.random.key(0)))(model)
  aux = float(metrics["o/aux_loss/moe_lb"]) + float(metrics["o/aux_loss/moe_z"])
  assert aux > 0
  assert float(total) == pytest.approx(0.5 * float(metrics["o/loss"]) + aux, rel=1e-6)
  assert "o/layer1/moe/load/3" in metrics and "o/layer0/moe/load/0" not in metrics
  assert "o/layer3/moe/dead_experts" in metrics


def test_parameter_counts_match_the_built_layers():
  cfg = MoeConfig(every=2, num_experts=4, top_k=2, shared_expert=True,
                  modality_aware="routers", expert_dim=40)
  spec = ModelSpec(modalities=MODALITIES, width=32, depth=4, num_heads=4, mlp_dim=64, ffn=cfg)
  model = build_model(spec, 0)
  n = sum(x.size for b in model.trunk.blocks
          for x in jax.tree.leaves(nnx.state(b.mlp, nnx.Param)))
  counts = moe_param_counts(cfg, width=32, mlp_dim=64, depth=4,
                            num_modalities=len(MODALITIES))
  assert counts["total"] == n
  mlp = lambda f: 2 * 32 * f + f + 32
  assert counts["active"] == 2 * mlp(64) + 2 * (2 * mlp(40) + 32 * 4 + mlp(40))


@pytest.mark.parametrize("override, message", [
    ("model.ffn.top_k=9", "config.model.ffn.top_k=9: must be <= num_experts=8"),
    ("model.ffn.capacity_factor=0", "config.model.ffn.capacity_factor=0.0: must be > 0"),
    ("model.ffn.capacity_factor=-1.5", "capacity_factor=-1.5: must be > 0"),
    ("model.ffn.routing=switch", "config.model.ffn.routing='switch': valid: 'token_choice'"),
    ("model.ffn.num_experts=0", "num_experts=0: must be a positive integer"),
])
def test_bad_moe_settings_fail_at_config_time(override, message):
  with pytest.raises(ConfigError, match=message):
    build.model_spec(experiment.load(TINY, ["model.ffn.type=moe", override]))


def test_an_moe_key_while_moe_is_off_names_its_owner():
  with pytest.raises(ConfigError, match="belongs to feed-forward type 'moe', not 'mlp'"):
    build.model_spec(experiment.load(TINY, ["model.ffn.num_experts=8"]))


def test_group_size_must_divide_the_batch():
  m = make(routing="token_choice", group_size=3)
  with pytest.raises(ConfigError, match="batch of 4 examples does not split into routing"):
    m(*inputs())


def test_moe_recipe_variants_parse():
  import os
  from tests.conftest import ROOT
  recipe = os.path.join(ROOT, "configs", "mm_world_fusion.py")
  for fusion in ("early", "bottleneck", "late"):
    tiny = build.model_spec(experiment.load(f"{recipe}:tiny_{fusion}_moe")).ffn
    assert isinstance(tiny, MoeConfig) and tiny.num_experts == 4
    assert build.model_spec(experiment.load(f"{recipe}:{fusion}_moe")).ffn.every == 2
