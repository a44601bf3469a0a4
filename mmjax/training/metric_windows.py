"""What the trainer logs: per-task metric windows kept on device, and the run's accounting.

The train step's metrics stay on device until a log step fetches the whole window at once
(the only device->host transfer of the steady state). Examples, tokens and model FLOPs
are counted on the host from each step's batch shapes, so counting costs no sync.
"""
from __future__ import annotations

import collections
import dataclasses

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What one step of a task (at its batch shapes) processes and costs."""
  examples: int
  tokens: int
  flops: float  # analytic model FLOPs (mmjax/perf/flops.py)


@dataclasses.dataclass(frozen=True)
class StepRecord:
  step: int      # the step's index (0-based: the step that took the state from step to step+1)
  task: str
  metrics: dict  # device arrays until fetched, then floats


class MetricWindow:
  """The steps since the last log step."""

  def __init__(self):
    self.records: list[StepRecord] = []
    self.costs: list[StepCost] = []

  def add(self, step: int, task: str, metrics: dict, cost: StepCost) -> None:
    self.records.append(StepRecord(step, task, metrics))
    self.costs.append(cost)

  def ready(self) -> bool:
    """Whether the window's last step has finished (asks, never waits): the outputs of one
    step become ready together."""
    return not self.records or next(iter(self.records[-1].metrics.values())).is_ready()

  def fetch(self) -> list[StepRecord]:
    """The window's records with host values, and a fresh window."""
    arrays = [a for r in self.records for a in r.metrics.values()]
    # On an accelerator, start every copy before waiting on any; on the CPU the values are
    # already in host memory, and starting "copies" cost ~4x the reads (1 ms per window).
    if (arrays and isinstance(arrays[0], jax.Array)
        and next(iter(arrays[0].devices())).platform != "cpu"):
      for a in arrays:
        a.copy_to_host_async()
    out = [StepRecord(r.step, r.task, {k: float(np.asarray(v)) for k, v in r.metrics.items()})
           for r in self.records]
    self.records = []
    return out

  def take_costs(self) -> list[StepCost]:
    costs, self.costs = self.costs, []
    return costs


@dataclasses.dataclass(frozen=True)
class ClosedWindow:
  """A log step's window of metrics, waiting for its steps to finish to be written."""
  step: int           # the log step
  window: MetricWindow
  steps_added: int    # StepTimes.added when it closed
  excluded_s: float   # not-stepping seconds (compile, eval) up to when it closed
  totals: dict        # the run's accounting through its last step


def mean_metrics(records: list[StepRecord]) -> dict:
  """{'train/<task>/<metric>': mean over the steps of that task}: each task keeps its own
  keys, whichever task came first in the window."""
  values: dict[str, list[float]] = collections.defaultdict(list)
  for r in records:
    for k, v in r.metrics.items():
      values[f"train/{r.task}/{k}"].append(v)
  return {k: float(np.mean(v)) for k, v in values.items()}


UNCONVERGED_KEY = "deq/not_converged"  # a DEQ trunk's statistic (models/trunks/deq.py)


def unconverged_warning(records: list[StepRecord], log_step: int) -> str | None:
  """A warning when more than 1% of a window's steps had a fixed-point solve that stopped
  at its iteration cap above its tolerance (any objective's pass); None otherwise. Not
  converging is counted, not an error."""
  steps = [r.step for r in records
           if any(k.endswith(UNCONVERGED_KEY) and v > 0 for k, v in r.metrics.items())]
  if len(steps) <= 0.01 * len(records):
    return None
  return (f"{len(steps)} of the {len(records)} steps to {log_step} had a DEQ solve that did "
          f"not converge (steps {steps[:5]}...): raise model.fusion.max_iterations or tol")


def task_perf_metrics(seconds: dict[str, float], steps: dict[str, int],
                      cost: dict[str, "StepCost"]) -> dict:
  """Per task over a window: examples/s over the task's own step time, and its share of
  the window's step time (mmjax/perf/step_times.py measures both without syncing the loop)."""
  total = sum(seconds.values())
  out = {}
  for task, s in seconds.items():
    out[f"perf/{task}/examples_per_s"] = steps[task] * cost[task].examples / s if s > 0 else 0.0
    out[f"perf/{task}/time_share"] = s / total if total > 0 else 0.0
  return out


def perf_metrics(costs: list[StepCost], seconds: float, peak_flops_per_s: float) -> dict:
  """Throughput of a window of steps; MFU = analytic FLOPs / seconds / peak of all devices."""
  flops = sum(c.flops for c in costs)
  return {
      "perf/steps_per_s": len(costs) / seconds,
      "perf/examples_per_s": sum(c.examples for c in costs) / seconds,
      "perf/tokens_per_s": sum(c.tokens for c in costs) / seconds,
      "perf/flops_per_step": flops / max(len(costs), 1),
      "perf/achieved_flops_per_s": flops / seconds,
      "perf/peak_flops_per_s": peak_flops_per_s,
      "perf/mfu": flops / seconds / peak_flops_per_s if peak_flops_per_s else 0.0,
  }


class Accounting:
  """Cumulative examples, tokens and FLOPs of the run, exact across resumes.

  Which task trained at each step is a function of (config, step) (mmjax.schedules), and a
  task's batch shapes are fixed by its config: the steps before a resume are counted by
  replaying the schedule, with each task's cost as soon as this process has seen its
  first batch (one step of it, at most a few steps into a multi-task run).
  """

  def __init__(self, schedule, start_step: int):
    if len(schedule.names) == 1:
      before = {schedule.names[0]: start_step}
    else:  # ~10 us a step: seconds for a million steps, once per resume
      before = collections.Counter(schedule.task_at(s) for s in range(start_step))
    self._pending = {t: n for t, n in before.items() if n}
    self.steps = collections.Counter(before)  # task -> steps taken, the resumed ones too
    self.cost: dict[str, StepCost] = {}  # task -> cost of its first batch seen
    self.examples, self.tokens, self.flops = 0, 0, 0.0

  def record(self, task: str, cost: StepCost, steps: int = 1) -> None:
    self.steps[task] += steps
    if task not in self.cost:
      self.cost[task] = cost
      steps += self._pending.pop(task, 0)
    self.examples += steps * cost.examples
    self.tokens += steps * cost.tokens
    self.flops += steps * cost.flops

  def totals(self) -> dict:
    return {"train/examples": float(self.examples), "train/tokens": float(self.tokens),
            "perf/flops": self.flops,
            **{f"train/{t}/steps": float(n) for t, n in sorted(self.steps.items())}}

  def summary(self) -> dict:
    """Per-task constants (JSON): what accounting.json holds besides the totals."""
    return {t: dataclasses.asdict(c) for t, c in self.cost.items()}
