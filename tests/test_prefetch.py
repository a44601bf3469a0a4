"""The prefetcher overlaps input work without moving the checkpointed position."""
import pytest

from mmjax.data.prefetch import Prefetcher


class Counter:
  """A stand-in iterator with a checkpointable position (pure Python, no data stack)."""

  def __init__(self, fail_at=None):
    self.i = 0
    self.fail_at = fail_at

  def __next__(self):
    if self.i == self.fail_at:
      raise OSError("disk gone")
    self.i += 1
    return self.i

  def get_state(self):
    return {"i": self.i}


def test_state_is_that_after_the_last_batch_handed_out():
  p = Prefetcher(Counter(), depth=3)
  try:
    assert p.get_state() == {"i": 0}
    assert [next(p) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert p.get_state() == {"i": 5}  # although the thread has read further ahead
  finally:
    p.close()


def test_errors_reach_the_consumer():
  p = Prefetcher(Counter(fail_at=2))
  try:
    assert next(p) == 1 and next(p) == 2
    with pytest.raises(OSError, match="disk gone"):
      next(p)
  finally:
    p.close()


def test_resuming_from_a_prefetched_state_gives_the_next_real_batch(world_dir):
  import numpy as np
  from mmjax.config import recipe as config_lib
  from mmjax import experiment
  from mmjax.data import pipeline
  from tests.conftest import TINY
  cfg = experiment.load(TINY, [f"tasks.default.data.data_dir={world_dir}"]).tasks.default.data
  make = lambda: pipeline.make_train_iterator(cfg, batch_size=8, seed=3)
  p = Prefetcher(make(), depth=2)
  try:
    for _ in range(3):
      next(p)
    state = p.get_state()
    expected = next(p)
  finally:
    p.close()
  resumed = make()
  resumed.set_state(state)
  got = next(resumed)
  for k in expected:
    np.testing.assert_array_equal(expected[k], got[k])
