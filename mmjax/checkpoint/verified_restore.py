"""Restores that never trust a step blindly: checksums first, then the restore itself, then
the restored values. A damaged step is named, and the writer falls back to the newest good
step, moving the damaged one aside (never deleting it); readers refuse it with the same words.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp

from mmjax.checkpoint import checksums as checkpoint_verify
from mmjax.runtime import distributed
from mmjax.checkpoint.errors import CheckpointDamagedError, CheckpointError
from mmjax.checkpoint.tree_paths import path_name

log = logging.getLogger("mmjax.checkpoint.checkpointer")

DAMAGED_DIR = "checkpoints_damaged"  # beside checkpoints/, outside Orbax's view


def damage_message(directory: str, step: int, problems: list[str]) -> str:
  more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
  return f"checkpoint step {step} in {directory} is damaged: {'; '.join(problems[:5])}{more}"


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def nonfinite_leaves(state: Any) -> list[str]:
  """Paths of floating-point arrays holding a NaN or Inf (one jitted reduction per leaf)."""
  leaves = [(path_name(p), x) for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
  finite = jax.jit(lambda xs: [jnp.all(jnp.isfinite(x)) for x in xs])([x for _, x in leaves])
  return [name for (name, _), ok in zip(leaves, jax.device_get(finite)) if not bool(ok)]


def restore_verified(ckpt, step: int, abstract_state: Any, *,
                     params_only: bool = False) -> tuple[Any, dict]:
  """(state, data) of `step` after checking it; with params_only, (params, {}) — the files
  are still all checksummed, but only the parameters are restored onto the device."""
  step_dir = os.path.join(ckpt.directory, str(step))
  try:
    problems = checkpoint_verify.problems(step_dir, jax.process_index(), jax.process_count())
  except OSError as e:  # a file vanished mid-check
    problems = [f"its files could not be read ({_first_line(e)})"]
  if distributed.any_process(bool(problems)):
    raise CheckpointDamagedError(damage_message(
        ckpt.directory, step, problems or ["another process found damaged files; see its log"]))
  try:
    if params_only:
      state, data = ckpt.restore_params(step, abstract_state.params), {}
    else:
      state, data = ckpt.restore_unverified(step, abstract_state)
  except CheckpointDamagedError:
    raise
  except CheckpointError:
    raise  # a step from another config: not damage, and nothing to fall back to
  except Exception as e:  # tensorstore, JSON, OS errors: whatever a broken file raises
    raise CheckpointDamagedError(damage_message(
        ckpt.directory, step, [f"it does not restore ({_first_line(e)})"])) from None
  bad = nonfinite_leaves(state)
  if bad:
    raise CheckpointDamagedError(damage_message(
        ckpt.directory, step, [f"restored values are not finite (NaN/Inf) in {', '.join(bad[:3])}"
                               + (f" and {len(bad) - 3} more arrays" if len(bad) > 3 else "")]))
  return state, data


def _move_aside(ckpt, step: int) -> str:
  dest = os.path.join(os.path.dirname(ckpt.directory), DAMAGED_DIR,
                      f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.rename(os.path.join(ckpt.directory, str(step)), dest)
  distributed.any_process(False)  # a barrier: nobody lists steps before the move
  ckpt.reload()
  return dest


def restore_latest_good(ckpt, abstract_state: Any, *, restart_from_scratch: bool = False
                        ) -> tuple[int | None, Any, dict]:
  """The newest step that verifies; damaged newer ones are moved aside once a good one is
  found. When every step is damaged nothing is moved and CheckpointDamagedError names each
  one, unless restart_from_scratch: then they are all moved aside and (None, None, {})."""
  damaged: list[tuple[int, str]] = []
  for step in sorted(ckpt.all_steps(), reverse=True):
    try:
      state, data = restore_verified(ckpt, step, abstract_state)
    except CheckpointDamagedError as e:
      damaged.append((step, str(e)))
      continue
    _move_all_aside(ckpt, damaged, "falling back to the newest step before it")
    return step, state, data
  if damaged and not restart_from_scratch:
    raise CheckpointDamagedError(all_damaged_message(ckpt.directory, damaged))
  _move_all_aside(ckpt, damaged, "starting over from step 0 (--restart_from_scratch)")
  return None, None, {}


def _move_all_aside(ckpt, damaged: list[tuple[int, str]], then: str) -> None:
  for step, message in damaged:
    dest = _move_aside(ckpt, step)
    log.warning("%s. Moved it to %s (nothing was deleted); %s.", message, dest, then)


def all_damaged_message(directory: str, damaged: list[tuple[int, str]]) -> str:
  """Why a run with only damaged checkpoints does not start: each step, and what to do."""
  lines = [f"every checkpoint under {directory} is damaged, so this run cannot resume "
           f"(steps {', '.join(str(s) for s, _ in damaged)}); training did not start, and "
           "nothing was moved or deleted:"]
  lines += [f"  {message}" for _, message in damaged]
  lines.append("To keep the run's progress, restore a good copy of a step into "
               f"{directory}/ by hand (from a backup, or from "
               f"{os.path.join(os.path.dirname(directory), DAMAGED_DIR)}/ if an earlier run moved "
               "one there) and rerun the same command. To start over from step 0 instead, rerun "
               f"with --restart_from_scratch (the damaged steps are then moved to {DAMAGED_DIR}/, "
               "never deleted).")
  return "\n".join(lines)
