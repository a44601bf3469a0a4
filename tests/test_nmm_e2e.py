"""The tiny NMM recipe through the real command lines: next-token training of a prefix-LM
on image-caption pairs, then `evaluate` of its test-split loss and captions, and `generate`."""
import json
import math
import os

import pytest

from mmjax import experiment
from mmjax.config import recipe
from mmjax.scaling import accounting
from tests.conftest import ROOT, run_cli
from tests.test_train_e2e import read_metrics

NMM = os.path.join(ROOT, "configs", "mm_world_nmm.py")


def test_the_tiny_nmm_variants_parse():
  for variant, fusion in (("tiny_early", "EarlyFusionConfig"),
                          ("tiny_late", "LateDecoderConfig")):
    exp = experiment.parse(recipe.load(f"{NMM}:{variant}"))
    assert type(exp.model.fusion).__name__ == fusion
    assert [o.causal_modalities for o in exp.tasks["default"].objectives] == [("text",)]
  for variant, kind in (("tiny_early_packed", "pairs"), ("tiny_early_interleaved", "interleaved")):
    exp = experiment.parse(recipe.load(f"{NMM}:{variant}"))
    assert exp.tasks["default"].data.packing.kind == kind


def test_the_full_nmm_variants_parse_with_nmm_moe_and_interleaved_documents():
  for variant in ("early", "late", "early_moe", "tiny_early_moe"):
    exp = experiment.parse(recipe.load(f"{NMM}:{variant}"))
    # Packing refuses late_decoder, so late trains on pairs alone.
    tasks = ["default"] if variant in ("late", "tiny_early_moe") else ["default", "interleaved"]
    assert list(exp.tasks) == tasks, variant
    if "interleaved" in exp.tasks:
      assert exp.tasks["interleaved"].data.packing.kind == "interleaved"
    if variant.endswith("_moe"):   # NMM's setting
      ffn = exp.model.ffn
      assert (ffn.top_k, ffn.routing, ffn.lb_loss_weight) == (1, "dropless", 0.01)
  config = recipe.load(NMM)   # the default variant is `early`, captioned from BOS + 1 byte
  assert config.tasks.default.data.name == "mm_world/default"
  assert config.evals.captioning.prompt_tokens == 2
  assert config.evals.captioning_bos.prompt_tokens == 1


@pytest.mark.slow
def test_tiny_nmm_early_trains_and_evaluates(world_dir, tmp_path):
  run_cli("mmjax.train", ["--config", f"{NMM}:tiny_early", "--workdir", str(tmp_path),
                          f"--config.tasks.default.data.data_dir={world_dir}"])
  rows = read_metrics(tmp_path)
  losses = [r["train/default/loss"] for r in rows if "train/default/loss" in r]
  assert losses[-1] < losses[0], losses
  # The scaling sweeps' accounting of this run, from its config, against the trainer's count.
  exp = experiment.parse(recipe.load(f"{NMM}:tiny_early"))
  recorded = [r["perf/flops"] for r in rows if r.get("step") == exp.total_steps
              and "perf/flops" in r][-1]
  assert accounting.trainer_flops(exp, exp.total_steps) == pytest.approx(recorded, rel=0.01)
  out = run_cli("mmjax.evaluate", ["--workdir", str(tmp_path)])
  metrics = json.loads(out.stdout.strip().splitlines()[-1])
  loss = metrics["default/loss/caption/loss"]
  assert 0.0 < loss < math.log(259), metrics   # below a uniform guess over the byte vocab
  assert metrics["default/loss/caption/perplexity"] > 1.0
  cap = {k.split("/", 2)[2]: v for k, v in metrics.items() if k.startswith("default/captioning/")}
  assert cap["num_examples"] == 64.0
  # The two evaluators score the same targets: per-token and per-batch means agree closely.
  assert abs(cap["loss"] - loss) < 0.05 * loss, (cap, loss)
  assert cap["perplexity"] == pytest.approx(math.exp(cap["loss"]))
  assert {f"field_acc/{f}" for f in ("shape", "colour", "size", "position")} <= set(cap)
  assert all(0.0 <= cap[k] <= 1.0 for k in cap if k.startswith(("field_acc", "exact")))
  out = run_cli("mmjax.generate", ["--workdir", str(tmp_path), "--n", "3", "--prompt", "a"])
  rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
  assert [r["id"] for r in rows] == [0, 1, 2]
  assert all(r["prompt"] == "a" and r["generated"].startswith("a") and r["reference"]
             for r in rows), rows
  bad = run_cli("mmjax.generate", ["--workdir", str(tmp_path), "--prompt", "x" * 60],
                check=False)
  assert bad.returncode == 1 and "text length 48" in bad.stderr, bad.stderr
