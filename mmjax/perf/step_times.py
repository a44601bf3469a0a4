"""Each step's time on the device, measured without making the training loop wait.

The loop dispatches steps asynchronously; only a step's outputs say when it finished. The
loop's own thread looks (never waits) whether the oldest steps in flight have finished, at
each dispatch and at the top of each iteration (`poll`), and stamps those that have with the
time it looked. When the loop has to wait anyway -- a log window's metrics, a save, an eval
-- it waits step by step (`take`, `settle`), so each end is exact. A stamp is therefore at
most one loop iteration late. No thread: a thread that woke at every step's end cost the
loop several GIL hand-offs per step, most of a small model's host time.

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
  """clock: seconds (tests pass a scripted one). A step's outputs are probed through one of
  its arrays: the outputs of one step become ready together."""

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self._in_flight: collections.deque = collections.deque()  # (task, dispatched, probe)
    # (task, seconds, end, waited) of each stamped step not taken yet
    self._ends: collections.deque = collections.deque()
    self._count = 0   # steps stamped so far
    self._taken = 0   # steps handed out by `take`
    self.added = 0    # steps added so far
    self._last_end = 0.0

  def dispatched(self) -> float:
    """Call just before dispatching a step; pass the value to `add`."""
    self.poll()
    return self._clock()

  def add(self, task: str, dispatched_at: float, outputs) -> None:
    """The step just dispatched (its outputs: any arrays it returns)."""
    self.added += 1
    self._in_flight.append((task, dispatched_at, jax.tree.leaves(outputs)[0]))

  def poll(self) -> None:
    """Stamps the steps in flight that have finished by now (asks, never waits)."""
    while self._in_flight and self._in_flight[0][2].is_ready():
      self._stamp(self._in_flight.popleft())

  def settle(self, upto: int | None = None) -> None:
    """Waits for the steps up to the `upto`-th added (default: all), stamping each end."""
    upto = self.added if upto is None else upto
    while self._count < upto:
      item = self._in_flight.popleft()
      try:
        item[2].block_until_ready()
      except Exception:  # the loop sees and reports a failed step itself
        pass
      self._stamp(item)

  def _stamp(self, item) -> None:
    task, dispatched_at, _ = item
    end = self._clock()
    # Before the first step there is no previous end to have waited from.
    waited = max(0.0, dispatched_at - self._last_end) if self._count else 0.0
    self._ends.append((task, end - max(dispatched_at, self._last_end), end, waited))
    self._last_end = end
    self._count += 1

  def take(self, upto: int | None = None) -> WindowTimes:
    """The steps after the last take up to the `upto`-th step added (default: every step
    added so far), once they have ended."""
    upto = self.added if upto is None else upto
    self.settle(upto)
    seconds: dict[str, float] = collections.defaultdict(float)
    steps: dict[str, int] = collections.defaultdict(int)
    end, waited_s = None, 0.0
    while self._taken < upto:
      task, s, end, waited = self._ends.popleft()
      seconds[task] += s
      steps[task] += 1
      waited_s += waited
      self._taken += 1
    return WindowTimes(dict(seconds), dict(steps), end, waited_s)
