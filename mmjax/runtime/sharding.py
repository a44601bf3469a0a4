"""The only module that knows about meshes.

Layers name their axes logically ("batch", "embed", ...); the RULES table maps each
logical name to mesh axes. State is created already sharded (jit with out_shardings),
and host-local batches become global arrays sharded over the data-parallel axes.
"""
from __future__ import annotations

import functools
import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.models import logical_axes as logical

MESH_AXES = ("data", "fsdp", "tensor", "expert")
# The batch is split over all three: with experts on `expert`, the dense layers' work
# is split over it too instead of repeated on every expert shard.
DATA_AXES = ("data", "fsdp", "expert")

# logical name -> mesh axis (or tuple of axes, or None = replicated). Two name sets:
# activations ("batch", "length", "slot_*") and weights ("embed", "mlp", "expert", ...), so
# the batch can be split over `expert` without touching the experts' weights.
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", DATA_AXES),
    ("slot_batch", ("data", "fsdp")),  # MoE slot grid [group, expert, slot, d]: groups and
    ("slot_expert", "expert"),         # experts, split like the expert weights (all-to-all)
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("expert", "expert"),
    ("kv", None),
    ("length", None),
)


def _resolve(sizes: Mapping[str, int], total: int, what: str) -> dict[str, int]:
  """One axis may be -1 ('the rest'); the product must equal `total`."""
  shape = {a: int(sizes.get(a, 1)) for a in MESH_AXES}
  free = [a for a, n in shape.items() if n == -1]
  if len(free) > 1:
    raise ValueError(f"config.mesh ({what}): only one axis may be -1, got {free}")
  if any(n == 0 or n < -1 for n in shape.values()):
    raise ValueError(f"config.mesh ({what}) {shape}: sizes must be positive or -1")
  fixed = math.prod(n for n in shape.values() if n != -1)
  if free:
    if total % fixed:
      raise ValueError(f"config.mesh ({what}) {shape}: {total} devices are not divisible by "
                       f"the fixed axes' product {fixed}")
    shape[free[0]] = total // fixed
  if math.prod(shape.values()) != total:
    raise ValueError(f"config.mesh ({what}) {shape}: product {math.prod(shape.values())} != "
                     f"{total} devices")
  return shape


def mesh_shape(sizes: Mapping[str, int], num_devices: int,
               num_slices: int = 1) -> tuple[dict[str, int], dict[str, int]]:
  """(in-slice shape, cross-slice/DCN shape) from config keys `data, fsdp, tensor, expert`
  (within a slice or node) and `dcn_data, dcn_fsdp, ...` (across slices or nodes)."""
  valid = set(MESH_AXES) | {f"dcn_{a}" for a in MESH_AXES}
  unknown = set(sizes) - valid
  if unknown:
    raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; valid: {sorted(valid)}")
  if num_devices % num_slices:
    raise ValueError(f"{num_devices} devices do not split into {num_slices} slices")
  dcn = _resolve({a: sizes.get(f"dcn_{a}", 1) for a in MESH_AXES}, num_slices, "dcn_*")
  ici = _resolve({a: sizes.get(a, 1) for a in MESH_AXES}, num_devices // num_slices,
                 "per slice")
  return ici, dcn


