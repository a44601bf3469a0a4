"""The only module that knows about meshes.

Layers name their axes logically ("batch", "embed", ...); the RULES table maps each
logical name to mesh axes. State is created already sharded (jit with out_shardings),
and host-local batches become global arrays sharded over the data-parallel axes.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.models import axes as logical

MESH_AXES = ("data", "fsdp", "tensor", "expert")
DATA_AXES = ("data", "fsdp")  # the batch is split over both

# logical name -> mesh axis (or tuple of axes, or None = replicated).
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("expert", "expert"),
    ("kv", None),
    ("length", None),
)


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves one -1 entry to 'the rest'; checks the product equals the device count."""
  unknown = set(sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; valid: {MESH_AXES}")
  shape = {a: int(sizes.get(a, 1)) for a in MESH_AXES}
  free = [a for a, n in shape.items() if n == -1]
  if len(free) > 1:
    raise ValueError(f"config.mesh: only one axis may be -1, got {free}")
  if any(n == 0 or n < -1 for n in shape.values()):
    raise ValueError(f"config.mesh={shape}: sizes must be positive or -1")
  fixed = math.prod(n for n in shape.values() if n != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f"config.mesh={shape}: {num_devices} devices are not divisible by the "
                       f"fixed axes' product {fixed}")
    shape[free[0]] = num_devices // fixed
  if math.prod(shape.values()) != num_devices:
    raise ValueError(f"config.mesh={shape}: product {math.prod(shape.values())} != "
                     f"{num_devices} devices")
  return shape


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(sizes, len(devices))
  grid = np.asarray(devices).reshape([shape[a] for a in MESH_AXES])
  return Mesh(grid, MESH_AXES)


def spec_for(names: Sequence[str | None], rules=RULES) -> P:
  """Logical names -> PartitionSpec; a mesh axis is used at most once (first dim wins)."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name in names:
    target = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise ValueError(f"logical axis {name!r} has no sharding rule; rules cover {sorted(table)}")
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a not in used)
    used.update(axes)
    out.append(axes[0] if len(axes) == 1 else (axes or None))
  return P(*out)


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Drops mesh axes from dims they do not divide (e.g. a 259-token vocab over tensor=2):
  that dim is replicated instead of failing. Large replicated params are caught by
  the sufficiently-sharded check, not here."""
  out = []
  for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes_ = (entry,) if isinstance(entry, str) else tuple(entry or ())
    kept, size = [], 1
    for a in axes_:
      if dim % (size * mesh.shape[a]) == 0:
        kept.append(a)
        size *= mesh.shape[a]
    out.append(kept[0] if len(kept) == 1 else (tuple(kept) or None))
  return P(*out)


def state_shardings(abstract_state, mesh: Mesh, rules=RULES):
  """NamedShardings for every leaf of an (abstract) state pytree, from its logical axes."""
  names = logical.logical_axes_of(abstract_state)
  return jax.tree.map(
      lambda n, a: NamedSharding(mesh, fit_spec(spec_for(n, rules), np.shape(a), mesh)),
      names, abstract_state, is_leaf=lambda x: isinstance(x, logical.Names))


def activation_sharder(mesh: Mesh, rules=RULES):
  return lambda names: NamedSharding(mesh, spec_for(names, rules))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global jax.Arrays split over the data-parallel axes."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), v)
          for k, v in local_batch.items()}
