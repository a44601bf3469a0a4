"""DEQ fusion trunk: the fixed point, its implicit gradient, memory, FLOPs, checks, warning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import experiment
from mmjax.errors import ConfigError
from mmjax.experiment import build
from mmjax.models.token_info import TokenInfo
from mmjax.models.trunks.deq import _apply, pure_layers
from mmjax.models.trunks.deq_solver import SolverSettings, anderson, fixed_point
from mmjax.perf import flops as flops_lib
from mmjax.training.metric_windows import StepRecord, unconverged_warning
from tests.conftest import TINY
from tests.test_fusion import model_with, token_inputs


def _joint(tokens, infos):
  x = jnp.concatenate(list(tokens.values()), axis=1)
  return x, TokenInfo.concat(list(infos.values()))


def test_the_solved_state_is_a_fixed_point_within_tol():
  trunk = model_with(dict(type="deq", tol=1e-4, max_iterations=60), depth=2).trunk
  tokens, infos = token_inputs(b=3)
  x, info = _joint(tokens, infos)
  z, iterations, residual = trunk.fixed_point(x, info)
  fz = np.asarray(_apply((trunk.blocks, trunk.final_ln), z, x, info)[0], np.float64)
  z = np.asarray(z, np.float64)
  rel = np.linalg.norm((fz - z).reshape(3, -1), axis=1) / np.linalg.norm(fz.reshape(3, -1), axis=1)
  assert int(iterations) < 60  # converged before the cap
  assert rel.max() <= 1e-4
  np.testing.assert_allclose(rel, residual, rtol=1e-3, atol=1e-7)
  _, aux = trunk(tokens, infos)
  assert float(aux.stats["deq/not_converged"]) == 0.0
  assert float(aux.stats["deq/residual"]) <= 1e-4
  assert not aux.losses  # no Jacobian regulariser unless asked


def test_a_capped_solve_is_counted_as_not_converged():
  trunk = model_with(dict(type="deq", tol=1e-9, max_iterations=2), depth=1).trunk
  _, aux = trunk(*token_inputs(b=2))
  assert float(aux.stats["deq/iterations"]) == 2.0
  assert float(aux.stats["deq/not_converged"]) == 1.0


def test_anderson_finds_the_fixed_point_of_an_affine_contraction():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(2, 6, 6))
  a *= 0.9 / np.abs(np.linalg.eigvals(a)).max(axis=1)[:, None, None]
  c = rng.normal(size=(2, 6))
  exact = np.stack([np.linalg.solve(np.eye(6) - a[i], c[i]) for i in range(2)])
  f = lambda z: jnp.einsum("bij,bj->bi", jnp.asarray(a, jnp.float32), z) + c
  z, k, res = anderson(f, jnp.zeros((2, 6)), SolverSettings(1e-6, 50))
  np.testing.assert_allclose(z, exact, rtol=1e-4, atol=1e-4)
  assert int(k) < 20  # plain iteration at rate 0.9 would need ~130 steps


def test_implicit_gradient_matches_differentiation_through_the_iterations():
  model = model_with(dict(type="deq"), depth=1)
  x, info = _joint(*token_inputs(b=2))
  graphdef, params = nnx.split((model.trunk.blocks, model.trunk.final_ln))
  f = pure_layers(graphdef)
  w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)
  tight = SolverSettings(1e-7, 200, memory=6)
  weight = jnp.ones(x.shape[:2] + (1,))

  def implicit(params, x):
    return jnp.sum(w * fixed_point(f, tight, tight, params, x, info, weight)[0])

  def unrolled(params, x):  # plain iteration, differentiated step by step
    z = jax.lax.fori_loop(0, 150, lambda _, z: f(params, z, x, info), jnp.zeros_like(x))
    return jnp.sum(w * z)

  got = jax.jit(jax.grad(implicit, argnums=(0, 1)))(params, x)
  want = jax.jit(jax.grad(unrolled, argnums=(0, 1)))(params, x)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def _step_temp_bytes(max_iterations: int) -> int:
  model = model_with(dict(type="deq", max_iterations=max_iterations,
                          backward_max_iterations=max_iterations), depth=1)
  tokens, infos = token_inputs(b=2)
  graphdef, state = nnx.split(model.trunk)

  def loss(state, tokens):
    out, _ = nnx.merge(graphdef, state)(tokens, infos)
    return sum(jnp.sum(v ** 2) for v in out.values())

  compiled = jax.jit(jax.grad(loss)).lower(state, tokens).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_compiled_memory_does_not_grow_with_the_iteration_cap():
  assert _step_temp_bytes(64) <= _step_temp_bytes(4)


def test_flop_accounting_charges_the_documented_applications_of_f():
  early = build.model_spec(experiment.load(TINY))
  for overrides, applications in ((["model.fusion.type=deq"], (30 + 30 + 5 + 2) // 3),
                                  (["model.fusion.type=deq", "model.fusion.flops_iterations=8"],
                                   7)):
    deq = build.model_spec(experiment.load(TINY, overrides))
    assert deq.fusion.applications() == applications
    tokens = {"video": 32, "audio": 16}
    _, blocks_early = flops_lib.trunk_pass_flops(early, tokens)
    _, blocks_deq = flops_lib.trunk_pass_flops(deq, tokens)
    final_norm = 48 * 8.0 * early.width
    assert blocks_deq - final_norm == pytest.approx(applications * (blocks_early - final_norm))


def test_parameters_equal_early_fusions_at_the_same_depth():
  count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert count(model_with(dict(type="deq"), depth=3)) == count(model_with(dict(type="early"),
                                                                           depth=3))


@pytest.mark.parametrize("key,value", [("tol", "0.0"), ("tol", "-1e-3"),
                                       ("max_iterations", "0"), ("backward_tol", "0.0"),
                                       ("backward_max_iterations", "-2")])
def test_non_positive_tolerance_or_cap_is_refused(key, value):
  with pytest.raises(ConfigError, match=rf"model\.fusion\.{key}.*positive"):
    experiment.load(TINY, ["model.fusion.type=deq", f"model.fusion.{key}={value}"])


def test_warns_when_over_one_percent_of_a_windows_steps_do_not_converge():
  def window(bad: int):
    return [StepRecord(s, "t", {"loss": 1.0, "obj/deq/not_converged": float(s < bad)})
            for s in range(200)]
  assert unconverged_warning(window(2), 200) is None        # 1%: not more
  message = unconverged_warning(window(3), 200)
  assert message.startswith("3 of the 200 steps to 200")
  assert unconverged_warning([StepRecord(0, "t", {"loss": 1.0})], 1) is None


def test_recipe_variants_differ_only_in_the_trunk():
  recipe = TINY.replace("mm_world.py:tiny", "mm_world_deq_variants.py")
  for tiny in ("", "tiny_"):
    deq = experiment.load(f"{recipe}:{tiny}deq").to_dict()
    stacked = experiment.load(f"{recipe}:{tiny}deq_stacked").to_dict()
    assert deq["model"].pop("fusion")["type"] == "deq"
    assert stacked["model"].pop("fusion")["type"] == "early"
    assert deq == stacked


def test_jacobian_regulariser_estimates_the_frobenius_norm_of_f_at_the_fixed_point():
  trunk = model_with(dict(type="deq", jacobian_weight=0.5), depth=1).trunk
  tokens, infos = token_inputs(b=1)
  x, info = _joint(tokens, infos)
  graphdef, state = nnx.split(trunk)

  @jax.jit
  def estimate_and_exact(state):
    trunk = nnx.merge(graphdef, state)
    _, aux = trunk(tokens, infos)
    z, _, _ = trunk.fixed_point(x, info)
    f = lambda z_flat: _apply((trunk.blocks, trunk.final_ln), z_flat.reshape(x.shape), x,
                              info)[0].reshape(-1)
    return aux.losses["deq_jacobian"], jax.jacfwd(f)(z.reshape(-1))  # exact J, [n, n]

  estimate, jacobian = estimate_and_exact(state)
  jacobian = np.asarray(jacobian, np.float64)
  exact = np.sum(jacobian ** 2) / jacobian.shape[0]
  # One Gaussian probe (Hutchinson): unbiased; at n = 256 its spread is ~10%.
  assert float(estimate) == pytest.approx(0.5 * exact, rel=0.3)
