"""benchmarks/agd_quality.py's ablation flags build the configs they name (no training)."""
from __future__ import annotations

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
  spec = importlib.util.spec_from_file_location(
      "agd_quality", os.path.join(ROOT, "benchmarks", "agd_quality.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_default_flags_keep_every_task_and_the_recipe_model():
  bench = _bench()
  a = bench.parser().parse_args([])
  config = bench.quality_config(a, a.steps)
  assert sorted(config.tasks) == ["a2t", "av_2f", "av_4f", "mlm", "t2i_16", "t2i_32"]
  assert config.model.posemb == "learn" and config.tasks.t2i_32.weight == 2.0
  assert config.optim.warmup_steps == 50
  assert {e.every_steps for e in config.evals.values()} == {700}


def test_ablation_flags_reach_the_agd_and_the_alone_configs():
  bench = _bench()
  a = bench.parser().parse_args([
      "--tasks", "t2i_32,av_4f", "--steps", "300", "--warmup", "21", "--curve_every", "25",
      "--set", "model.posemb=sincos", "--set", "tasks.av_4f.weight=5"])
  agd = bench.quality_config(a, a.steps, bench._names(a.tasks))
  assert sorted(agd.tasks) == ["av_4f", "t2i_32"]
  assert sorted(agd.evals) == ["av_4f_loss", "t2i_32_loss"]
  assert agd.tasks.av_4f.weight == 5.0 and agd.model.posemb == "sincos"
  assert agd.optim.warmup_steps == 21 and agd.evals.t2i_32_loss.every_steps == 25
  alone = bench.quality_config(a, 200, ["t2i_32"])  # warm-up scaled to the shorter run
  assert list(alone.tasks) == ["t2i_32"] and alone.model.posemb == "sincos"
  assert alone.optim.warmup_steps == 14 and alone.total_steps == 200
  assert bench._steps("t2i_32=200,mlm=100") == {"t2i_32": 200, "mlm": 100}