def num_slices(devices: Sequence[jax.Device]) -> int:
  """Slices joined by the data-centre network: TPU multislice, else one per process when
  the config asks for DCN axes (GPU nodes), else 1."""
  idx = {getattr(d, "slice_index", 0) for d in devices}
  return len(idx)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh whose device order follows the physical topology (JAX's mesh utilities)."""
  devices = list(devices if devices is not None else jax.devices())
  wants_dcn = any(int(sizes.get(f"dcn_{a}", 1)) != 1 for a in MESH_AXES)
  tpu_slices = num_slices(devices)
  # Without TPU slices (GPU clusters) a process, i.e. a node, is the DCN granule.
  by_process = tpu_slices == 1
  slices = len({d.process_index for d in devices}) if by_process else tpu_slices
  ici, dcn = mesh_shape(sizes, len(devices), slices if wants_dcn else 1)
  ici_shape = [ici[a] for a in MESH_AXES]
  if wants_dcn:
    grid = mesh_utils.create_hybrid_device_mesh(
        ici_shape, [dcn[a] for a in MESH_AXES], devices, process_is_granule=by_process)
  elif len(devices) == 1:
    grid = np.asarray(devices).reshape(ici_shape)
  else:
    grid = mesh_utils.create_device_mesh(ici_shape, devices, allow_split_physical_axes=True)
  return Mesh(grid, MESH_AXES)


def rules_from_config(rules_cfg: Mapping | None):
  """The RULES table with a config's overrides ({logical name: mesh axis/axes/None})."""
  table = dict(RULES)
  for name, target in dict(rules_cfg or {}).items():
    if target in (None, "", "None"):
      table[name] = None
      continue
    axes_ = (target,) if isinstance(target, str) else tuple(target)
    bad = [a for a in axes_ if a not in MESH_AXES]
    if bad:
      raise ValueError(f"config.sharding.rules.{name}={target!r} names unknown mesh axes {bad}; "
                       f"valid: {MESH_AXES} or None")
    table[name] = axes_[0] if len(axes_) == 1 else axes_
  return tuple(table.items())


def check_sufficiently_sharded(abstract_state, shardings, mesh: Mesh, max_replicated: int):
  """Fails loudly when a large parameter would be replicated on an fsdp mesh.

  A parameter with more than `max_replicated` elements must be split over at least one
  mesh axis once the mesh has fsdp > 1; otherwise every device holds a full copy.
  """
  if mesh.shape["fsdp"] == 1:
    return
  bad = []
  for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(abstract_state)[0],
                              jax.tree.leaves(shardings)):
    size = math.prod(np.shape(leaf))
    if size > max_replicated and all(e is None for e in sh.spec):
      bad.append(f"{jax.tree_util.keystr(path)} {tuple(np.shape(leaf))}")
  if bad:
    raise ValueError(
        f"{len(bad)} parameter(s) above {max_replicated:,} elements would be replicated on every "
        f"device of mesh {dict(mesh.shape)}: {', '.join(bad[:5])}. Give their logical axes a "
        f"rule in config.sharding.rules, make the dims divisible by the mesh axes, or raise "
        f"config.sharding.max_replicated_params.")


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


def data_parallel_size(mesh: Mesh) -> int:
  """How many ways the batch is split: every batch size must be a multiple of it."""
  return math.prod(mesh.shape[a] for a in DATA_AXES)


def check_experts_divide(abstract_state, mesh: Mesh, rules=RULES) -> None:
  """An expert count the expert-parallel size does not divide is an error: `fit_spec`
  would otherwise quietly replicate every expert on every device."""
  target = dict(rules).get("expert")
  mesh_axes = (target,) if isinstance(target, str) else tuple(target or ())
  size = math.prod(mesh.shape[a] for a in mesh_axes)
  names = logical.logical_axes_of(abstract_state)
  for n, leaf in zip(jax.tree.leaves(names, is_leaf=lambda x: isinstance(x, logical.Names)),
                     jax.tree.leaves(abstract_state)):
    for name, dim in zip(n, np.shape(leaf)):
      if name == "expert" and dim % size:
        raise ValueError(
            f"model.ffn.num_experts={dim} is not divisible by the expert-parallel size {size} "
            f"(mesh {dict(mesh.shape)}): use a multiple of {size} experts or a smaller "
            f"mesh.expert")


@functools.lru_cache(maxsize=64)
def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  # Cached: one object per (mesh, rank) keeps device_put on JAX's fast path every step.
  return NamedSharding(mesh, P(DATA_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global jax.Arrays split over the data-parallel axes."""
  shardings = {k: batch_sharding(mesh, np.ndim(v)) for k, v in local_batch.items()}
  if jax.process_count() == 1:  # the local batch is the global one: one batched transfer,
    return jax.device_put(dict(local_batch), shardings)  # half the host time per step
  return {k: jax.make_array_from_process_local_data(shardings[k], v)
          for k, v in local_batch.items()}
