"""SIGTERM/SIGINT as a flag the training loop reads, so a stop saves before exiting; and,
outside the loop (start-up, the final save and evals, closing), as an exception that unwinds
the run through its cleanups (lock released, saves finished) to a clean exit."""
from __future__ import annotations

import contextlib
import os
import signal
import sys

# Exit code of a run stopped by a signal outside the loop: nothing is lost, rerun resumes.
PREEMPTED_EXIT_CODE = 0


class Preempted(BaseException):
  """SIGTERM/SIGINT outside the training loop. A BaseException, like KeyboardInterrupt, so
  that no `except Exception` in between swallows it; `finally` blocks still run."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum

  def __str__(self) -> str:
    return (f"stopped by {signal.Signals(self.signum).name} outside the training loop (while "
            f"starting, or after the last save: during the final evals or closing); every "
            f"finished checkpoint is intact and the workdir lock is released. Rerun the same "
            f"command to resume (evaluate the last step with python -m mmjax.evaluate)")


def _raise_preempted(signum, frame):
  del frame
  raise Preempted(signum)


@contextlib.contextmanager
def preemptible():
  """SIGTERM/SIGINT raise Preempted inside this block, except where a StopRequested (the
  loop) has them; from the first line of a run to its last."""
  previous = {}
  for s in (signal.SIGTERM, signal.SIGINT):
    try:
      previous[s] = signal.signal(s, _raise_preempted)
    except ValueError:  # not the main thread
      pass
  try:
    yield
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def exit_preempted(error: Preempted):
  """One line, exit PREEMPTED_EXIT_CODE at once (Orbax may leave non-daemon threads)."""
  sys.stderr.write(f"{error}\n")
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(PREEMPTED_EXIT_CODE)


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
