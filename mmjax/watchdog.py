"""A step watchdog: ends a job that stopped making progress, and says which process stalled.

A daemon thread in every process publishes a heartbeat (its last completed step and the
time) to the coordination service's key-value store every few seconds. The thread keeps
beating while its main thread waits inside a collective, so a process whose heartbeat
stops is one that is itself stopped (SIGSTOP, a hung host) or gone. When no step has
completed for `timeout_s`, the watchdog logs this process's last completed step and the
processes whose heartbeats went stale, then ends the process with EXIT_CODE. Single
process runs keep only the local timer.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

log = logging.getLogger("mmjax.watchdog")

EXIT_CODE = 3
_KEY = "mmjax/heartbeat/{}"


def _client():
  """The coordination service client of a multi-process job, or None."""
  try:
    from jax._src import distributed
  except ImportError:
    return None
  return getattr(distributed.global_state, "client", None)


class StepWatchdog:

  def __init__(self, timeout_s: float, process_index: int = 0, process_count: int = 1,
               exit_fn=os._exit):
    self.timeout_s = float(timeout_s)
    self.process_index, self.process_count = process_index, process_count
    self._exit = exit_fn
    self._last_step = -1
    self._last_beat = time.monotonic()
    self._paused = 0
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._client = _client() if process_count > 1 else None
    self._period = max(0.5, min(5.0, self.timeout_s / 4))
    self._thread = threading.Thread(target=self._run, name="mmjax-watchdog", daemon=True)

  # -------------------------------------------------------------- main thread API
  def start(self) -> "StepWatchdog":
    if self.timeout_s > 0:
      self._thread.start()
    return self

  def step_done(self, step: int) -> None:
    with self._lock:
      self._last_step = step
      self._last_beat = time.monotonic()

  class _Pause:
    def __init__(self, dog):
      self.dog = dog

    def __enter__(self):
      with self.dog._lock:
        self.dog._paused += 1

    def __exit__(self, *exc):
      with self.dog._lock:
        self.dog._paused -= 1
        self.dog._last_beat = time.monotonic()

  def paused(self):
    """Context for long work that is not a step (compiling, evaluating, saving)."""
    return self._Pause(self)

  def stop(self) -> None:
    self._stop.set()

  # -------------------------------------------------------------- thread
  def _publish(self) -> None:
    if self._client is None:
      return
    value = json.dumps({"step": self._last_step, "time": time.time()})
    try:
      self._client.key_value_set(_KEY.format(self.process_index), value, allow_overwrite=True)
    except Exception:  # the service itself may be gone; the timer still ends the job
      pass

  def _stale_processes(self, older_than: float) -> list[str]:
    if self._client is None:
      return []
    stale, now = [], time.time()
    for p in range(self.process_count):
      try:
        beat = json.loads(self._client.key_value_try_get(_KEY.format(p)))
      except Exception:
        stale.append(f"process {p} (no heartbeat)")
        continue
      age = now - beat["time"]
      if age > older_than:
        stale.append(f"process {p} (last completed step {beat['step']}, heartbeat {age:.0f}s ago)")
    return stale

  def _run(self) -> None:
    started = time.time()
    while not self._stop.wait(self._period):
      self._publish()
      with self._lock:
        idle = time.monotonic() - self._last_beat
        paused = self._paused > 0
        last = self._last_step
      # A process silent for the whole limit is stopped or gone, even while this one is
      # busy with something paused (e.g. waiting for it inside an evaluation).
      lost = self._stale_processes(self.timeout_s) if time.time() - started > self.timeout_s else []
      if not lost and (paused or idle < self.timeout_s):
        continue
      stale = lost or self._stale_processes(max(3 * self._period, 2.0))
      who = ("stalled or lost: " + "; ".join(stale)) if stale else \
            "no other process looks stalled; this process is stuck"
      msg = (f"step watchdog: no step completed for {idle:.0f}s on process {self.process_index} "
             f"(limit {self.timeout_s:.0f}s), whose last completed step is {last}; {who}. "
             f"Ending the job; rerun the same command to resume from the last checkpoint.")
      log.error(msg)
      sys.stderr.write(f"error: {msg}\n")
      sys.stderr.flush()
      self._exit(EXIT_CODE)
      return
