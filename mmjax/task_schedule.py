"""Which task trains at each step.

Tasks are sampled by `weight` from a generator keyed by (seed, step), so the schedule
needs no state of its own: a resumed run replays the same sequence.
"""
from __future__ import annotations

import numpy as np


class TaskSchedule:

  def __init__(self, tasks_cfg, seed: int):
    self.names = list(tasks_cfg.keys())
    w = np.asarray([float(tasks_cfg[n].get("weight", 1.0)) for n in self.names])
    if (w < 0).any() or w.sum() <= 0:
      raise ValueError(f"task weights {dict(zip(self.names, w))} must be >= 0 with a positive sum")
    self.probs = w / w.sum()
    self.seed = seed

  def task_at(self, step: int) -> str:
    if len(self.names) == 1:
      return self.names[0]
    u = np.random.default_rng([self.seed, step]).random()
    return self.names[int(np.searchsorted(np.cumsum(self.probs), u, side="right"))]
