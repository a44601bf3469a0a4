"""One compiled, donated train step per (task, batch signature), all compiled at start-up.

A multi-task (alternating-gradient) run visits every task within a few steps; compiling a
task's step when it first comes up would stall the loop once per task, in the middle of
the timed steady state. So the trainer reads one batch of each task up front (without
consuming it: the iterator's state is put back), lowers every task's step in the main
thread (tracing reads the activation-sharding context) and compiles the lowered programs
concurrently in a thread pool (XLA releases the GIL while it compiles). A batch whose
shapes differ from its task's first one still compiles, once, and is logged as a warning:
it is a recompile after warm-up.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from typing import Callable, Mapping

import jax

from mmjax.config.recipe import ConfigError
from mmjax.objectives.base import missing_inputs

log = logging.getLogger("mmjax.train")


def batch_signature(batch) -> tuple:
  # Computed for every step: dtype objects, not their names (str() costs ~10x the rest).
  return tuple(sorted((k, tuple(v.shape), v.dtype) for k, v in batch.items()))


def peek(iterator):
  """The iterator's next batch, with its state put back so training still reads it."""
  state = iterator.get_state()
  batch = next(iterator)
  iterator.set_state(state)
  return batch


@dataclasses.dataclass(frozen=True)
class CompileTime:
  lower_s: float    # tracing + lowering (main thread, one task at a time)
  compile_s: float  # XLA compile (concurrent with the other tasks' compiles at start-up)

  @property
  def total_s(self) -> float:
    return self.lower_s + self.compile_s


class CompiledSteps:
  """(task, batch) -> (compiled step, cost); `warm_up` compiles every task's step at once.

  lower: (task, batch) -> jax Lowered of the task's step at the batch's shapes.
  cost:  (task, batch) -> the StepCost the trainer accounts for each step of it.
  """

  def __init__(self, objectives: Mapping[str, tuple], lower: Callable, cost: Callable,
               threads: int = 0):
    self._objectives, self._lower, self._cost = objectives, lower, cost
    self._threads = threads
    self._steps: dict = {}  # (task, signature) -> (compiled, cost)
    self.times: dict[str, CompileTime] = {}  # task -> its (latest) compile's times
    self.count = 0  # compiles done (one per (task, signature) unless a shape changed)
    self.warm = False

  def _check_inputs(self, task: str, batch) -> None:
    for o in self._objectives[task]:
      problem = missing_inputs(o.batch_keys(), batch.keys(), o.name, task)
      if problem:
        raise ConfigError(problem)

  def _lowered(self, task: str, batch):
    self._check_inputs(task, batch)
    t0 = time.perf_counter()
    lowered = self._lower(task, batch)
    return lowered, time.perf_counter() - t0

  def _store(self, task: str, batch, compiled, lower_s: float, compile_s: float) -> None:
    key = (task, batch_signature(batch))
    cost = self._cost(task, batch)
    self._steps[key] = (compiled, cost)
    self.times[task] = CompileTime(lower_s, compile_s)
    self.count += 1
    log.info("compiled the step of task %r for %s in %.2fs (lower %.2fs + compile %.2fs): "
             "%.4g model FLOPs", task, {k: s for k, s, _ in key[1]}, lower_s + compile_s,
             lower_s, compile_s, cost.flops)

  def warm_up(self, batches: Mapping[str, dict]) -> None:
    """Compiles the step of every task for its batch: lowered here one by one, compiled in
    `threads` threads (0 = one per task; 1 = one after the other)."""
    lowered = {t: self._lowered(t, b) for t, b in batches.items()}

    def compile_one(task):
      t0 = time.perf_counter()
      return lowered[task][0].compile(), time.perf_counter() - t0

    workers = self._threads or len(batches)
    if workers <= 1 or len(batches) == 1:
      done = {t: compile_one(t) for t in batches}
    else:
      with concurrent.futures.ThreadPoolExecutor(workers, "mmjax-compile") as pool:
        futures = {t: pool.submit(compile_one, t) for t in batches}
        done = {t: f.result() for t, f in futures.items()}
    for task, batch in batches.items():
      compiled, compile_s = done[task]
      self._store(task, batch, compiled, lowered[task][1], compile_s)
    self.warm = True

  def lookup(self, task: str, batch):
    """(compiled step, StepCost) for the task at this batch's shapes, or None."""
    return self._steps.get((task, batch_signature(batch)))

  def get(self, task: str, batch):
    """(compiled step, StepCost) for the task at this batch's shapes, compiled if new."""
    found = self.lookup(task, batch)
    if found is not None:
      return found
    key = (task, batch_signature(batch))
    if self.warm:
      log.warning("task %r: a batch of new shapes %s after warm-up; compiling its step again",
                  task, {k: s for k, s, _ in key[1]})
    lowered, lower_s = self._lowered(task, batch)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    self._store(task, batch, compiled, lower_s, time.perf_counter() - t0)
    return self._steps[key]

  def summary(self) -> dict:
    """{task: {lower_s, compile_s, total_s}} (JSON) for accounting.json."""
    return {t: dict(lower_s=c.lower_s, compile_s=c.compile_s, total_s=c.total_s)
            for t, c in self.times.items()}
