"""Refactors leave training bit-identical: the parameters after the tiny recipe's 12 steps
have the digest recorded before the redesign of 2026-12 moved a single module
(tests/param_digest.py; under tests/run.sh's XLA flags, which tests/conftest.py sets for
plain pytest too). The AGD tiny recipe's digest is checked by tests/test_agd_e2e.py, whose
uninterrupted run is that recipe's run.

This is also the fast tier's one real run of the loop: it trains, checkpoints, resumes and
evaluates through the real command lines."""
from __future__ import annotations

import json

from tests.conftest import run_cli, tiny_args
from tests.param_digest import TINY_12_STEPS, param_digest
from tests.test_train_e2e import read_metrics


def test_tiny_run_trains_to_the_recorded_digest_then_resumes_and_evaluates(world_dir, tmp_path):
  run_cli("mmjax.train", tiny_args(tmp_path, world_dir))
  assert param_digest(tmp_path / "checkpoints" / "12") == TINY_12_STEPS
  # Resume: the same workdir with a longer run restores step 12 and trains 2 more steps.
  resumed = run_cli("mmjax.train", tiny_args(tmp_path, world_dir, "--config.total_steps=14"))
  assert "resumed from" in resumed.stderr
  rows = [r for r in read_metrics(tmp_path) if "train/default/loss" in r]
  assert [r["step"] for r in rows][-1] == 14
  assert param_digest(tmp_path / "checkpoints" / "14") != TINY_12_STEPS
  out = run_cli("mmjax.evaluate", ["--workdir", str(tmp_path)])
  metrics = json.loads(out.stdout.strip().splitlines()[-1])
  assert metrics["step"] == 14
  losses = [v for k, v in metrics.items() if k.endswith("/loss")]
  assert losses and all(0.0 < v < 20.0 for v in losses), metrics
