"""Each step's time on the device, measured without making the training loop wait.

The loop dispatches steps asynchronously; only a wait on a step's output says when it
finished. A background thread waits on each step's outputs in order and stamps its end.
A step's time is from when it could start -- its dispatch, or the end of the step before
it, whichever is later -- to its end: the device's time on it when the device is the
bottleneck, and input waits included when the host is (both are that task's cost).
Per-task sums of these times give each task's share of the stepping time and its
examples/s in a multi-task run; the end stamps give a log window's wall time as the
device saw it, whatever the host's lead over the device when the window is written; and
the gaps between a step's end and the next one's dispatch are the time the device waited
for the host (input, logging, saving, Python between steps).
"""
from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from typing import Callable

import jax


@dataclasses.dataclass(frozen=True)
class WindowTimes:
  """The steps handed out by one `StepTimes.take`."""
  seconds: dict[str, float]  # task -> its steps' time
  steps: dict[str, int]      # task -> steps
  end: float | None          # the clock when the last one ended (None: no steps)
  waited_s: float            # time no step was in flight: the device waited for the host


class StepTimes:
  """clock: seconds, read on the loop's thread at dispatch and on this object's thread at
  each step's end (tests pass a scripted one)."""

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self._queue: queue.Queue = queue.Queue()
    self._stamped = threading.Condition()
    # (task, seconds, end, waited) of each stamped step not taken yet
    self._ends: collections.deque = collections.deque()
    self._count = 0   # steps stamped so far
    self._taken = 0   # steps handed out by `take`
    self.added = 0    # steps added so far (the loop's thread only)
    self._last_end = 0.0
    self._thread = threading.Thread(target=self._run, name="mmjax-step-times", daemon=True)
    self._thread.start()

  def dispatched(self) -> float:
    """Call just before dispatching a step; pass the value to `add`."""
    return self._clock()

  def add(self, task: str, dispatched_at: float, outputs) -> None:
    """The step just dispatched (its outputs: any arrays it returns)."""
    self.added += 1
    self._queue.put((task, dispatched_at, outputs))

  def _run(self) -> None:
    while True:
      item = self._queue.get()
      if item is None:
        return
      task, dispatched_at, outputs = item
      try:
        jax.block_until_ready(outputs)
      except Exception:  # the loop sees and reports a failed step itself
        pass
      end = self._clock()
      with self._stamped:
        # Before the first step there is no previous end to have waited from.
        waited = max(0.0, dispatched_at - self._last_end) if self._count else 0.0
        self._ends.append((task, end - max(dispatched_at, self._last_end), end, waited))
        self._last_end = end
        self._count += 1
        self._stamped.notify_all()

  def take(self, upto: int | None = None) -> WindowTimes:
    """The steps after the last take up to the `upto`-th step added (default: every step
    added so far), once they have ended."""
    upto = self.added if upto is None else upto
    seconds: dict[str, float] = collections.defaultdict(float)
    steps: dict[str, int] = collections.defaultdict(int)
    end, waited_s = None, 0.0
    with self._stamped:
      self._stamped.wait_for(lambda: self._count >= upto)
      while self._taken < upto:
        task, s, end, waited = self._ends.popleft()
        seconds[task] += s
        steps[task] += 1
        waited_s += waited
        self._taken += 1
    return WindowTimes(dict(seconds), dict(steps), end, waited_s)

  def close(self) -> None:
    self._queue.put(None)
    self._thread.join(timeout=10)
