"""An explicit cycle of tasks: step s trains `schedule.cycle[s % len(cycle)]`.

For patterns the weights and intervals cannot say exactly, e.g. ("a", "a", "b"), or long
runs of one task between stretches of alternation (benchmarks/agd.py compares the two in
one run this way). A pure function of (config, step). Every task must appear in the cycle:
one that does not would never train, and is refused before anything is built.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from mmjax.config.registry import check, did_you_mean
from mmjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
  cycle: tuple[str, ...] = ()  # task names, repeated from the start after the last

  def __post_init__(self):
    check(len(self.cycle) > 0, "cycle", "is empty; list the tasks in the order they train")

  def build(self, settings: Mapping, seed: int) -> "SequenceSchedule":
    del seed  # deterministic
    names = list(settings)
    for name in self.cycle:
      if name not in settings:
        raise ConfigError(f"config.schedule.cycle names {name!r}, which is not a task"
                          f"{did_you_mean(name, names)}; tasks: {', '.join(names)}")
    missing = [n for n in names if n not in self.cycle]
    if missing:
      raise ConfigError(f"config.schedule.cycle leaves out {', '.join(missing)}: such a task "
                        f"would never train; add it to the cycle or remove the task")
    return SequenceSchedule(names, self.cycle)


class SequenceSchedule:

  def __init__(self, names: list[str], cycle: tuple[str, ...]):
    self.names, self.cycle = names, tuple(cycle)

  def task_at(self, step: int) -> str:
    return self.cycle[step % len(self.cycle)]
