"""Task schedules, selected by `schedule.type`: which task trains at each step.

A schedule's config builds it from the tasks' weights (`tasks.<t>.weight`, in config
order) and the seed: `build(weights, seed).task_at(step) -> task name`, a pure function of
(config, step), so a resumed run continues the same sequence. To add one: a new file with a
frozen dataclass config, one line in SCHEDULES.
"""
from __future__ import annotations

import math

from mmjax.components import Registry
from mmjax.errors import ConfigError
from mmjax.schedules.sampled import SampledConfig
from mmjax.schedules.weighted import WeightedConfig

SCHEDULES = Registry("schedule", {"weighted": WeightedConfig, "sampled": SampledConfig})


def task_weights(tasks_cfg) -> dict[str, float]:
  """{task: weight}, checked: finite, >= 0, and not all zero."""
  weights = {}
  for name, task in tasks_cfg.items():
    w = task.get("weight", 1.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
      raise ConfigError(f"config.tasks.{name}.weight={w!r}: must be a finite number >= 0")
    weights[name] = float(w)
  if not any(weights.values()):
    raise ConfigError(f"config.tasks: every task weight is 0 ({weights}); give at least one "
                      f"task a positive weight")
  return weights


def make_schedule(config):
  """The run's schedule from `config.schedule` and the tasks' weights."""
  cfg = SCHEDULES.parse(config.get("schedule", {"type": "weighted"}), "schedule")
  return cfg.build(task_weights(config.tasks), config.seed)
