"""Each step's time on the device, measured without making the training loop wait.

The loop dispatches steps asynchronously; only a wait on a step's output says when it
finished. A background thread waits on each step's outputs in order and stamps its end.
A step's time is from when it could start -- its dispatch, or the end of the step before
it, whichever is later -- to its end: the device's time on it when the device is the
bottleneck, and input waits included when the host is (both are that task's cost).
Per-task sums of these times give each task's share of the stepping time and its
examples/s in a multi-task run.
"""
from __future__ import annotations

import collections
import queue
import threading
import time

import jax


class StepTimes:

  def __init__(self):
    self._queue: queue.Queue = queue.Queue()
    self._lock = threading.Lock()
    self._seconds: dict[str, float] = collections.defaultdict(float)
    self._steps: dict[str, int] = collections.defaultdict(int)
    self._last_end = 0.0
    self._thread = threading.Thread(target=self._run, name="mmjax-step-times", daemon=True)
    self._thread.start()

  def dispatched(self) -> float:
    """Call just before dispatching a step; pass the value to `add`."""
    return time.perf_counter()

  def add(self, task: str, dispatched_at: float, outputs) -> None:
    """The step just dispatched (its outputs: any arrays it returns)."""
    self._queue.put((task, dispatched_at, outputs))

  def _run(self) -> None:
    while True:
      item = self._queue.get()
      try:
        if item is None:
          return
        task, dispatched_at, outputs = item
        try:
          jax.block_until_ready(outputs)
        except Exception:  # the loop sees and reports a failed step itself
          pass
        end = time.perf_counter()
        with self._lock:
          self._seconds[task] += end - max(dispatched_at, self._last_end)
          self._steps[task] += 1
          self._last_end = end
      finally:
        self._queue.task_done()

  def take(self) -> tuple[dict[str, float], dict[str, int]]:
    """({task: seconds}, {task: steps}) since the last take, once every step added so far
    has finished."""
    self._queue.join()
    with self._lock:
      seconds, steps = dict(self._seconds), dict(self._steps)
      self._seconds.clear()
      self._steps.clear()
    return seconds, steps

  def close(self) -> None:
    self._queue.put(None)
    self._thread.join(timeout=10)
