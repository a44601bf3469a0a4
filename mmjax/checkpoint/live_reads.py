"""Reading the checkpoints of a live run (evaluate next to a trainer): a step the trainer
deletes while it is read (keep-N) is "deleted under the reader", not damage. It is neither
reported as damaged nor moved aside, and the reader retries with the newest step.

Orbax deletes a step file by file, so for a while its folder exists with files missing and
a restore fails as a damaged step would. The difference: the trainer deletes a step only
after a newer one is committed, and then the folder goes away. So a failed step with a
newer step beside it is watched until it vanishes (deleted) or stops shrinking (damaged).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from mmjax.checkpoint import faults
from mmjax.checkpoint.errors import CheckpointDamagedError, CheckpointError
from mmjax.checkpoint.verified_restore import damage_message, restore_verified

log = logging.getLogger("mmjax.checkpoint.checkpointer")

OPEN_ATTEMPTS = 5   # listings of the steps that may race a deletion
READ_ATTEMPTS = 5   # steps deleted in a row under one reader before it gives up
DELETION_STALL_S = 5.0  # a failed step whose folder stops shrinking this long is damaged
_POLL_S = 0.05


def _steps(ckpt) -> list[int] | None:
  """The committed steps, or None when a deletion raced the listing (list again)."""
  try:
    ckpt.reload()
    return ckpt.all_steps()
  except FileNotFoundError:
    return None


def _file_count(step_dir: str) -> int:
  return sum(len(names) for _, _, names in os.walk(step_dir))


def deleted_under_reader(ckpt, step: int) -> bool:
  """Whether `step`, which failed to restore, is being (or was) deleted by the trainer."""
  step_dir = os.path.join(ckpt.directory, str(step))
  steps = _steps(ckpt)
  if steps is not None and not any(s > step for s in steps):
    return not os.path.isdir(step_dir)  # the trainer never deletes its newest step
  count, last_change = _file_count(step_dir), time.monotonic()
  while os.path.isdir(step_dir):
    faults.hit("reader_waits_for_deletion", step=step, directory=ckpt.directory)
    now = _file_count(step_dir)
    if now < count:
      count, last_change = now, time.monotonic()
    elif time.monotonic() - last_change > DELETION_STALL_S:
      return False
    time.sleep(_POLL_S)
  return True


def _restore_or_classify(ckpt, chosen: int, abstract_state: Any, params_only: bool):
  """(state, data) of `chosen`, or None when it was deleted under us; raises if damaged."""
  try:
    faults.hit("before_restore", step=chosen, directory=ckpt.directory)
    return restore_verified(ckpt, chosen, abstract_state, params_only=params_only)
  except (CheckpointDamagedError, OSError) as e:
    if deleted_under_reader(ckpt, chosen):
      return None
    if isinstance(e, CheckpointDamagedError):
      raise
    raise CheckpointDamagedError(damage_message(
        ckpt.directory, chosen, [f"its files could not be read ({type(e).__name__}: {e})"])
    ) from None


def restore_for_reading(ckpt, step: int | None, abstract_state: Any, *,
                        params_only: bool = False) -> tuple[int, Any, dict]:
  for _ in range(READ_ATTEMPTS):
    steps = _steps(ckpt)
    if steps is None:
      continue
    if not steps:
      raise CheckpointError(f"no checkpoints under {ckpt.directory}; train first")
    chosen = steps[-1] if step is None else step
    if chosen not in steps:
      raise CheckpointError(f"no checkpoint for step {chosen} in {ckpt.directory}; "
                            f"available: {steps}")
    restored = _restore_or_classify(ckpt, chosen, abstract_state, params_only)
    if restored is not None:
      return chosen, restored[0], restored[1]
    if step is not None:
      newest = _steps(ckpt) or []
      raise CheckpointError(
          f"checkpoint step {chosen} in {ckpt.directory} was deleted while being read (the "
          f"trainer keeps only the newest checkpoint.keep steps); evaluate a newer step"
          + (f", e.g. --step {newest[-1]}" if newest else ""))
    log.warning("step %d was deleted by the trainer while being read; retrying with the "
                "newest step", chosen)
  raise CheckpointError(f"checkpoints under {ckpt.directory} kept being deleted while being "
                        f"read; try again, or evaluate with --step a step that is kept")
