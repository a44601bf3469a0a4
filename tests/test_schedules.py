"""Task schedules: shares, determinism across resume, and bad weights."""
import ml_collections
import numpy as np
import pytest

from mmjax import schedules
from mmjax.errors import ConfigError


def _config(weights, kind="weighted", seed=0):
  return ml_collections.ConfigDict(dict(
      seed=seed, schedule=dict(type=kind),
      tasks={n: dict(weight=w, batch_size=1) for n, w in weights.items()}))


@pytest.mark.parametrize("weights", [
    {"a": 1.0, "b": 1.0}, {"a": 3.0, "b": 1.0, "c": 0.5}, {"a": 0.1, "b": 0.7, "c": 0.15, "d": 0.05},
    {"a": 1.0, "b": 0.0, "c": 2.0}])
def test_weighted_shares_stay_within_one_step_of_their_weights(weights):
  sched = schedules.make_schedule(_config(weights))
  total = sum(weights.values())
  counts = dict.fromkeys(weights, 0)
  for n in range(1, 1001):
    counts[sched.task_at(n - 1)] += 1
    for t, w in weights.items():
      assert abs(counts[t] - n * w / total) < 1.0, (t, n, counts)


def test_a_resumed_schedule_continues_the_same_sequence():
  for kind in ("weighted", "sampled"):
    cfg = _config({"a": 2.0, "b": 1.0, "c": 1.0}, kind)
    first = [schedules.make_schedule(cfg).task_at(s) for s in range(300)]
    resumed = schedules.make_schedule(cfg)  # a new process: starts at step 200
    assert [resumed.task_at(s) for s in range(200, 300)] == first[200:]


def test_sampled_draws_wander_where_weighted_does_not():
  cfg = _config({"a": 1.0, "b": 1.0}, "sampled", seed=1)
  s = schedules.make_schedule(cfg)
  share = np.mean([s.task_at(i) == "a" for i in range(1000)])
  assert 0.4 < share < 0.6 and share != 0.5


@pytest.mark.parametrize("weights, message", [
    ({"a": 0.0, "b": 0.0}, "every task weight is 0"),
    ({"a": -1.0, "b": 1.0}, "tasks.a.weight=-1.0: must be a finite number >= 0"),
    ({"a": float("nan")}, "tasks.a.weight=nan"),
])
def test_bad_weights_are_refused(weights, message):
  with pytest.raises(ConfigError, match=message):
    schedules.make_schedule(_config(weights))
