"""Alternating-gradient runs compile each task's step once, at start-up, and log per task.

In process, on in-memory batches (no dataset build): the count comes from JAX's own
backend-compile events, so a retrace or recompile anywhere in the loop would show.
"""
from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import pytest
from jax._src import dispatch

from mmjax import schedules
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.training import trainer
from mmjax.data.memory import InMemoryIterator, synthetic_batch
from tests.conftest import ROOT

TWO_TASKS = os.path.join(ROOT, "tests", "recipes", "two_tasks.py")


class StepCompiles:
  """Counts XLA compiles of the train step (JAX's backend-compile event, cache hits too)."""

  def __init__(self):
    self.names: list[str] = []

  def __call__(self, event, duration, **kwargs):
    del duration
    if event == dispatch.BACKEND_COMPILE_EVENT and "train_step" in kwargs.get("fun_name", ""):
      self.names.append(kwargs["fun_name"])

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self)


def two_task_config(total_steps: int):
  config = experiment.load(TWO_TASKS, [f"total_steps={total_steps}", "log_every_steps=5",
                                       "checkpoint.every_steps=100",
                                       "prefetch_batches=2"])
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()
  return config


def iterators_for(config, shapes_change_at: int | None = None) -> dict:
  out = {}
  for name, task in config.tasks.items():
    batches = [synthetic_batch(config.model.modalities, task.batch_size, seed=i, num_classes=20)
               for i in range(4)]
    if shapes_change_at is not None and name == "masked_text":
      short = {k: (v[:, :24] if k.startswith("text") else v) for k, v in batches[0].items()}
      batches = batches[:1] * shapes_change_at + [short]
    out[name] = InMemoryIterator(batches)
  return out


class StallingIterator(InMemoryIterator):
  """Sleeps `seconds` before handing out batch number `at`: one slow read of the input."""

  def __init__(self, batches, at: int, seconds: float):
    super().__init__(batches)
    self.at, self.seconds = at, seconds

  def __next__(self):
    if self.position == self.at:
      time.sleep(self.seconds)
    return super().__next__()


# A whole trainer run (two tasks, 24 steps): end to end, so in the slow tier.
@pytest.mark.slow
def test_two_task_run_compiles_each_step_once_and_logs_every_task(tmp_path):
  config = two_task_config(total_steps=24)
  iterators = iterators_for(config)
  # One input stall of 3 s, at the 9th batch of the first task: after the first log window
  # (whose compile time is left out of the wait) and long beside a tiny step.
  first = next(iter(config.tasks))
  iterators[first] = StallingIterator(iterators[first].batches, at=8, seconds=3.0)
  with StepCompiles() as compiles:
    trainer.train(experiment.parse(config), str(tmp_path), iterators=iterators)
  assert len(compiles.names) == 2, compiles.names  # one per (task, shape), over 24 steps
  schedule = experiment.parse(config).schedule
  taken = {t: sum(schedule.task_at(s) == t for s in range(24)) for t in config.tasks}
  assert all(taken.values())
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  logs = [r for r in rows if "perf/mfu" in r]
  last = logs[-1]
  assert last["perf/compiles"] == 2
  for t in config.tasks:
    assert last[f"train/{t}/steps"] == taken[t]
    assert last[f"perf/{t}/compile_s"] > 0
  # Rows are written after the host has moved on (a window is written once its steps
  # finish), yet each row counts exactly the steps up to its own step, in order.
  assert [r["step"] for r in logs] == [5, 10, 15, 20, 24]
  for r in logs:
    for t in config.tasks:
      assert r[f"train/{t}/steps"] == sum(schedule.task_at(s) == t for s in range(r["step"]))
    assert 0.0 <= r["perf/device_wait_fraction"] <= 1.0
  # The device sat idle through the stall, in whichever window it fell: most of that
  # window's time (its five steps take a fraction of a second even on a loaded machine).
  assert max(r["perf/device_wait_fraction"] for r in logs) > 0.5, logs
  for r in logs:  # each window: the tasks it ran, with shares adding up to 1
    ran = {t for t in config.tasks if f"train/{t}/loss" in r}
    assert ran == {t for t in config.tasks if f"perf/{t}/time_share" in r}
    assert sum(r[f"perf/{t}/time_share"] for t in ran) == pytest.approx(1.0)
    assert all(r[f"perf/{t}/examples_per_s"] > 0 for t in ran)
  acct = json.load(open(tmp_path / "accounting.json"))
  assert set(acct["compile"]) == set(config.tasks)
  assert all(c["compile_s"] > 0 and c["lower_s"] > 0 for c in acct["compile"].values())


@pytest.mark.slow
def test_a_batch_of_new_shapes_after_warm_up_is_counted(tmp_path):
  config = two_task_config(total_steps=20)
  with StepCompiles() as compiles:
    trainer.train(experiment.parse(config), str(tmp_path), iterators=iterators_for(config, shapes_change_at=3))
  assert len(compiles.names) == 3, compiles.names
  last = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")
          if "perf/mfu" in line][-1]
  assert last["perf/compiles"] == 3
