"""SIGTERM outside the training loop (issue 21, item 5): an exception that unwinds the run
through its cleanups; inside the loop, the flag the stop agreement reads."""
from __future__ import annotations

import os
import signal

import pytest

from mmjax.runtime.signals import Preempted, StopRequested, preemptible


def test_sigterm_outside_the_loop_unwinds_through_finally_and_inside_it_is_a_flag():
  before = signal.getsignal(signal.SIGTERM)
  cleaned = []
  with pytest.raises(Preempted) as e:
    with preemptible():
      with StopRequested() as stop:  # the loop: a flag, no exception
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
      try:  # after the loop (the final evals): raises, and the cleanups run
        os.kill(os.getpid(), signal.SIGTERM)
        cleaned.append("not reached")
      finally:
        cleaned.append("lock released")
  assert cleaned == ["lock released"] and e.value.signum == signal.SIGTERM
  assert "SIGTERM outside the training loop" in str(e.value) and "Rerun" in str(e.value)
  assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
