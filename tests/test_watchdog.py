"""The step watchdog fires after its limit without steps, and not while paused."""
import threading
import time

from mmjax.watchdog import EXIT_CODE, StepWatchdog


def make(timeout):
  fired = threading.Event()
  codes = []
  dog = StepWatchdog(timeout, exit_fn=lambda code: (codes.append(code), fired.set()))
  return dog, fired, codes


def test_fires_when_no_step_completes(capsys):
  dog, fired, codes = make(1.0)
  dog.start()
  dog.step_done(7)
  try:
    assert fired.wait(10), "watchdog did not fire"
  finally:
    dog.stop()
  assert codes == [EXIT_CODE]
  err = capsys.readouterr().err
  assert "no step completed" in err and "last completed step is 7" in err


def test_steps_and_pauses_keep_it_quiet():
  dog, fired, codes = make(1.0)
  dog.start()
  try:
    for s in range(6):
      time.sleep(0.3)
      dog.step_done(s)
    with dog.paused():  # e.g. a long compile or evaluation
      time.sleep(2.5)
    assert not fired.is_set()
  finally:
    dog.stop()
  assert codes == []
