"""Orbax checkpoints of everything a run needs to continue exactly where it stopped.

Layout: `<workdir>/checkpoints/<step>/{state,data}`: `state` holds params, optimizer
state and counters (arrays, written cooperatively by all processes); `data` holds every
task's input-iterator state (JSON). The step RNG is a function of (seed, step), so it
needs no storage.
"""
from __future__ import annotations

import collections
import glob
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmjax.checkpoint import checksums as checkpoint_verify
from mmjax.checkpoint import faults
from mmjax.checkpoint import live_reads
from mmjax.checkpoint import verified_restore
# Re-exported: callers import the errors from here.
from mmjax.checkpoint.errors import CheckpointDamagedError, CheckpointError  # noqa: F401
from mmjax.checkpoint.tree_paths import path_name

log = logging.getLogger(__name__)


class Checkpointer:
  """The writer's view (one per workdir, under its lock) or, with read_only=True, a reader's:
  a reader never removes, creates or renames anything, so it is safe next to a live trainer."""

  def __init__(self, directory: str, *, keep: int | None = None, async_save: bool = True,
               read_only: bool = False, restart_from_scratch: bool = False):
    """restart_from_scratch: when every step is damaged, restore_latest_good moves them all
    aside and starts over, instead of raising CheckpointDamagedError naming each."""
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self.restart_from_scratch = restart_from_scratch
    # Process 0's async saves whose post-finalization callback has not run yet, oldest
    # first: Orbax finalises one save at a time, in order, and the callback of step N may
    # run after save(N+1) was called, so it seals the oldest of these, not the newest.
    self._finalizing: collections.deque[int] = collections.deque()
    self._unsealed: list[int] = []  # steps whose checksums this process still owes
    async_save = async_save and not read_only
    self._async = async_save
    # Process 0 hashes its files inside Orbax's temporary folder, before the commit, so a
    # committed step always carries them (see mmjax/checkpoint/checksums.py).
    async_options = ocp.AsyncOptions(post_finalization_callback=self._seal_before_commit) \
        if async_save else None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save, async_options=async_options,
        # The writer (who holds the workdir lock, so no save of another process can be in
        # progress) removes temporary folders left by a save that was killed mid-write, so
        # they never block later saves or restores. Readers must not: it may be live.
        cleanup_tmp_directories=not read_only)
    # Handlers named up front so metadata (shapes) can be read before any restore.
    self._manager = self._open_manager(options)

  def _open_manager(self, options) -> ocp.CheckpointManager:
    # A reader's CheckpointManager lists the steps as it starts; a step the live trainer
    # deletes (keep-N) during that listing raises FileNotFoundError: list again.
    for attempt in range(1 if not self.read_only else live_reads.OPEN_ATTEMPTS):
      try:
        faults.hit("open_manager", attempt=attempt, directory=self.directory)
        return ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler()})
      except FileNotFoundError:
        if not self.read_only or attempt == live_reads.OPEN_ATTEMPTS - 1:
          raise
        log.info("a step of %s was deleted while listing the steps; listing again",
                 self.directory)
    raise AssertionError("unreachable")

  def latest_step(self) -> int | None:
    """The newest *finished* step, read from disk: a step whose save is still in flight
    (only its temporary folder exists) is not one, whatever Orbax's bookkeeping says."""
    try:
      steps = [int(n) for n in os.listdir(self.directory)
               if n.isdigit() and os.path.isdir(os.path.join(self.directory, n))]
    except OSError:
      return None
    return max(steps, default=None)

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict) -> None:
    """Starts a save (async by default). Errors of an earlier background save surface here."""
    self._seal_committed()
    if self._async and jax.process_index() == 0:
      self._finalizing.append(step)
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)
    except BaseException:
      if self._finalizing and self._finalizing[-1] == step:
        self._finalizing.pop()  # never started: no callback will come for it
      raise
    if jax.process_index() > 0 or not self._async:
      self._unsealed.append(step)
      if not self._async:
        self._seal_committed()

  def wait(self) -> None:
    """Blocks until background saves finish; raises if one of them failed."""
    self._manager.wait_until_finished()
    self._seal_committed()

  def _seal_before_commit(self) -> None:
    """Orbax's post-finalization callback (every process, background thread, before the
    rename); process 0 seals the step this callback belongs to, the oldest unfinalised one."""
    if jax.process_index() > 0 or not self._finalizing:
      return  # other processes add their checksums after the commit (_seal_committed)
    step = self._finalizing.popleft()
    faults.hit("seal_before_commit", step=step, directory=self.directory)
    tmp = [p for p in glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*"))
           if os.path.isdir(p)]
    if len(tmp) == 1:
      checkpoint_verify.write_manifest(tmp[0], 0, jax.process_count())
    else:  # not where Orbax was expected to write: hash after the commit instead
      self._unsealed.append(step)

  def _seal_committed(self) -> None:
    """Adds this process's checksums to steps it saved that are committed by now."""
    for step in list(self._unsealed):
      step_dir = os.path.join(self.directory, str(step))
      if os.path.isdir(step_dir):
        checkpoint_verify.write_manifest(step_dir, jax.process_index(), jax.process_count())
        self._unsealed.remove(step)

  def saved_shapes(self, step: int) -> dict[str, tuple]:
    """{param path: shape} of the arrays stored under `state` at `step`."""
    meta = self._manager.item_metadata(step)["state"]
    if meta is None:
      raise CheckpointDamagedError(f"{self.directory}/{step} has no readable 'state' item; it "
                                   "is not an mmjax checkpoint or it is damaged")
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(meta)[0]:
      shape = getattr(leaf, "shape", None)
      if shape is not None:
        flat[path_name(path)] = tuple(shape)
    return flat

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores onto the shardings carried by `abstract_state` (any mesh, any process count),
    after verifying the step's checksums; a damaged step raises CheckpointDamagedError."""
    return verified_restore.restore_verified(self, step, abstract_state)

  def restore_unverified(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
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
  def restore_latest_good(self, abstract_state: Any) -> tuple[int | None, Any, dict]:
    """(step, state, data) of the newest step that verifies; damaged newer steps are moved
    aside (never deleted) with a warning naming them. (None, None, {}) if there is no step.
    If every step is damaged: CheckpointDamagedError naming each, nothing moved; with
    restart_from_scratch, all are moved aside and (None, None, {}) is returned."""
    return verified_restore.restore_latest_good(
        self, abstract_state, restart_from_scratch=self.restart_from_scratch)

  def restore_for_reading(self, step: int | None, abstract_state: Any, *,
                          params_only: bool = False) -> tuple[int, Any, dict]:
    """For readers of a live workdir: `step` (default: the newest), retrying with the newest
    step when the trainer deletes the chosen one (keep-N) while it is being read.
    params_only: restore just `abstract_state.params` (returned in place of the state)."""
    return live_reads.restore_for_reading(self, step, abstract_state, params_only=params_only)

  def reload(self) -> None:
    self._manager.reload()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._seal_committed()
    self._manager.close()


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
