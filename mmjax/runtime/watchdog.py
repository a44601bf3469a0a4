"""A step watchdog: ends a job that stopped making progress, and says which process stalled.

A daemon thread in every process publishes a heartbeat (its last completed step and a beat
count) to the coordination service's key-value store every BEAT_S seconds. The thread keeps
beating while its main thread waits inside a collective, so a process whose heartbeat stops
changing is one that is itself stopped (SIGSTOP, a hung host) or gone. Each process watches
its peers' heartbeats change by its own clock, so clocks that disagree across hosts do not
matter. The thread ends the process with EXIT_CODE, after logging this process's last
completed step and the processes that went silent, when either

  - a peer's heartbeat has not changed for PEER_SILENT_S (multi-process jobs, always: the
    survivors of a lost process are otherwise stuck in a collective until JAX's own
    heartbeat deadline aborts them with a C++ stack that names no process), or
  - no step has completed here for `timeout_s` outside paused work (compiling, evaluating,
    saving); 0 turns this timer off.

A process that ends its loop normally publishes a last heartbeat saying so, and is never
counted as silent. Single-process runs keep only the local timer.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

log = logging.getLogger("mmjax.runtime.watchdog")

EXIT_CODE = 3
BEAT_S = 2.0
# Several missed beats; far above a beat's delay on a busy host, and below JAX's own
# heartbeat deadline (distributed.HEARTBEAT_TIMEOUT_S), which must stay the backstop.
PEER_SILENT_S = 15.0
_KEY = "mmjax/heartbeat/{}"


def _client():
  """The coordination service client of a multi-process job, or None."""
  try:
    from jax._src import distributed
  except ImportError:
    return None
  return getattr(distributed.global_state, "client", None)


class PeerHeartbeats:
  """Publishes this process's heartbeat and notices peers whose heartbeats stop changing."""

  def __init__(self, process_index: int, process_count: int, client=None):
    self.process_index, self.process_count = process_index, process_count
    self._client = client if client is not None else (_client() if process_count > 1 else None)
    self._beats = 0
    self._created = time.monotonic()
    self._seen: dict[int, tuple[str, float]] = {}  # peer -> (heartbeat, when it last changed)

  @property
  def active(self) -> bool:
    return self._client is not None

  def publish(self, step: int, done: bool = False) -> None:
    if self._client is None:
      return
    self._beats += 1
    value = json.dumps({"step": step, "beat": self._beats, "done": done})
    try:
      self._client.key_value_set(_KEY.format(self.process_index), value, allow_overwrite=True)
    except Exception:  # the service itself may be gone; the timer still ends the job
      pass

  def observe(self) -> None:
    """Reads every peer's heartbeat once and notes, by this process's clock, when it changed."""
    if self._client is None:
      return
    now = time.monotonic()
    for p in range(self.process_count):
      if p == self.process_index:
        continue
      try:
        value = self._client.key_value_try_get(_KEY.format(p))
      except Exception:  # not published yet (or the service is gone): nothing to compare
        continue
      if p not in self._seen or self._seen[p][0] != value:
        self._seen[p] = (value, now)

  def silent(self, longer_than: float, unseen_longer_than: float | None = None) -> list[str]:
    """Peers whose heartbeat has not changed for `longer_than` seconds (and that did not say
    they were done), described for a message; and peers never heard from in the
    `unseen_longer_than` seconds (default: `longer_than`) since this one started watching."""
    now, out = time.monotonic(), []
    unseen = longer_than if unseen_longer_than is None else unseen_longer_than
    if now - self._created > unseen:
      out += self.never_seen()
    for p, (value, since) in sorted(self._seen.items()):
      beat = json.loads(value)
      if not beat.get("done") and now - since > longer_than:
        out.append(f"process {p} (last completed step {beat['step']}, "
                   f"no heartbeat for {now - since:.0f}s)")
    return out

  def never_seen(self) -> list[str]:
    return [f"process {p} (no heartbeat)" for p in range(self.process_count)
            if p != self.process_index and p not in self._seen]


class StepWatchdog:

  def __init__(self, timeout_s: float, process_index: int = 0, process_count: int = 1,
               exit_fn=os._exit, peer_silent_s: float = PEER_SILENT_S):
    self.timeout_s = float(timeout_s)
    self.process_index, self.process_count = process_index, process_count
    self.peer_silent_s = float(peer_silent_s)
    self._exit = exit_fn
    self._last_step = -1
    self._last_beat = time.monotonic()
    self._paused = 0
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._peers = PeerHeartbeats(process_index, process_count)
    self._period = max(0.5, min(BEAT_S, self.timeout_s / 4)) if self.timeout_s > 0 else BEAT_S
    self._thread = threading.Thread(target=self._run, name="mmjax-watchdog", daemon=True)

  # -------------------------------------------------------------- main thread API
  def start(self) -> "StepWatchdog":
    # The first beat before any step: a peer killed right after the loop starts has then
    # been seen, and its silence is measured from here.
    self._peers.publish(self._last_step)
    if self.timeout_s > 0 or self._peers.active:
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
    """Ends the watching; peers learn that this process finished its loop on purpose."""
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join(timeout=5)
    with self._lock:
      last = self._last_step
    self._peers.publish(last, done=True)

  # -------------------------------------------------------------- thread
  def _run(self) -> None:
    while not self._stop.wait(self._period):
      with self._lock:
        idle = time.monotonic() - self._last_beat
        paused = self._paused > 0
        last = self._last_step
      self._peers.publish(last)
      self._peers.observe()
      # A silent peer ends the job even while this process is paused: it may be waiting
      # for that peer inside an evaluation or a save.
      # Peers reach their loops at different times (compiling, measuring the peak), so one
      # never heard from gets twice the limit.
      lost = self._peers.silent(self.peer_silent_s, 2 * self.peer_silent_s)
      timed_out = self.timeout_s > 0 and not paused and idle >= self.timeout_s
      if not lost and not timed_out:
        continue
      if self._stop.is_set():
        return
      if lost:
        what = (f"a peer stopped sending heartbeats (limit {self.peer_silent_s:.0f}s); "
                f"no step completed here for {idle:.0f}s on process {self.process_index}")
      else:
        what = (f"no step completed for {idle:.0f}s on process {self.process_index} "
                f"(limit {self.timeout_s:.0f}s)")
        lost = self._peers.silent(max(3 * self._period, 2.0), self.timeout_s)
      who = ("stalled or lost: " + "; ".join(lost)) if lost else \
            "no other process looks stalled; this process is stuck"
      msg = (f"step watchdog: {what}, whose last completed step is {last}; {who}. "
             f"Ending the job; rerun the same command to resume from the last checkpoint.")
      log.error(msg)
      sys.stderr.write(f"error: {msg}\n")
      sys.stderr.flush()
      self._exit(EXIT_CODE)
      return


def silent_peers(process_index: int, process_count: int, wait_s: float,
                 silent_s: float = 6.0) -> list[str]:
  """Watches the peers' heartbeats for up to `wait_s` and returns those silent for
  `silent_s` (sooner if one already is); for describing an error a collective raised."""
  peers = PeerHeartbeats(process_index, process_count)
  deadline = time.monotonic() + wait_s
  while True:
    peers.observe()
    silent = peers.silent(silent_s)
    if silent or time.monotonic() > deadline:
      return silent
    time.sleep(1.0)
