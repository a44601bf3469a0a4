"""Logical axis names for parameters and activations.

Layers name their dimensions ("batch", "length", "embed", ...) and never see a mesh.
`mmjax.runtime.sharding` maps the names to mesh axes; while it has rules active (a context
entered around tracing) `constrain` turns the names into sharding constraints, and
outside that context it is the identity, so models run unchanged on one device.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Sequence

import jax
from flax import nnx

# The active translator from logical names to a jax.sharding.Sharding, or None.
# A ContextVar (not a module global that code mutates) so nested/parallel traces
# each see their own rules.
_ACTIVATION_SHARDER: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "mmjax_activation_sharder", default=None)


@contextlib.contextmanager
def activation_sharding(sharder: Callable[[Sequence[str | None]], jax.sharding.Sharding]):
  """Within this context, `constrain(x, names)` applies `sharder(names)`."""
  token = _ACTIVATION_SHARDER.set(sharder)
  try:
    yield
  finally:
    _ACTIVATION_SHARDER.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Annotates an activation with logical axis names (no-op without rules)."""
  sharder = _ACTIVATION_SHARDER.get()
  if sharder is None:
    return x
  if len(names) != x.ndim:
    raise ValueError(f"logical names {tuple(names)} do not match rank-{x.ndim} activation")
  return jax.lax.with_sharding_constraint(x, sharder(tuple(names)))


def param(rngs: nnx.Rngs, init, shape: Sequence[int], names: Sequence[str | None],
          dtype) -> nnx.Param:
  """A parameter carrying its logical axis names as `logical_axes` metadata."""
  if len(names) != len(shape):
    raise ValueError(f"logical names {tuple(names)} do not match shape {tuple(shape)}")
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), logical_axes=tuple(names))


class Names(tuple):
  """A tuple of logical axis names that pytree utilities treat as a leaf (not a node)."""


jax.tree_util.register_static(Names)


def logical_axes_of(state) -> object:
  """Pytree (same structure as `state`) of each leaf's logical axis names.

  Works on any pytree holding nnx Variables (params, and optimizer moments built from
  them, which keep the metadata); plain arrays are replicated.
  """
  def names(v):
    if isinstance(v, nnx.Variable):
      axes = v.get_metadata().get("logical_axes")
      # Keep the Variable node (holding names instead of an array) so the result has
      # exactly the structure of `state` and can be zipped with it by jax.tree.map.
      return v.replace(value=Names(axes if axes is not None else (None,) * len(v.value.shape)))
    return Names((None,) * len(getattr(v, "shape", ())))  # plain arrays: replicated
  return jax.tree.map(names, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def num_shards(name: str) -> int:
  """How many pieces the active rules split logical axis `name` into (1 without rules).

  For layers whose work splits into independent pieces that should stay on one device
  (e.g. dropless MoE sorts tokens per piece): the count, never the mesh, is what they see.
  """
  sharder = _ACTIVATION_SHARDER.get()
  if sharder is None:
    return 1
  sh = sharder((name,))
  entry = sh.spec[0] if len(sh.spec) else None
  mesh_axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
  n = 1
  for a in mesh_axes:
    n *= sh.mesh.shape[a]
  return n


def map_batch_shards(fn: Callable, split_args: Sequence, whole_args: Sequence = ()):
  """fn(*split_args, *whole_args) run on each device's piece of `split_args` (arrays whose
  leading axis is the logical "batch") with `whole_args` whole on every device; returns the
  pieces' outputs (leading axis "batch"). For work that must stay on one device per batch
  shard (dropless MoE sorts its own tokens); without rules, fn runs once on everything."""
  sharder = _ACTIVATION_SHARDER.get()
  if sharder is None:
    return fn(*split_args, *whole_args)
  sh = sharder(("batch",))
  split = jax.sharding.PartitionSpec(sh.spec[0] if len(sh.spec) else None)
  # check_vma=False: fn's loops start from constants that vma typing would call unvarying;
  # the gradients of `whole_args` are still summed over the shards.
  return jax.shard_map(fn, mesh=sh.mesh, check_vma=False,
                       in_specs=(split,) * len(split_args) + (jax.sharding.PartitionSpec(),)
                       * len(whole_args), out_specs=split)(*split_args, *whole_args)
