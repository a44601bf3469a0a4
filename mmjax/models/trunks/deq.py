"""Deep-equilibrium fusion (DEQ; Bai et al. 2019, DEQFusion: Ni et al. 2023): the fused
tokens are the fixed point of one weight-tied fusion block, not the output of a stack.

With x the concatenated tokens of every modality present (the input injection) and
f_theta(z; x) = LN(Blocks(z + x)) -- the model's `depth` transformer blocks over all tokens
jointly, then the final norm -- the trunk returns f_theta(z*; x) at z* = f_theta(z*; x),
solved from z = 0 by Anderson acceleration to `tol` (relative residual, per example) within
`max_iterations` evaluations (deq_solver.py). Its parameters are exactly early fusion's at
the same depth (the same blocks and final norm), so `early` at equal depth is the stacked
baseline of equal parameters. The last application of f is an ordinary differentiable call
(its auxiliary outputs, e.g. MoE losses, are the trunk's); z* gets its gradient by implicit
differentiation, an adjoint fixed point solved to `backward_tol` within
`backward_max_iterations`. The final norm inside f keeps the iterates bounded.

Statistics (Aux, averaged over a step's passes): `deq/iterations` (forward evaluations of
f), `deq/residual` (the largest per-example relative residual) and `deq/not_converged`
(1 when that residual is above tol). The trainer warns when more than 1% of a log window's
steps have not converged (training/metric_log.py).

Optional Jacobian regulariser (Bai et al. 2021): weight * ||J_f(z*)||_F^2 / n estimated
with one Gaussian probe (Hutchinson), added as the auxiliary loss `deq_jacobian`. The probe
is drawn from a key folded with the tokens' bits: the trunk has no random stream of its own.

FLOP accounting (mmjax/perf/flops.py) is analytic, from shapes, before any step runs, so
it cannot know the iterations a step will take: it charges `flops_iterations` forward and
as many adjoint applications of f (default: max_iterations and backward_max_iterations, an
upper bound), see `layer_sequences`. The iterations actually run are the metric above.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.config.registry import check
from mmjax.models import logical_axes as axes
from mmjax.models.aux_outputs import Aux
from mmjax.models.token_info import TokenInfo
from mmjax.models.transformer import LayerNorm
from mmjax.models.trunks.deq_solver import SolverSettings, fixed_point


def _positive_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and v > 0


@dataclasses.dataclass(frozen=True)
class DeqFusionConfig:
  tol: float = 1e-3                 # relative residual ||f(z) - z|| / ||f(z)||
  max_iterations: int = 30          # forward evaluations of f at most
  backward_tol: float = 1e-4        # the adjoint fixed point's
  backward_max_iterations: int = 30
  memory: int = 5                   # Anderson history
  jacobian_weight: float = 0.0      # 0: no Jacobian regulariser
  flops_iterations: int = 0         # iterations charged by FLOP accounting; 0: the caps

  def __post_init__(self):
    for f in ("tol", "backward_tol"):
      v = getattr(self, f)
      check(isinstance(v, float) and math.isfinite(v) and v > 0, f,
            f"{v!r}: must be a positive tolerance (e.g. 1e-3)")
    for f in ("max_iterations", "backward_max_iterations"):
      v = getattr(self, f)
      check(_positive_int(v), f, f"{v!r}: must be a positive iteration cap (e.g. 30)")
    check(_positive_int(self.memory), "memory",
          f"{self.memory!r}: must be a positive Anderson history length (e.g. 5)")
    check(math.isfinite(self.jacobian_weight) and self.jacobian_weight >= 0, "jacobian_weight",
          f"{self.jacobian_weight!r}: must be >= 0 (0 turns the regulariser off)")
    check(isinstance(self.flops_iterations, int) and self.flops_iterations >= 0,
          "flops_iterations", f"{self.flops_iterations!r}: must be >= 0 (0: the caps)")

  def settings(self) -> tuple[SolverSettings, SolverSettings]:
    return (SolverSettings(self.tol, self.max_iterations, self.memory),
            SolverSettings(self.backward_tol, self.backward_max_iterations, self.memory))

  def check_model(self, depth: int, modalities) -> None:
    del depth, modalities  # any depth and modalities

  def applications(self) -> int:
    """Applications of f charged per training step, in units of a forward application
    counted 3x (flops.py's training rule): the forward solve (k_f forward-only
    evaluations), the differentiable last application (3), the adjoint solve (k_b vjps
    wrt z, ~1 each after one linearisation, 1) and the parameters' vjp (1)."""
    k_f = self.flops_iterations or self.max_iterations
    k_b = self.flops_iterations or self.backward_max_iterations
    return math.ceil((k_f + k_b + 5) / 3)

  def layer_sequences(self, lengths: Mapping[str, int], depth: int) -> list[list[int]]:
    """At every layer, the joint sequence once per charged application of f."""
    return [[sum(lengths.values())] * self.applications() for _ in range(depth)]

  def extra_flops(self, lengths: Mapping[str, int], width: int) -> float:
    del lengths, width  # the injection add and the solver's small systems are not counted
    return 0.0

  def causal_problem(self, depth: int, causal, modalities) -> str | None:
    """Sound as early fusion is: the blocks see the same mask at every iteration, and a
    fixed point of causal maps depends only on the past (a prefix-LM)."""
    del depth, causal, modalities
    return None

  def build(self, *, depth: int, width: int, make_block: Callable[[int], nnx.Module],
            remat: str, modalities, param_dtype, dtype, rngs: nnx.Rngs) -> nnx.Module:
    del modalities, remat  # the solve stores no iterate: nothing to rematerialise
    return DeqFusion(self, depth, width, make_block, param_dtype=param_dtype, dtype=dtype,
                     rngs=rngs)


