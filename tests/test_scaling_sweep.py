"""Sweep files and designs: names, overrides, iso-FLOP sizing, whole-sweep validation."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mmjax.scaling import counts, runner, sweep
from mmjax.scaling.sweep import Length, ModelSize, Run
from tests.conftest import ROOT, cli_env, run_cli

BASE = os.path.join(ROOT, "configs", "mm_world.py") + ":scaling"


def test_grid_names_and_overrides_follow_the_design():
  runs = sweep.grid(BASE, [ModelSize(32, 2), ModelSize(64, 3)], [Length(100, 16), Length(300, 16)])
  assert [r.name for r in runs] == ["w32d2-s100b16", "w32d2-s300b16", "w64d3-s100b16",
                                    "w64d3-s300b16"]
  o = dict(x.split("=") for x in runs[2].overrides)
  # Heads and MLP follow the width; checkpoint and evals happen once, at the end.
  assert o == {"model.width": "64", "model.depth": "3", "model.num_heads": "4",
               "model.mlp_dim": "256", "total_steps": "100", "tasks.default.batch_size": "16",
               "optim.warmup_steps": "10", "checkpoint.every_steps": "100",
               "evals.loss.every_steps": "100"}
  configs = sweep.validate(runs)
  assert configs["w64d3-s300b16"].model.num_heads == 4
  assert configs["w64d3-s300b16"].total_steps == 300


def test_fusion_and_moe_axes_use_the_one_key_table():
  runs = sweep.grid(BASE, [ModelSize(32, 1)], [Length(10, 8)], fusions=("early", "late"),
                    moe=(None, 4))
  assert [r.name for r in runs] == ["early-w32d1-s10b8", "early-moe4-w32d1-s10b8",
                                    "late-w32d1-s10b8", "late-moe4-w32d1-s10b8"]
  assert f"{sweep.KEYS['fusion']}=late" in runs[2].overrides
  assert f"{sweep.KEYS['moe_experts']}=4" in runs[1].overrides
  assert f"{sweep.KEYS['moe']}=moe" in runs[1].overrides
  configs = sweep.validate(runs)  # fusion types and MoE as the recipes spell them today
  assert [sweep.fusion_of(configs[r.name]) for r in runs] == ["early", "early", "late", "late"]
  assert configs[runs[1].name].model.ffn.num_experts == 4


def test_iso_flop_trains_each_size_on_c_over_6n_tokens():
  sizes = [ModelSize(16, 1), ModelSize(32, 2), ModelSize(64, 2)]
  budgets = [3e11, 1e12]
  runs = sweep.iso_flop(BASE, budgets, sizes, batch_size=16, params_fn=counts.params_of,
                        tokens_per_example_fn=counts.tokens_per_example_of, min_steps=5)
  configs = sweep.validate(runs)
  assert len(runs) == 6 and len({r.name for r in runs}) == 6
  for r in runs:
    c = dict(r.tags)["budget"]
    cfg = configs[r.name]
    n = counts.param_count(cfg)
    d = cfg.total_steps * 16 * counts.tokens_per_example(cfg, "default")
    assert 6 * n * d == pytest.approx(c, rel=0.02), r.name
  assert counts.tokens_per_example(configs[runs[0].name], "default") == 16 + 48  # audio + text


def test_iso_flop_max_steps_bounds_small_models_at_large_budgets():
  sizes = [ModelSize(16, 1), ModelSize(32, 2), ModelSize(64, 2)]
  kw = dict(batch_size=16, params_fn=counts.params_of,
            tokens_per_example_fn=counts.tokens_per_example_of, min_steps=5)
  every = sweep.iso_flop(BASE, [1e12], sizes, **kw)
  steps = {r.name: int(dict(o.split("=") for o in r.overrides)["total_steps"]) for r in every}
  cap = sorted(steps.values())[1]  # keeps the two shortest runs
  bounded = sweep.iso_flop(BASE, [1e12], sizes, max_steps=cap, **kw)
  assert {r.name for r in bounded} == {n for n, s in steps.items() if s <= cap}
  assert len(bounded) == 2 and "c1e12-w16d1" not in {r.name for r in bounded}


def test_the_isoflop_sweep_brackets_each_budget_with_sizes():
  runs = sweep.load_sweep(os.path.join(ROOT, "configs", "sweeps", "isoflop_tiny.py"))
  configs = sweep.validate(runs)
  by_budget = {}
  for r in runs:
    cfg = configs[r.name]
    by_budget.setdefault(dict(r.tags)["budget"], set()).add((cfg.model.width, cfg.model.depth))
  assert len(by_budget) >= 3 and all(len(s) >= 4 for s in by_budget.values())


def test_duplicates_and_invalid_overrides_are_all_reported_before_anything_runs(tmp_path):
  sweep_file = tmp_path / "bad.py"
  sweep_file.write_text(
      "from mmjax.scaling.sweep import Run\n"
      "def get_sweep():\n"
      f"  return [Run('a', {BASE!r}, ('model.width=32',)),\n"
      f"          Run('a', {BASE!r}, ('model.width=48',)),\n"
      f"          Run('b', {BASE!r}, ('model.widht=32',)),\n"
      f"          Run('c', {BASE!r}, ('model.fusion.type=sideways',))]\n")
  out = tmp_path / "out"
  proc = run_cli("mmjax.scaling", ["sweep", "--sweep", str(sweep_file), "--out", str(out)],
                 check=False)
  assert proc.returncode == 2, proc.stderr
  err = proc.stderr
  assert "3 problem(s) in the sweep, nothing was run" in err
  assert "duplicate run name 'a' (runs 0 and 1)" in err
  assert "run 'b': unknown config key 'model.widht'" in err and "did you mean 'width'" in err
  assert "run 'c': config.model.fusion.type='sideways'" in err
  assert not out.exists()


def test_a_recipe_is_not_a_sweep(tmp_path):
  with pytest.raises(sweep.SweepError, match="that is a recipe, not a sweep"):
    sweep.load_sweep(os.path.join(ROOT, "configs", "mm_world.py"))
  with pytest.raises(sweep.SweepError, match="no such file"):
    sweep.load_sweep(str(tmp_path / "nope.py"))


def test_the_tiny_sweep_spans_enough_sizes_and_budgets():
  runs = sweep.load_sweep(os.path.join(ROOT, "configs", "sweeps", "tiny.py"))
  configs = sweep.validate(runs)
  assert len(runs) >= 12
  assert len({(c.model.width, c.model.depth) for c in configs.values()}) >= 4
  assert len({c.total_steps * c.tasks["default"].batch_size for c in configs.values()}) >= 3


def test_print_launcher_and_slurm_dry_run(tmp_path):
  args = ["sweep", "--sweep", os.path.join(ROOT, "configs", "sweeps", "tiny.py"),
          "--out", str(tmp_path / "o")]
  proc = run_cli("mmjax.scaling", args + ["--launcher", "print"])
  lines = proc.stdout.splitlines()
  assert len(lines) == 15 and lines[0].startswith("python -m mmjax.train --config ")
  assert f"--workdir {tmp_path}/o/w16d1-s100b32" in lines[0]
  proc = run_cli("mmjax.scaling", args + ["--launcher", "slurm", "--dry-run",
                                          "--sbatch-args", "--time=60 --gpus-per-node=1"])
  assert "--array=0-14" in proc.stdout and "--time=60 --gpus-per-node=1" in proc.stdout
  assert "launch/slurm.sbatch --array-args" in proc.stdout
  assert not (tmp_path / "o").exists()  # dry runs write nothing


def test_a_reader_that_goes_away_ends_the_cli_quietly(tmp_path):
  """`python -m mmjax.scaling sweep --launcher print | head`: no BrokenPipeError traceback."""
  # The read end is closed before the CLI prints (it validates the sweep first, seconds), so
  # its first write hits a closed pipe every time -- what `head` does after its lines.
  proc = subprocess.Popen(
      [sys.executable, "-m", "mmjax.scaling", "sweep", "--sweep",
       os.path.join(ROOT, "configs", "sweeps", "tiny.py"), "--out", str(tmp_path / "o"),
       "--launcher", "print"], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  proc.stdout.close()
  _, err = proc.communicate(timeout=300)
  assert "Traceback" not in err and "BrokenPipe" not in err, err
  assert proc.returncode == 1


def test_status_needs_final_checkpoint_and_final_eval_row(tmp_path):
  cfg = sweep.validate([Run("r", BASE, ("total_steps=8", "checkpoint.every_steps=8",
                                        "evals.loss.every_steps=8", "optim.warmup_steps=2"))])["r"]
  wd = tmp_path / "r"
  assert runner.status(str(wd), cfg) == "missing"
  (wd / "checkpoints" / "8.orbax-checkpoint-tmp-1").mkdir(parents=True)
  assert runner.status(str(wd), cfg) == "unfinished"  # a save in progress is not a checkpoint
  (wd / "checkpoints" / "8").mkdir()
  (wd / "metrics.jsonl").write_text('{"step": 8, "train/default/loss": 3.0}\n')
  assert runner.status(str(wd), cfg) == "unfinished"  # no eval row yet
  with open(wd / "metrics.jsonl", "a") as f:
    f.write('{"step": 8, "default/loss/caption_mlm/loss": 2.0}\n{"step": 8, "tor')
  assert runner.status(str(wd), cfg) == "finished"  # a torn last line is ignored


def test_run_counts_prefer_the_trainers_figures_and_derive_them_for_older_workdirs():
  cfg = sweep.validate([Run("r", BASE, ("tasks.default.batch_size=8",))])["r"]
  derived = counts.run_counts(cfg, {}, step=10)
  n = counts.param_count(cfg)
  assert derived == dict(params=n, examples=80.0, tokens=80.0 * 64, flops=6.0 * n * 80 * 64)
  trainer = {"model/params": 5.0, "train/tokens": 6.0, "perf/flops": 7.0, "train/examples": 8.0}
  assert counts.run_counts(cfg, trainer, step=10) == dict(params=5.0, tokens=6.0, flops=7.0,
                                                           examples=8.0)
