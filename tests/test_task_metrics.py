"""Per-task metrics pieces: step times off the loop's thread, per-task throughput and time
shares, and the progress bar's task line (no compiles: fast)."""
from __future__ import annotations

import io
import time

import jax.numpy as jnp
import pytest

from mmjax.training.progress import ProgressBar
from mmjax.perf.step_times import StepTimes, WindowTimes
from mmjax.training.metric_windows import StepCost, task_perf_metrics


def test_step_times_sum_per_task_and_reset_on_take():
  times = StepTimes()
  try:
    for task in ("a", "b", "a"):
      t0 = times.dispatched()
      time.sleep(0.05)  # a step that takes 50 ms before its output exists
      times.add(task, t0, jnp.ones(3))
    took = times.take()
    seconds, steps = took.seconds, took.steps
    assert steps == {"a": 2, "b": 1} and took.end is not None
    # The steps' intervals tile the time from the first dispatch to the last end, so their
    # sum covers the three sleeps. How it splits between tasks depends on when the thread
    # got to stamp each end (a late stamp of one step shortens the next), so per task only
    # "some time" is certain.
    assert seconds["a"] + seconds["b"] >= 0.15
    assert seconds["a"] > 0 and seconds["b"] > 0
    assert seconds["a"] + seconds["b"] < 2.0
    assert times.take() == WindowTimes({}, {}, None, 0.0)
  finally:
    times.close()


def test_step_times_hand_out_windows_and_the_time_the_device_waited():
  times = StepTimes()
  try:
    times.add("a", times.dispatched(), jnp.ones(3))
    first = times.take(upto=1)  # returns once step 1 has its end stamped
    time.sleep(0.01)  # the host is late: nothing in flight until the next dispatch
    times.add("b", times.dispatched(), jnp.ones(3))
    times.add("a", times.dispatched(), jnp.ones(3))
    assert first.steps == {"a": 1} and first.waited_s == 0.0
    rest = times.take()
    assert rest.steps == {"a": 1, "b": 1} and rest.end >= first.end
    # Step 2 was dispatched after step 1 had ended: that gap is the device's wait.
    assert rest.waited_s >= 0.01
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
