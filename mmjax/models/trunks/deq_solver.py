"""Fixed points z* = f(z*) for the DEQ trunk: Anderson acceleration forward, and the
implicit-function-theorem gradient backward (no iterate is stored for the backward pass).

Anderson (type II, as in Bai et al.'s DEQ code; written here from the equations): with the
last m iterates x_i and their images f_i = f(x_i), residuals g_i = f_i - x_i, the next
iterate is sum_i a_i f_i with the weights a minimising ||sum_i a_i g_i|| subject to
sum_i a_i = 1 (a small regularised KKT system per example). Slots of the history not yet
filled get a_i = 0 from the same system (their constraint entry is 0, their diagonal 1).

Convergence is per example: the relative residual ||f(z) - z|| / ||f(z)|| of each example,
over the tokens `weight` marks (padding is left out); the loop stops when the largest is
<= tol or after `max_iterations` evaluations of f. Not converging is not an error: the
caller reports it.

Backward (implicit differentiation): for a cotangent g of z*, the adjoint u solves
u = g + J_f(z*)^T u (its own fixed point, solved by the same Anderson loop), and the
parameters' and inputs' cotangents are the vjp of f at z* with u. Memory is that of one
application of f, whatever the number of iterations.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SolverSettings:
  tol: float
  max_iterations: int
  memory: int = 5          # Anderson history m
  regularization: float = 1e-4  # lambda in (G G^T + lambda I)


def _rel_residual(fz, z, weight):
  """Per example ||f(z) - z|| / ||f(z)|| over the weighted entries; [B]."""
  axes_ = tuple(range(1, fz.ndim))
  diff = jnp.sqrt(jnp.sum(jnp.square((fz - z) * weight), axis=axes_))
  size = jnp.sqrt(jnp.sum(jnp.square(fz * weight), axis=axes_))
  return diff / (size + 1e-8)


def _anderson_weights(x_bmn, f_bmn, filled_m, lam):
  """a [B,m]: argmin ||sum a_i g_i||^2 + lam ||a||^2 with sum a_i = 1 over filled slots."""
  b, m, _ = x_bmn.shape
  g_bmn = f_bmn - x_bmn
  h = jnp.einsum("bin,bjn->bij", g_bmn, g_bmn)
  scale = jnp.maximum(jnp.trace(h, axis1=1, axis2=2) / m, 1e-12)[:, None, None]
  h = h / scale + lam * jnp.eye(m) + jnp.diag(1.0 - filled_m)  # unfilled: a_i = 0
  v = jnp.broadcast_to(filled_m, (b, m))
  kkt = jnp.concatenate([
      jnp.concatenate([jnp.zeros((b, 1, 1)), v[:, None, :]], axis=2),
      jnp.concatenate([v[:, :, None], h], axis=2)], axis=1)
  rhs = jnp.zeros((b, m + 1)).at[:, 0].set(1.0)
  return jnp.linalg.solve(kkt, rhs[..., None])[:, 1:, 0]


def anderson(f, z0, settings: SolverSettings, weight=1.0):
  """(z, iterations, residual [B]): the last iterate, the evaluations of f made, and the
  per-example relative residual of z. Runs in float32."""
  shape, dtype = z0.shape, z0.dtype
  b, m = shape[0], settings.memory
  flat = lambda t: t.reshape(b, -1).astype(jnp.float32)
  f_flat = lambda z: flat(f(z.reshape(shape).astype(dtype)))
  weight = jnp.broadcast_to(jnp.asarray(weight, jnp.float32), shape).reshape(b, -1)
  z = flat(z0)
  fz = f_flat(z)
  xs = jnp.zeros((b, m, z.shape[1])).at[:, 0].set(z)
  fs = jnp.zeros_like(xs).at[:, 0].set(fz)
  init = (jnp.int32(1), xs, fs, z, _rel_residual(fz, z, weight))

  def not_done(state):
    k, _, _, _, res = state
    return (k < settings.max_iterations) & (jnp.max(res) > settings.tol)

  def step(state):
    k, xs, fs, _, _ = state
    filled = (jnp.arange(m) < k).astype(jnp.float32)
    a_bm = _anderson_weights(xs, fs, filled, settings.regularization)
    z_new = jnp.einsum("bm,bmn->bn", a_bm, fs)
    f_new = f_flat(z_new)
    slot = k % m
    xs = xs.at[:, slot].set(z_new)
    fs = fs.at[:, slot].set(f_new)
    return k + 1, xs, fs, z_new, _rel_residual(f_new, z_new, weight)

  k, _, _, z, res = jax.lax.while_loop(not_done, step, init)
  return z.reshape(shape).astype(dtype), k, res


def _zero_cotangent(tree):
  """Cotangents for inputs that are not differentiated (token facts: bool and int arrays)."""
  def zero(a):
    if jnp.issubdtype(a.dtype, jnp.inexact):
      return jnp.zeros_like(a)
    return np.zeros(a.shape, jax.dtypes.float0)
  return jax.tree.map(zero, tree)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def fixed_point(f, forward: SolverSettings, backward: SolverSettings, params, x, facts,
                weight):
  """(z*, iterations, residual [B]) of z = f(params, z, x, facts), from z = 0.

  f(params, z, x, facts) -> z' is pure. Gradients reach `params` and `x` by implicit
  differentiation; `facts` (any pytree, e.g. TokenInfo) and `weight` get none."""
  z, k, res = anderson(lambda z: f(params, z, x, facts), jnp.zeros_like(x), forward, weight)
  return z, k, res


def _fixed_point_fwd(f, forward, backward, params, x, facts, weight):
  z, k, res = fixed_point(f, forward, backward, params, x, facts, weight)
  return (z, k, res), (params, x, facts, weight, z)


def _fixed_point_bwd(f, forward, backward, saved, cotangents):
  params, x, facts, weight, z = saved
  g = cotangents[0]  # iterations and residuals are reported, not differentiated
  _, vjp_z = jax.vjp(lambda z_: f(params, z_, x, facts), z)
  u, _, _ = anderson(lambda u_: g + vjp_z(u_)[0], g, backward)
  _, vjp_px = jax.vjp(lambda p, x_: f(p, z, x_, facts), params, x)
  g_params, g_x = vjp_px(u)
  return g_params, g_x, _zero_cotangent(facts), jnp.zeros_like(weight)


fixed_point.defvjp(_fixed_point_fwd, _fixed_point_bwd)