def _apply(layers, z_bld, x_bld, info: TokenInfo) -> tuple[jax.Array, Aux]:
  """f(z; x) = LN(Blocks(z + x)), and the blocks' auxiliary outputs."""
  blocks, final_ln = layers
  h_bld = axes.constrain(z_bld + x_bld, ("batch", "length", "embed"))
  aux = Aux()
  for i, block in enumerate(blocks):
    h_bld, block_aux = block(h_bld, info)
    aux = aux.merge(block_aux, prefix=f"layer{i}/")
  return final_ln(h_bld), aux


class DeqFusion(nnx.Module):

  def __init__(self, config: DeqFusionConfig, depth: int, width: int,
               make_block: Callable[[int], nnx.Module], *, param_dtype, dtype, rngs: nnx.Rngs):
    self.config = config
    self.blocks = nnx.List([make_block(i) for i in range(depth)])
    self.final_ln = LayerNorm(width, param_dtype=param_dtype, dtype=dtype, rngs=rngs)

  def fixed_point(self, x_bld, info: TokenInfo):
    """(z*, iterations, residual [B]) of f(.; x), without the last differentiable call."""
    graphdef, params = nnx.split((self.blocks, self.final_ln))
    f = pure_layers(graphdef)
    weight = info.valid.astype(jnp.float32)[..., None]
    return fixed_point(f, *self.config.settings(), params, x_bld, info, weight)

  def __call__(self, tokens: dict[str, jax.Array],
               infos: dict[str, TokenInfo]) -> tuple[dict[str, jax.Array], Aux]:
    names = list(tokens)
    sizes = [tokens[m].shape[1] for m in names]
    x_bld = axes.constrain(jnp.concatenate([tokens[m] for m in names], axis=1),
                           ("batch", "length", "embed"))
    info = TokenInfo.concat([infos[m] for m in names])
    z_star, iterations, residual = self.fixed_point(x_bld, info)
    layers = (self.blocks, self.final_ln)
    out_bld, aux = _apply(layers, z_star, x_bld, info)
    worst = jnp.max(residual)
    aux = aux.merge(Aux(stats={
        "deq/iterations": iterations.astype(jnp.float32), "deq/residual": worst,
        "deq/not_converged": (worst > self.config.tol).astype(jnp.float32)}))
    if self.config.jacobian_weight > 0:
      aux = aux.merge(Aux(losses={"deq_jacobian": self.config.jacobian_weight
                                  * _jacobian_norm(layers, z_star, x_bld, info)}))
    out, start = {}, 0
    for m, n in zip(names, sizes):
      out[m] = out_bld[:, start:start + n]
      start += n
    return out, aux


def pure_layers(graphdef):
  """The pure f(params, z, x, info) -> z' of the layers split into (graphdef, params)."""
  def f(params, z_bld, x_bld, info):
    return _apply(nnx.merge(graphdef, params), z_bld, x_bld, info)[0]
  return f


def _jacobian_norm(layers, z_bld, x_bld, info: TokenInfo) -> jax.Array:
  """Hutchinson's ||J_f(z)||_F^2 / n with one Gaussian probe e: ||e^T J||^2 / n."""
  z_bld = jax.lax.stop_gradient(z_bld)
  bits = jax.lax.bitcast_convert_type(jnp.sum(x_bld.astype(jnp.float32)), jnp.int32)
  probe = jax.random.normal(jax.random.fold_in(jax.random.key(0), bits), z_bld.shape,
                            z_bld.dtype)
  _, vjp = jax.vjp(lambda z: _apply(layers, z, x_bld, info)[0], z_bld)
  (e_j,) = vjp(probe)
  return jnp.sum(jnp.square(e_j.astype(jnp.float32))) / e_j.size
