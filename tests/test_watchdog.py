"""The step watchdog fires after its limit without steps, and not while paused."""
import threading
import time

from mmjax.runtime.watchdog import EXIT_CODE, PeerHeartbeats, StepWatchdog


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


class _KeyValueStore:
  """The two calls of JAX's coordination client that the heartbeats use, over a dict."""

  def __init__(self):
    self.values = {}

  def key_value_set(self, key, value, allow_overwrite=False):
    self.values[key] = value

  def key_value_try_get(self, key):
    return self.values[key]  # KeyError, like the client's error, when not published yet


def test_a_peer_whose_heartbeat_stops_changing_is_named_and_a_done_one_is_not():
  store = _KeyValueStore()
  me, peer, other = (PeerHeartbeats(i, 3, client=store) for i in range(3))
  assert me.never_seen() == ["process 1 (no heartbeat)", "process 2 (no heartbeat)"]
  peer.publish(5)
  other.publish(9)
  me.observe()
  time.sleep(0.3)
  peer.publish(6)  # process 1 keeps beating; process 2 falls silent
  me.observe()
  assert me.silent(0.2) == ["process 2 (last completed step 9, no heartbeat for 0s)"]
  other.publish(9, done=True)  # finished its loop on purpose
  me.observe()
  time.sleep(0.3)
  assert me.silent(0.2) == ["process 1 (last completed step 6, no heartbeat for 0s)"]


def test_a_peer_never_heard_from_is_named_after_the_unseen_limit():
  me = PeerHeartbeats(0, 2, client=_KeyValueStore())
  me.observe()
  assert me.silent(10.0, unseen_longer_than=0.2) == []
  time.sleep(0.3)
  me.observe()
  assert me.silent(10.0, unseen_longer_than=0.2) == ["process 1 (no heartbeat)"]
