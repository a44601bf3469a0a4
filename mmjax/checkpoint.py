"""Orbax checkpoints of everything a run needs to continue exactly where it stopped.

Layout: `<workdir>/checkpoints/<step>/{state,data}`: `state` holds params, optimizer
state and counters (arrays, written cooperatively by all processes); `data` holds every
task's input-iterator state (JSON). The step RNG is a function of (seed, step), so it
needs no storage.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmjax.errors import MmjaxError


class CheckpointError(MmjaxError, RuntimeError):
  """A checkpoint cannot be used as asked; the message says why and what to do."""


class Checkpointer:

  def __init__(self, directory: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        # Temporary folders left by a save that was killed mid-write are removed at start
        # so they never block later saves or restores.
        cleanup_tmp_directories=True)
    # Handlers named up front so metadata (shapes) can be read before any restore.
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict) -> None:
    """Starts a save (async by default). Errors of an earlier background save surface here."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)

  def wait(self) -> None:
    """Blocks until background saves finish; raises if one of them failed."""
    self._manager.wait_until_finished()

  def check_errors(self) -> None:
    """Raises the error of a finished background save, without waiting for running ones."""
    self._manager.check_for_errors()

  def saved_shapes(self, step: int) -> dict[str, tuple]:
    """{param path: shape} of the arrays stored under `state` at `step`."""
    meta = self._manager.item_metadata(step)["state"]
    if meta is None:
      raise CheckpointError(f"{self.directory}/{step} has no readable 'state' item; it is not an "
                            "mmjax checkpoint or it is damaged")
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(meta)[0]:
      shape = getattr(leaf, "shape", None)
      if shape is not None:
        flat[path_name(path)] = tuple(shape)
    return flat

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores onto the shardings carried by `abstract_state` (any mesh, any process count)."""
    check_compatible(self.saved_shapes(step), abstract_state, self.directory, step)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """Only the `params` subtree of `state` (no optimizer moments: ~1/3 of the bytes), onto
    the shardings carried by `abstract_params`. Orbax reads nothing else from disk."""
    saved = {k: v for k, v in self.saved_shapes(step).items() if k.startswith("params/")}
    check_compatible(saved, {"params": abstract_params}, self.directory, step)
    item = {"params": abstract_params}
    restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), item)
    path = os.path.join(self.directory, str(step), "state")
    with ocp.PyTreeCheckpointer() as reader:
      restored = reader.restore(path, args=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args, partial_restore=True))
    return restored["params"]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def path_name(path) -> str:
  """'params/trunk/blocks/0/mlp/wi' for a pytree path, however the tree spells its keys."""
  parts = []
  for k in path:
    part = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
    if part != "value":  # nnx Variables nest their array under .value
      parts.append(str(part))
  return "/".join(parts)


def check_compatible(saved: dict[str, tuple], abstract_state: Any, directory: str,
                     step: int) -> None:
  """Refuses a checkpoint whose arrays differ in name or shape from what the config builds."""
  want = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
    want[path_name(path)] = tuple(np.shape(leaf))
  missing = sorted(set(want) - set(saved))
  extra = sorted(set(saved) - set(want))
  differ = sorted(k for k in set(want) & set(saved) if want[k] != saved[k])
  if not (missing or extra or differ):
    return
  lines = [f"checkpoint {directory}/{step} does not match the model this config builds:"]
  for k in differ[:10]:
    lines.append(f"  {k}: checkpoint has shape {saved[k]}, config needs {want[k]}")
  for k in missing[:10]:
    lines.append(f"  {k}: needed by the config, absent from the checkpoint")
  for k in extra[:10]:
    lines.append(f"  {k}: in the checkpoint, not built by the config")
  lines.append("Use the config the run was started with (its config.json), or a new --workdir. "
               "Nothing was changed on disk.")
  raise CheckpointError("\n".join(lines))


def bytes_read() -> int | None:
  """Bytes read from files by TensorStore (Orbax's storage layer) in this process so far,
  or None where this TensorStore does not report it."""
  try:
    import tensorstore as ts
    metrics = ts.experimental_collect_matching_metrics("/tensorstore/kvstore/file/bytes_read")
    return int(sum(v["value"] for m in metrics for v in m["values"]))
  except Exception:  # an experimental API: absent or changed in other versions
    return None
