"""IMP's interval schedule: task t is due every `tasks.<t>.interval` steps.

Task t is *due* at step s when s % interval_t == 0. Step s runs the first task in
`schedule.order` that is due at s; the other tasks due at s skip that turn (they are not
deferred, so the sequence needs no state). The default order is the tasks by decreasing
interval (the rarest first), ties in config order. So intervals {main: 1, mlm: 4} run
mlm, main, main, main, mlm, ...: a task with interval 1 fills the steps no other task is
due at.

The sequence repeats with the least common multiple of the intervals; it is computed once
over that period, and a config whose period has a step with no task due, or a task that
never runs (all its turns taken by earlier tasks in the order), is refused before anything
is built. `task_at(step)` is a lookup: a pure function of (config, step).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from mmjax.config.registry import check
from mmjax.errors import ConfigError

MAX_PERIOD = 10_000_000  # steps; a longer common period is refused (its table is the sequence)


@dataclasses.dataclass(frozen=True)
class IntervalConfig:
  order: tuple[str, ...] = ()  # priority among tasks due at one step; () = rarest first

  def __post_init__(self):
    check(len(set(self.order)) == len(self.order), "order", "names a task twice")

  def build(self, settings: Mapping, seed: int) -> "IntervalSchedule":
    del seed  # deterministic
    intervals = {}
    for name, s in settings.items():
      if s.interval < 1:
        raise ConfigError(f"config.tasks.{name}.interval is not set: schedule.type='interval' "
                          f"needs a positive integer interval (steps) for every task")
      intervals[name] = s.interval
    if self.order:
      if sorted(self.order) != sorted(intervals):
        raise ConfigError(f"config.schedule.order={self.order!r}: must list every task once; "
                          f"tasks: {', '.join(intervals)}")
      order = list(self.order)
    else:
      order = sorted(intervals, key=lambda n: (-intervals[n], list(intervals).index(n)))
    return IntervalSchedule(intervals, order)


class IntervalSchedule:

  def __init__(self, intervals: Mapping[str, int], order: list[str]):
    self.names, self.order = list(intervals), order
    period = math.lcm(*intervals.values())
    if period > MAX_PERIOD:
      raise ConfigError(f"config.tasks.*.interval {dict(intervals)}: the schedule repeats only "
                        f"every {period:,} steps (their least common multiple), more than "
                        f"{MAX_PERIOD:,}; pick intervals with a smaller common multiple")
    period_seq = np.full(period, -1, np.int32)  # task index per step of one period
    for i in reversed(range(len(order))):  # earlier in the order overwrites later
      period_seq[::intervals[order[i]]] = i
    self.period, self._seq = period, period_seq
    self._check(intervals)

  def _check(self, intervals) -> None:
    free = np.flatnonzero(self._seq < 0)
    if free.size:
      raise ConfigError(f"config.tasks.*.interval {dict(intervals)}: no task is due at step "
                        f"{int(free[0])} ({free.size} of every {self.period} steps have none); "
                        f"give one task interval 1 to fill the free steps")
    ran = set(self._seq.tolist())
    for i, name in enumerate(self.order):
      if i not in ran:
        k = intervals[name]
        raise ConfigError(
            f"config.tasks.{name}.interval={k}: task {name!r} never runs: at every step it "
            f"is due (0, {k}, {2 * k}, ...) a task before it in the order "
            f"{tuple(self.order)} is due too and runs; change the intervals or set "
            f"config.schedule.order")

  def task_at(self, step: int) -> str:
    return self.order[int(self._seq[step % self.period])]
