"""Task schedules, selected by `schedule.type`: which task trains at each step.

  weighted  deterministic and smooth: each task's share after n steps is within 1/n of its
            `tasks.<t>.weight` (weighted.py)
  sampled   independent draws by weight, keyed by (seed, step) (sampled.py)
  interval  IMP's: task t is due every `tasks.<t>.interval` steps; among the tasks due at a
            step the first in `schedule.order` runs (interval.py)
  sequence  an explicit cycle of task names, `schedule.cycle`, repeated (sequence.py)

A schedule's config builds it from the tasks' settings (mmjax/config/task_settings.py, in config
order) and the seed: `build(settings, seed).task_at(step) -> task name`, a pure function
of (config, step), so a resumed run continues the same sequence. To add one: a new file
with a frozen dataclass config, one line in SCHEDULES.
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping

from mmjax.config.registry import Registry
from mmjax.schedules.interval import IntervalConfig
from mmjax.schedules.sampled import SampledConfig
from mmjax.schedules.sequence import SequenceConfig
from mmjax.schedules.weighted import WeightedConfig
from mmjax.config.task_settings import TaskSettings

SCHEDULES = Registry("schedule", {"weighted": WeightedConfig, "sampled": SampledConfig,
                                  "interval": IntervalConfig, "sequence": SequenceConfig})


def make_schedule(section, settings: Mapping[str, TaskSettings], seed: int):
  """The run's schedule from its `schedule` section and the tasks' settings (in config
  order); raises ConfigError (before anything is built) when it could not schedule every
  task."""
  return SCHEDULES.parse(section, "schedule").build(settings, seed)


def preview(schedule, names, steps: int) -> str:
  """The first `steps` tasks, one `step task` line each, then each task's count and share:
  what `python -m mmjax.train --print_schedule N` prints."""
  sequence = [schedule.task_at(s) for s in range(steps)]
  counts = Counter(sequence)
  width = max(len(n) for n in names)
  lines = [f"{s}\t{t}" for s, t in enumerate(sequence)]
  lines.append(f"# tasks of steps 0..{steps - 1}:")
  lines += [f"# {n:<{width}} {counts[n]:>8} steps  {counts[n] / max(steps, 1):7.2%}"
            for n in names]
  return "\n".join(lines)
