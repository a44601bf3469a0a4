"""Saving a run: a checkpoint is never written after a non-finite step, and every metrics
row up to a checkpoint is in metrics.jsonl before the checkpoint exists."""
from __future__ import annotations

import jax

from mmjax.checkpoint import write_errors
from mmjax.checkpoint.checkpointer import Checkpointer, CheckpointError
from mmjax.errors import MmjaxError


class NonFiniteError(MmjaxError, FloatingPointError):
  """A step produced a NaN/Inf loss or gradient under nan_policy='halt'."""


def save_failed(error: Exception, ckpt: Checkpointer) -> str:
  return write_errors.stopped(f"saving a checkpoint under {ckpt.directory}", error,
                              ckpt.latest_step())


def nonfinite_message(step: int, task: str, metrics: dict | None, last_good: int | None) -> str:
  values = f", loss={metrics['loss']}, grad_norm={metrics['grad_norm']}" if metrics else ""
  saved = (f"last good checkpoint: step {last_good}" if last_good is not None
           else "no checkpoint exists yet")
  return (f"non-finite loss or gradient at step {step} (task {task!r}{values}); no update was "
          f"applied from it on and no checkpoint was written after it ({saved}). Lower "
          f"optim.learning_rate, or set --config.nan_policy=skip to drop such steps.")


class Saver:
  """Writes the run's checkpoints (state and every task's input position) and stops the run
  at a non-finite step under nan_policy=halt."""

  def __init__(self, ckpt: Checkpointer, metric_log, iterators: dict, watchdog, clock,
               schedule, halt: bool, last_saved: int | None):
    self.ckpt, self.metric_log, self.iterators = ckpt, metric_log, iterators
    self.watchdog, self.clock, self.schedule, self.halt = watchdog, clock, schedule, halt
    self.last_saved = last_saved

  def check_finite(self, state) -> None:
    """Under nan_policy=halt, raises naming the first non-finite step (a scalar fetch)."""
    bad = int(jax.device_get(state.first_bad_step)) if self.halt else -1
    if bad < 0:
      return
    row = self.metric_log.row_of(bad)  # the bad step's values, if still in memory
    try:
      self.ckpt.wait()  # saves still in flight hold good states (each was checked before)
    except Exception:  # reported by the save's own error path; the NaN is the news
      pass
    raise NonFiniteError(nonfinite_message(bad, self.schedule.task_at(bad), row,
                                           self.ckpt.latest_step()))

  def save(self, step: int, state) -> None:
    self.check_finite(state)  # never write a checkpoint after a bad step
    self.metric_log.write_pending()
    with self.clock("checkpoint"), self.watchdog.paused():
      try:
        self.ckpt.save(step, state, {n: it.get_state() for n, it in self.iterators.items()})
      except Exception as e:  # includes the error of an earlier background save
        raise CheckpointError(save_failed(e, self.ckpt)) from e
    self.last_saved = step

  def finish(self) -> None:
    """Waits for the saves in flight; a failed background save raises here, never silently."""
    with self.clock("checkpoint"):
      try:
        self.ckpt.wait()
      except Exception as e:
        raise CheckpointError(save_failed(e, self.ckpt)) from e
