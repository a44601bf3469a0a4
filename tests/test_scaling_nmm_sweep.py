"""The NMM sweep files: three families on one target, and the refusal of families that
score different targets."""
from __future__ import annotations

import os
import re

import pytest

from mmjax.scaling import runner, sweep
from tests.conftest import ROOT, run_cli

SWEEPS = os.path.join(ROOT, "configs", "sweeps")
NMM = os.path.join(ROOT, "configs", "mm_world_nmm.py")


def test_the_tiny_nmm_sweep_has_three_families_of_4_sizes_by_3_budgets():
  runs = sweep.load_sweep(os.path.join(SWEEPS, "nmm_tiny.py"))
  configs = sweep.validate(runs)
  by_family = {}
  for r in runs:
    by_family.setdefault(dict(r.tags)["family"], []).append(configs[r.name])
  assert sorted(by_family) == ["early", "early_moe", "late"]
  for family, exps in by_family.items():
    assert len({(e.model.width, e.model.depth) for e in exps}) >= 4, family
    assert len({e.total_steps * e.tasks["default"].batch_size for e in exps}) >= 3, family
  late = by_family["late"][0]
  assert late.model.fusion.encoder_depth == 0  # the encoder grows with the decoder
  # The same file submits as one SLURM job array, as every sweep does.
  assert "--array=0-35" in runner.slurm_submission("/tmp/o", runs)


def test_families_with_different_targets_are_refused_naming_both():
  runs = sweep.family_grid({"early": f"{NMM}:scaling_early", "late": f"{NMM}:scaling_late"},
                           [sweep.ModelSize(16, 1)], [sweep.Length(10, 8)],
                           extra={"late": ("evals.loss.split=test",)})
  with pytest.raises(sweep.SweepError, match=r"family 'late'.*family 'early'.*must share"):
    sweep.validate(runs)


@pytest.mark.slow  # validates 45 runs in a CLI process: ~15 s
def test_the_gpu_sweep_dry_run_prints_flops_and_nominal_h100_hours(tmp_path):
  proc = run_cli("mmjax.scaling", ["sweep", "--sweep", os.path.join(SWEEPS, "nmm_gpu.py"),
                                   "--out", str(tmp_path / "o"), "--dry-run"])
  lines = [l for l in proc.stderr.splitlines() if re.search(r"FLOPs, .* H100 hours", l)]
  assert len(lines) == 46  # 45 runs and the total
  assert "NOMINAL MFU" in lines[-1]
  flops = [float(l.split(": ")[1].split(" FLOPs")[0]) for l in lines[:-1]]
  assert min(flops) > 1e15 and sorted(flops) != flops  # real counts, in the sweep's order
  assert not (tmp_path / "o").exists()
