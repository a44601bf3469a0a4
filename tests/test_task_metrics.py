"""Per-task metrics pieces: step times off the loop's thread, per-task throughput and time
shares, and the progress bar's task line (no compiles: fast)."""
from __future__ import annotations

import collections
import io
import threading
import time

import jax.numpy as jnp
import pytest

from mmjax.training.progress import ProgressBar
from mmjax.perf.step_times import StepTimes, WindowTimes
from mmjax.training.metric_windows import MetricWindow, StepCost, task_perf_metrics


class ScriptedClock:
  """A clock for StepTimes: the loop's thread reads `now` (set by the test), and the
  step-times thread reads the scripted end stamps in step order, whenever it gets to them,
  so the times are exact however loaded the machine is."""

  def __init__(self, ends):
    self.now = 0.0
    self._ends = collections.deque(ends)

  def __call__(self) -> float:
    if threading.current_thread().name == "mmjax-step-times":
      return self._ends.popleft()
    return self.now


def test_step_times_sum_per_task_and_reset_on_take():
  # The host dispatches all three steps at t=0; they end at 0.05, 0.08 and 0.2. A step's
  # time starts when the step before it ended, so: a 0.05 + 0.12, b 0.03.
  clock = ScriptedClock(ends=[0.05, 0.08, 0.2])
  times = StepTimes(clock)
  try:
    for task in ("a", "b", "a"):
      times.add(task, times.dispatched(), jnp.ones(3))
    took = times.take()
    assert took.steps == {"a": 2, "b": 1} and took.end == 0.2
    assert took.seconds["a"] == pytest.approx(0.17) and took.seconds["b"] == pytest.approx(0.03)
    assert took.waited_s == 0.0  # a step was always in flight
    assert times.take() == WindowTimes({}, {}, None, 0.0)
  finally:
    times.close()


def test_step_times_hand_out_windows_and_the_time_the_device_waited():
  clock = ScriptedClock(ends=[0.03, 0.06, 0.09])
  times = StepTimes(clock)
  try:
    times.add("a", times.dispatched(), jnp.ones(3))
    first = times.take(upto=1)  # returns once step 1 has its end stamped
    clock.now = 0.04  # the host is late: nothing in flight from 0.03 to 0.04
    times.add("b", times.dispatched(), jnp.ones(3))
    clock.now = 0.05  # dispatched while step 2 runs: no wait
    times.add("a", times.dispatched(), jnp.ones(3))
    assert first == WindowTimes({"a": 0.03}, {"a": 1}, 0.03, 0.0)
    rest = times.take()
    assert rest.steps == {"a": 1, "b": 1} and rest.end == 0.09
    assert rest.seconds["b"] == pytest.approx(0.02) and rest.seconds["a"] == pytest.approx(0.03)
    assert rest.waited_s == pytest.approx(0.01)
  finally:
    times.close()


def test_step_times_on_the_real_clock_cover_the_steps():
  times = StepTimes()
  try:
    for task in ("a", "b", "a"):
      t0 = times.dispatched()
      time.sleep(0.05)  # a step that takes 50 ms before its output exists
      times.add(task, t0, jnp.ones(3))
    took = times.take()
    # The steps' intervals tile the time from the first dispatch to the last end, so their
    # sum covers the three sleeps however late the thread stamps (no upper bound: load).
    assert took.steps == {"a": 2, "b": 1}
    assert took.seconds["a"] + took.seconds["b"] >= 0.15
  finally:
    times.close()


def test_task_perf_metrics_shares_add_up_and_examples_per_s():
  cost = {"a": StepCost(examples=16, tokens=0, flops=0.0),
          "b": StepCost(examples=8, tokens=0, flops=0.0)}
  m = task_perf_metrics({"a": 3.0, "b": 1.0}, {"a": 6, "b": 2}, cost)
  assert m["perf/a/time_share"] == pytest.approx(0.75)
  assert m["perf/b/time_share"] == pytest.approx(0.25)
  assert m["perf/a/examples_per_s"] == pytest.approx(6 * 16 / 3.0)
  assert m["perf/b/examples_per_s"] == pytest.approx(2 * 8 / 1.0)


def test_progress_bar_names_the_current_task_and_every_tasks_steps(monkeypatch):
  err = io.StringIO()
  monkeypatch.setattr("sys.stderr", err)
  bar = ProgressBar(total=10, initial=0, tasks=["t2i", "mlm"])
  bar.logged("t2i", {"train/t2i/loss": 1.5, "perf/examples_per_s": 100.0, "perf/mfu": 0.1})
  bar.step_done("mlm", {"t2i": 3, "mlm": 2})
  bar._bar.refresh()
  bar.close()
  line = err.getvalue().splitlines()[-1] if "\n" in err.getvalue() else err.getvalue()
  assert "mlm:" in line and "t2i:3 mlm:2" in line and "loss=1.500" in line


def test_a_window_fetches_its_steps_as_host_floats_and_starts_afresh():
  window, cost = MetricWindow(), StepCost(examples=1, tokens=0, flops=0.0)
  window.add(0, "a", {"loss": jnp.float32(2.5), "finite": jnp.ones(())}, cost)
  window.add(1, "b", {"loss": 1.25, "finite": 1.0}, cost)  # values already on the host
  first, second = window.fetch()
  assert (first.step, first.task, first.metrics) == (0, "a", {"loss": 2.5, "finite": 1.0})
  assert (second.step, second.task, second.metrics) == (1, "b", {"loss": 1.25, "finite": 1.0})
  assert all(type(v) is float for r in (first, second) for v in r.metrics.values())
  assert window.fetch() == []
