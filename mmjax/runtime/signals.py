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


class StopAgreement:
  """Whether the processes stop now. A signal reaches the processes at slightly different
  steps; all must stop at the same one, or one would wait forever in a collective the others
  never enter. So they agree at fixed steps, every few steps (a collective costs a round
  trip)."""

  def __init__(self, any_process):
    self.requested = StopRequested()
    self.stopping = False
    self._any_process = any_process  # bool -> bool: whether any process passed True

  def check(self, step: int) -> None:
    del step
    self.stopping = self._any_process(bool(self.requested))
