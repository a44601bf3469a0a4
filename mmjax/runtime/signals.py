"""SIGTERM/SIGINT as a flag the training loop reads, so a stop saves before exiting."""
from __future__ import annotations

import signal


class StopRequested:
  """Turns SIGTERM/SIGINT into a flag the loop's stop agreement reads (save, then exit)."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread (e.g. called from a test runner thread)
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)

  def __bool__(self):
    return self.signum is not None
