"""End-to-end: the alternating-gradient recipe (configs/mm_world_agd.py:tiny) through the
real command lines: every task trains, logs and is evaluated; a kill -9 then a rerun
continues the same task sequence to bit-identical parameters, and both reach the digest
recorded before the redesign (tests/param_digest.py)."""
from __future__ import annotations

import json
import os

import pytest

from mmjax import schedules
from mmjax import experiment
from mmjax.config import recipe as config_lib
from tests.conftest import ROOT, run_cli
from tests.param_digest import AGD_TINY_24_STEPS, param_digest
from tests.test_train_e2e import killed_and_resumed_matches_uninterrupted, read_metrics

pytestmark = pytest.mark.slow

AGD_TINY = os.path.join(ROOT, "configs", "mm_world_agd.py") + ":tiny"
TASKS = list(config_lib.load_recipe(AGD_TINY).tasks)


def agd_args(workdir, data_dir, *overrides) -> list[str]:
  return ["--config", AGD_TINY, "--workdir", str(workdir),
          *[f"--config.tasks.{t}.data.data_dir={data_dir}" for t in TASKS], *overrides]


def steps_per_task(total: int) -> dict[str, int]:
  schedule = experiment.parse(config_lib.load_recipe(AGD_TINY)).schedule
  return {t: sum(schedule.task_at(s) == t for s in range(total)) for t in TASKS}


def test_agd_tiny_killed_then_resumed_continues_the_task_sequence_bit_identically(
    world_dir, tmp_path):
  # The recipe's own 24 steps, so the uninterrupted run is also the digest check (one run
  # fewer in the suite); saving every 2 steps does not change what is trained.
  total = config_lib.load_recipe(AGD_TINY).total_steps
  common = ["--config.checkpoint.every_steps=2"]
  a = killed_and_resumed_matches_uninterrupted(world_dir, tmp_path, common, total, args=agd_args)
  assert len(a) > 20
  assert param_digest(tmp_path / "uninterrupted" / "checkpoints" / str(total)) == AGD_TINY_24_STEPS
  want = steps_per_task(total)
  assert sum(n > 0 for n in want.values()) >= 4
  for run in ("uninterrupted", "killed"):
    last = [r for r in read_metrics(tmp_path / run) if "perf/mfu" in r][-1]
    assert {t: last[f"train/{t}/steps"] for t in TASKS} == want, run
    assert last["perf/compiles"] == len(TASKS)
  # The final eval reports every task (its own validation loss at least).
  evals = [r for r in read_metrics(tmp_path / "uninterrupted") if any("_loss/" in k for k in r)]
  assert evals and evals[-1]["step"] == total
  for t in TASKS:
    assert f"{t}/{t}_loss/loss" in evals[-1], sorted(evals[-1])
  acct = json.load(open(tmp_path / "uninterrupted" / "accounting.json"))
  assert set(acct["compile"]) == set(TASKS)
