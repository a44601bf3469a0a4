"""Reads batches ahead in a background thread, so input work overlaps the train step.

The checkpointable position stays exact: each prefetched batch travels with the
iterator state *after* it, and `get_state()` reports the state after the last batch
handed to the caller, never one still waiting in the queue.

With `place` (e.g. host batch -> global jax.Arrays with their final sharding), the
thread also puts each batch on the devices, `depth` steps ahead of the step that uses
it, so no host->device copy is on the step's critical path (in every process: each
places its own rows).
"""
from __future__ import annotations

import queue
import threading
from typing import Any


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


class Prefetcher:

  def __init__(self, iterator, depth: int = 2, place=None):
    if depth < 1:
      raise ValueError(f"prefetch depth={depth}; need >= 1")
    self._it = iterator
    self._place = place or (lambda batch: batch)
    self._state = iterator.get_state()
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, name="mmjax-prefetch", daemon=True)
    self._thread.start()

  def _fill(self):
    while not self._stop.is_set():
      try:
        item: Any = (self._place(next(self._it)), self._it.get_state())
      except BaseException as e:  # re-raised in the consumer, with its traceback
        item = _Failure(e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if isinstance(item, _Failure):
        return

  def __iter__(self):
    return self

  def __next__(self):
    item = self._queue.get()
    if isinstance(item, _Failure):
      raise item.error
    batch, self._state = item
    return batch

  def get_state(self) -> dict:
    return self._state

  def set_state(self, state) -> None:
    raise RuntimeError("set the wrapped iterator's state before wrapping it in a Prefetcher")

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=10)
    if hasattr(self._it, "close"):  # grain worker processes, if any
      self._it.close()
