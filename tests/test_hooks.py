"""The trainer's pieces that need no run: hook periods, per-task metric windows, resume-
exact accounting, and the NaN-halting update step."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import schedules
from mmjax.experiment import build
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.training import optimizer as optim
from mmjax.training import trainer
from mmjax.training import step as step_lib
from mmjax.data.memory import InMemoryIterator, synthetic_batch
from mmjax.training.hooks import Hooks
from mmjax.training.metric_windows import Accounting, StepCost, StepRecord, mean_metrics, perf_metrics
from mmjax.training.step import make_train_step
from tests.conftest import ROOT, TINY

TWO_TASKS = f"{ROOT}/tests/recipes/two_tasks.py"


def test_hooks_run_at_their_period_and_at_the_last_step():
  calls = []
  hooks = Hooks(last_step=10)
  hooks.add("every3", 3, lambda s: calls.append(("every3", s)))
  hooks.add("every4_not_last", 4, lambda s: calls.append(("every4", s)), at_last_step=False)
  hooks.add("every10_not_last", 10, lambda s: calls.append(("every10", s)), at_last_step=False)
  for step in range(1, 11):
    hooks.after_step(step)
  assert calls == [("every3", 3), ("every4", 4), ("every3", 6), ("every4", 8),
                   ("every3", 9), ("every3", 10)]
  with pytest.raises(ValueError, match="every_steps=0"):
    hooks.add("bad", 0, print)


def test_metric_windows_keep_every_tasks_keys():
  records = [StepRecord(0, "b", {"loss": 1.0, "b_only": 5.0}),
             StepRecord(1, "a", {"loss": 3.0, "a_only": 7.0}),
             StepRecord(2, "a", {"loss": 5.0, "a_only": 9.0})]
  assert mean_metrics(records) == {"train/b/loss": 1.0, "train/b/b_only": 5.0,
                                   "train/a/loss": 4.0, "train/a/a_only": 8.0}


def test_mfu_is_analytic_flops_over_the_peak_of_all_devices():
  costs = [StepCost(examples=16, tokens=100, flops=1e9)] * 4
  perf = perf_metrics(costs, seconds=2.0, peak_flops_per_s=1e10)
  assert perf["perf/mfu"] == pytest.approx(4e9 / 2.0 / 1e10)
  assert perf["perf/flops_per_step"] == 1e9 and perf["perf/examples_per_s"] == 32


def test_accounting_counts_steps_before_a_resume_by_replaying_the_schedule():
  config = experiment.load(TWO_TASKS)
  schedule = experiment.parse(config).schedule
  costs = {"default": StepCost(16, 1408, 1e8), "masked_text": StepCost(16, 768, 3e7)}
  whole = Accounting(schedule, 0)
  for s in range(20):
    whole.record(schedule.task_at(s), costs[schedule.task_at(s)])
  resumed = Accounting(schedule, 7)
  for s in range(7, 20):
    resumed.record(schedule.task_at(s), costs[schedule.task_at(s)])
  assert resumed.totals() == whole.totals()
  assert whole.totals()["train/examples"] == 20 * 16


def _tiny_step(freeze: bool):
  config = experiment.load(TINY, ["optim.warmup_steps=0"])  # the first update is not 0
  objectives = build.task_objectives(config)
  spec = build.model_spec(config, objectives)
  optimizer = optim.make_optimizer(config.optim, config.total_steps)
  graphdef, init_fn, _ = step_lib.abstract_train_state(spec, config.seed, optimizer)
  step = jax.jit(make_train_step(graphdef, objectives["default"], optimizer, 0,
                                 freeze_after_nonfinite=freeze))
  batch = synthetic_batch(config.model.modalities, 4)
  return step, jax.jit(init_fn)(), jax.tree.map(jnp.asarray, batch)


@pytest.mark.parametrize("freeze", [True, False])
def test_after_a_bad_step_halt_applies_no_update_and_skip_carries_on(freeze):
  step, state, batch = _tiny_step(freeze)
  state = state.replace(first_bad_step=jnp.asarray(0, jnp.int32))  # as if step 0 was bad
  new, metrics = step(state, batch)
  assert float(metrics["finite"]) == 1.0
  same = [bool(jnp.array_equal(a, b)) for a, b in
          zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))]
  assert all(same) if freeze else not all(same)
  assert int(new.skipped_steps) == (1 if freeze else 0) and int(new.first_bad_step) == 0


def test_in_memory_iterator_resumes_at_its_position():
  it = InMemoryIterator([{"x": np.arange(2) + i} for i in range(3)])
  [next(it) for _ in range(4)]
  other = InMemoryIterator(it.batches)
  other.set_state(it.get_state())
  assert np.array_equal(next(other)["x"], next(it)["x"]) and it.get_state() == {"position": 5}


def test_host_learning_rate_reads_the_learning_rate_of_any_step_across_chunks():
  cfg = experiment.load(TINY, ["total_steps=300", "optim.warmup_steps=20"]).optim
  lr = optim.learning_rate_fn(cfg, 300)
  host = optim.HostLearningRate(lr, chunk=64)
  for step in (0, 19, 20, 63, 64, 65, 200, 127, 299):  # back and forth over chunk edges
    assert host(step) == pytest.approx(float(lr(step)), rel=1e-6, abs=1e-12)
