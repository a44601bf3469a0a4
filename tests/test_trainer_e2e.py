"""End-to-end checks of the hook-driven trainer and its accounting through the real
command lines: two-task metric windows, resume-exact counts, NaN halting with nothing
saved yet, one compile per task, and a params-only evaluate restore."""
from __future__ import annotations

import json
import os

import pytest

from mmjax import schedules
from mmjax.config import recipe as config_lib
from mmjax import experiment
from tests.conftest import ROOT, run_cli, tiny_args
from tests.test_train_e2e import read_metrics

pytestmark = pytest.mark.slow

TWO_TASKS = os.path.join(ROOT, "tests", "recipes", "two_tasks.py")


def two_task_args(workdir, data_dir, *overrides):
  return ["--config", TWO_TASKS, "--workdir", str(workdir),
          f"--config.tasks.default.data.data_dir={data_dir}",
          f"--config.tasks.masked_text.data.data_dir={data_dir}", *overrides]


def test_two_tasks_each_keep_their_metrics_and_counts_survive_a_resume(world_dir, tmp_path):
  whole = tmp_path / "whole"
  proc = run_cli("mmjax.train", two_task_args(whole, world_dir))
  assert proc.stderr.count("compiled the step of task") == 2  # once per task, never again
  schedule = experiment.parse(experiment.load(TWO_TASKS)).schedule
  rows = [r for r in read_metrics(whole) if "perf/mfu" in r]
  assert [r["step"] for r in rows] == [4, 8, 12]
  for r in rows:
    ran = {schedule.task_at(s) for s in range(r["step"] - 4, r["step"])}
    logged = {t for t in ("default", "masked_text") if f"train/{t}/loss" in r}
    assert logged == ran, (r["step"], logged, ran)
  assert any(len({t for t in ("default", "masked_text") if f"train/{t}/loss" in r}) == 2
             for r in rows)
  final = rows[-1]
  acct = json.load(open(whole / "accounting.json"))
  tasks = acct["tasks"]
  steps = {t: sum(schedule.task_at(s) == t for s in range(12)) for t in tasks}
  assert final["train/examples"] == 12 * 16
  assert final["train/tokens"] == sum(steps[t] * tasks[t]["tokens"] for t in tasks)
  assert final["perf/flops"] == pytest.approx(sum(steps[t] * tasks[t]["flops"] for t in tasks))
  assert final["perf/masked_text/flops_per_step"] < final["perf/default/flops_per_step"]
  assert final["model/params"] == acct["model/params"] > 0
  assert "measured" in acct["peak_source"] and final["perf/peak_flops_per_s"] > 0
  assert final["perf/mfu"] == pytest.approx(
      final["perf/achieved_flops_per_s"] / final["perf/peak_flops_per_s"])

  resumed = tmp_path / "resumed"
  run_cli("mmjax.train", two_task_args(resumed, world_dir, "--config.total_steps=6"))
  # total_steps changes the learning-rate schedule but not what is counted.
  run_cli("mmjax.train", two_task_args(resumed, world_dir))
  again = [r for r in read_metrics(resumed) if "perf/mfu" in r][-1]
  for k in ("train/examples", "train/tokens", "perf/flops"):
    assert again[k] == pytest.approx(final[k]), k


def test_nan_halt_before_any_checkpoint_says_none_exists(world_dir, tmp_path):
  proc = run_cli("mmjax.train", tiny_args(tmp_path, world_dir, "--config.optim.learning_rate=1e38",
                                          "--config.optim.warmup_steps=0"), check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "non-finite loss or gradient at step 1 (task 'default'" in proc.stderr
  assert "no checkpoint exists yet" in proc.stderr and "step None" not in proc.stderr
  assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]


def test_evaluate_restores_the_parameters_only(world_dir, tmp_path):
  # The default recipe's model size (tiny's metadata would dominate the bytes read).
  default_model = ["--config.model.width=128", "--config.model.depth=4",
                   "--config.model.num_heads=4", "--config.model.mlp_dim=512",
                   "--config.model.embed_dim=128", "--config.total_steps=2",
                   "--config.optim.warmup_steps=1"]
  run_cli("mmjax.train", tiny_args(tmp_path, world_dir, *default_model))
  out = run_cli("mmjax.evaluate", ["--workdir", str(tmp_path),
                                   f"--config.tasks.default.data.data_dir={world_dir}"])
  result = json.loads(out.stdout.strip().splitlines()[-1])
  # Bytes read from disk: parameters (compressed a little) + Orbax metadata; with the AdamW
  # moments it would be ~3x (measured 0.998 here).
  assert 0.5 <= result["restore/bytes_over_param_bytes"] <= 1.2, result
  assert result["restore/param_bytes"] > 2e6
