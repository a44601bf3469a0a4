"""Deterministic, smooth weighted schedule: earliest deadline first over quotas.

With normalised weights w_i and count_i tasks run before step n, the task's next run is
"due" by step (count_i + 1) / w_i. Step n runs, among the tasks not already ahead of their
quota (count_i < (n + 1) * w_i), the one due first; ties go to the first task in config
order. This keeps every task's count within 1 of n * w_i after every n steps (so its share
is within 1/n of its weight), which the plain largest-lag rule of smooth weighted
round-robin misses slightly with 3+ tasks. The sequence is a pure function of (weights,
step): a resumed run recomputes it.
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Mapping

from mmjax.schedules.weights import task_weights


@dataclasses.dataclass(frozen=True)
class WeightedConfig:

  def build(self, settings: Mapping, seed: int) -> "WeightedSchedule":
    del seed  # deterministic
    return WeightedSchedule(task_weights(settings))


class WeightedSchedule:

  def __init__(self, weights: Mapping[str, float]):
    self.names = list(weights)
    # Exact rational weights: float rounding would otherwise decide near-ties differently
    # on different machines. As integers over a common denominator (share_j = W_j / T),
    # the rule's comparisons are integer products: no Fraction arithmetic per step.
    w = [Fraction(weights[n]).limit_denominator(1 << 20) for n in self.names]
    denominator = math.lcm(*(x.denominator for x in w))
    self._w = [int(x * denominator) for x in w]
    self._total = sum(self._w)
    self._sequence: list[int] = []   # memo of the tasks of steps 0, 1, ...
    self._counts = [0] * len(self.names)

  def task_at(self, step: int) -> str:
    w, total, counts = self._w, self._total, self._counts
    while len(self._sequence) <= step:
      n = len(self._sequence)
      best = -1
      for j, wj in enumerate(w):
        # Behind its quota (count_j < (n + 1) * share_j), and due first: the smallest
        # (count_j + 1) / share_j, ties to the first task.
        if wj and counts[j] * total < (n + 1) * wj and (
            best < 0 or (counts[j] + 1) * w[best] < (counts[best] + 1) * wj):
          best = j
      counts[best] += 1
      self._sequence.append(best)
    return self.names[self._sequence[step]]
