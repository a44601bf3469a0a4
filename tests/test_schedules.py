"""Task schedules: shares, determinism across resume, and bad weights."""
import ml_collections
import numpy as np
import pytest

from mmjax import schedules
from mmjax.config.task_settings import all_task_settings
from mmjax.errors import ConfigError


def _schedule(cfg):
  return schedules.make_schedule(cfg.schedule, all_task_settings(cfg), cfg.seed)


def _config(weights, kind="weighted", seed=0):
  return ml_collections.ConfigDict(dict(
      seed=seed, schedule=dict(type=kind),
      tasks={n: dict(weight=w, batch_size=1) for n, w in weights.items()}))


@pytest.mark.parametrize("weights", [
    {"a": 1.0, "b": 1.0}, {"a": 3.0, "b": 1.0, "c": 0.5}, {"a": 0.1, "b": 0.7, "c": 0.15, "d": 0.05},
    {"a": 1.0, "b": 0.0, "c": 2.0}])
def test_weighted_shares_stay_within_one_step_of_their_weights(weights):
  sched = _schedule(_config(weights))
  total = sum(weights.values())
  counts = dict.fromkeys(weights, 0)
  for n in range(1, 1001):
    counts[sched.task_at(n - 1)] += 1
    for t, w in weights.items():
      assert abs(counts[t] - n * w / total) < 1.0, (t, n, counts)


def test_a_resumed_schedule_continues_the_same_sequence():
  for kind in ("weighted", "sampled"):
    cfg = _config({"a": 2.0, "b": 1.0, "c": 1.0}, kind)
    first = [_schedule(cfg).task_at(s) for s in range(300)]
    resumed = _schedule(cfg)  # a new process: starts at step 200
    assert [resumed.task_at(s) for s in range(200, 300)] == first[200:]


def test_sampled_draws_wander_where_weighted_does_not():
  cfg = _config({"a": 1.0, "b": 1.0}, "sampled", seed=1)
  s = _schedule(cfg)
  share = np.mean([s.task_at(i) == "a" for i in range(1000)])
  assert 0.4 < share < 0.6 and share != 0.5


@pytest.mark.parametrize("weights, message", [
    ({"a": 0.0, "b": 0.0}, "every task weight is 0"),
    ({"a": -1.0, "b": 1.0}, "tasks.a.weight=-1.0: must be a finite number >= 0"),
    ({"a": float("nan")}, "tasks.a.weight=nan"),
])
def test_bad_weights_are_refused(weights, message):
  with pytest.raises(ConfigError, match=message):
    _schedule(_config(weights))


def _interval_config(intervals, order=()):
  return ml_collections.ConfigDict(dict(
      seed=0, schedule=dict(type="interval", order=order),
      tasks={n: dict(interval=k, batch_size=1) for n, k in intervals.items()}))


def test_interval_runs_each_task_on_its_turns_rarest_first():
  sched = _schedule(_interval_config({"main": 1, "mlm": 4, "cap": 2}))
  # Due at step s: every task whose interval divides s; the rarest due task runs (the
  # default order: mlm, cap, main), the others skip that turn.
  assert [sched.task_at(s) for s in range(9)] == [
      "mlm", "main", "cap", "main", "mlm", "main", "cap", "main", "mlm"]


def test_interval_conflicts_go_to_the_first_task_of_an_explicit_order():
  sched = _schedule(_interval_config({"a": 1, "b": 2, "c": 3}, ("c", "b", "a")))
  assert [sched.task_at(s) for s in range(7)] == ["c", "a", "b", "c", "b", "a", "c"]
  # With a (due at every step) before b, b's turns all go to a or c.
  with pytest.raises(ConfigError, match=r"tasks.b.interval=2: task 'b' never runs.*"
                                        r"\('c', 'a', 'b'\)"):
    _schedule(_interval_config({"a": 1, "b": 2, "c": 3}, ("c", "a", "b")))


def test_interval_schedule_is_a_pure_function_of_the_step():
  cfg = _interval_config({"a": 1, "b": 3, "c": 5})
  first = [_schedule(cfg).task_at(s) for s in range(100)]
  resumed = _schedule(cfg)  # a new process, asked out of order
  assert [resumed.task_at(s) for s in reversed(range(100))] == first[::-1]
  assert resumed.task_at(10**9 + 7) == first[(10**9 + 7) % 15]  # the period is lcm = 15


@pytest.mark.parametrize("intervals, order, message", [
    ({"a": 2, "b": 2}, (), r"no task is due at step 1 .*give one task interval 1"),
    ({"a": 1, "b": 4, "c": 4}, (), r"tasks.c.interval=4: task 'c' never runs"),
    ({"a": 1, "b": 0}, (), r"tasks.b.interval is not set"),
    ({"a": 1, "b": 2}, ("a",), r"schedule.order=\('a',\): must list every task once"),
    ({"a": 1, "b": 2}, ("a", "a"), r"schedule.order=\('a', 'a'\): names a task twice"),
    ({"a": 1, "b": 9973, "c": 9967}, (), r"repeats only every 99,400,891 steps"),
])
def test_intervals_that_cannot_schedule_every_task_are_refused(intervals, order, message):
  with pytest.raises(ConfigError, match=message):
    _schedule(_interval_config(intervals, order))


def test_print_schedule_prints_the_tasks_and_exits_without_building_anything(tmp_path):
  from tests.conftest import cli_env, run_cli
  from tests.test_task_settings import TWO_TASKS
  env = cli_env(MMJAX_DATA_DIR=tmp_path / "no_data_here")
  out = run_cli("mmjax.train", ["--config", TWO_TASKS, "--print_schedule", "8",
                                "--config.schedule.type=interval",
                                "--config.tasks.default.interval=1",
                                "--config.tasks.masked_text.interval=4"], env=env)
  lines = out.stdout.strip().splitlines()
  assert lines[:8] == [f"{s}\t{t}" for s, t in enumerate(
      ["masked_text"] + ["default"] * 3 + ["masked_text"] + ["default"] * 3)]
  assert lines[-2].split() == ["#", "default", "6", "steps", "75.00%"]
  assert lines[-1].split() == ["#", "masked_text", "2", "steps", "25.00%"]
  assert not (tmp_path / "no_data_here").exists()  # no dataset was built
  bad = run_cli("mmjax.train", ["--config", TWO_TASKS, "--print_schedule", "8",
                                "--config.schedule.type=interval",
                                "--config.tasks.default.interval=1",
                                "--config.tasks.masked_text.interval=1"], env=env, check=False)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
      "error: config.tasks.masked_text.interval=1: task 'masked_text' never runs")


def test_sequence_repeats_its_cycle_and_refuses_unknown_or_left_out_tasks():
  cfg = _config({"a": 1.0, "b": 1.0})
  cfg.schedule = ml_collections.ConfigDict(dict(type="sequence", cycle=("a", "a", "b")))
  s = _schedule(cfg)
  assert [s.task_at(i) for i in range(7)] == ["a", "a", "b", "a", "a", "b", "a"]
  assert _schedule(cfg).task_at(1001) == "b"  # a pure function of the step
  cfg.schedule.cycle = ("a", "bb")
  with pytest.raises(ConfigError, match="'bb', which is not a task.*did you mean 'b'"):
    _schedule(cfg)
  cfg.schedule.cycle = ("a",)
  with pytest.raises(ConfigError, match="leaves out b"):
    _schedule(cfg)
