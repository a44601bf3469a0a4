"""4M-style multimodal masking (objectives/multimodal_masked.py, token_budgets.py): the
Dirichlet split of the budgets, disjoint exact input and target sets, an encoder that sees
only its inputs, refusals at validation, and the recipe's variants."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import experiment, objectives
from mmjax.config import recipe
from mmjax.errors import ConfigError
from mmjax.models.model_inputs import model_inputs
from mmjax.objectives import token_budgets as tb
from tests.conftest import ROOT, run_cli
from tests.test_models import MODALITIES, small_model
from tests.test_objectives import batch as make_batch
from tests.test_train_e2e import read_metrics

RECIPE = os.path.join(ROOT, "configs", "mm_world_fourm_variants.py")
KINDS = {n: s.kind for n, s in MODALITIES.items()}
ALL = ("image", "video", "audio", "text")  # 4 + 8 + 4 + 12 = 28 tokens per example


def fourm(**kw):
  cfg = dict(type="multimodal_masked", modalities=ALL, input_budget=6, target_budget=5, **kw)
  return objectives.make_objective("fourm", cfg, KINDS)


def test_realised_shares_match_the_dirichlet_means():
  # Room everywhere (64 tokens per modality, budget 16), so only the Dirichlet sets the split.
  alpha = np.array([0.5, 1.0, 2.0, 4.5])
  n, budget = 6000, 16
  quotas = tb.dirichlet_quotas(jax.random.key(1), tuple(alpha), n, budget)
  chosen = tb.choose_tokens(jax.random.key(2), quotas, [jnp.ones((n, 64), bool)] * 4, budget)
  counts = np.stack([np.asarray(c).sum(1) for c in chosen], 1)   # [n, 4]
  assert np.all(counts.sum(1) == budget)
  shares = counts.mean(0) / budget
  # The standard error of a share over 6000 draws is below 0.003 (Dirichlet variance).
  np.testing.assert_allclose(shares, alpha / alpha.sum(), atol=0.01)
  # Per example, each count is its quota rounded (within 1) before the exact total moves at
  # most M - 1 = 3 slots: within M = 4 of it; almost always within 1.
  deviation = np.abs(counts - np.asarray(quotas))
  assert deviation.max() < 4 and np.mean(deviation < 1) > 0.9


def test_a_full_modality_spills_to_the_others_and_the_budget_stays_exact():
  # Modality 0 has 2 tokens and nearly the whole quota; the rest fill its place.
  quotas = jnp.asarray([[9.7, 0.1, 0.2]] * 50)
  eligible = [jnp.ones((50, 2), bool), jnp.ones((50, 8), bool), jnp.ones((50, 8), bool)]
  chosen = tb.choose_tokens(jax.random.key(0), quotas, eligible, 10)
  counts = np.stack([np.asarray(c).sum(1) for c in chosen], 1)
  assert np.all(counts[:, 0] == 2) and np.all(counts.sum(1) == 10)
  # The 8 spilled slots go by the other two quotas (1:2), each rounded: about 8/3 and 16/3.
  assert abs(counts[:, 1].mean() - 8 / 3) < 0.5 and abs(counts[:, 2].mean() - 16 / 3) < 0.5


def test_inputs_and_targets_are_disjoint_valid_and_exactly_the_budgets():
  o = fourm(input_alpha=(0.5,), target_alpha=(2.0, 1.0, 1.0, 0.5))
  b = make_batch(64)
  text_mask = np.ones((64, 12), bool)
  text_mask[:, 9:] = False          # padding: never chosen
  b["text_mask"] = jnp.asarray(text_mask)
  present = np.ones(64, bool)
  present[::4] = False              # audio absent from a quarter of the examples
  b["audio_present"] = jnp.asarray(present)
  x = model_inputs(b, ALL)
  sizes = {m: (64, MODALITIES[m].num_tokens()) for m in ALL}
  is_in, is_tgt = o.split(jax.random.key(3), x, sizes)
  for m in ALL:
    assert not np.any(np.asarray(is_in[m]) & np.asarray(is_tgt[m])), m
  assert not np.any(np.asarray(is_in["text"])[:, 9:] | np.asarray(is_tgt["text"])[:, 9:])
  assert not np.any(np.asarray(is_in["audio"])[~present] | np.asarray(is_tgt["audio"])[~present])
  assert np.all(sum(np.asarray(is_in[m]).sum(1) for m in ALL) == 6)
  assert np.all(sum(np.asarray(is_tgt[m]).sum(1) for m in ALL) == 5)


def test_the_encoder_sees_only_its_inputs_and_the_decoder_no_target_content():
  o = fourm()
  model = small_model(objectives.heads_for([o]))
  b, rng = make_batch(4), jax.random.key(7)
  sizes = {m: (4, MODALITIES[m].num_tokens()) for m in ALL}
  is_in, is_tgt = o.split(rng, model_inputs(b, ALL), sizes)  # what decoded() draws from rng
  is_in, is_tgt = np.asarray(is_in["text"]), np.asarray(is_tgt["text"])
  assert is_in.any() and is_tgt.any()
  out = np.asarray(o.decoded(model, b, rng)[0])

  def decoded_with_text_changed(where):
    ids = np.asarray(b["text"]).copy()
    ids[where] = np.where(ids[where] == 5, 6, 5)   # another id at those tokens
    return np.asarray(o.decoded(model, dict(b, text=jnp.asarray(ids)), rng)[0])
  # Targets and tokens that are neither: the predictions do not change at all.
  np.testing.assert_array_equal(decoded_with_text_changed(~is_in), out)
  # Inputs: they do.
  assert np.abs(decoded_with_text_changed(is_in) - out).max() > 1e-4
  loss, metrics, _ = o(model, b, rng, None)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(float(loss), np.mean([float(metrics[f"{m}/loss"]) for m in ALL]),
                             rtol=1e-6)   # every modality has targets in this batch


@pytest.mark.parametrize("kw,field", [
    (dict(input_budget=20, target_budget=9), "input_budget"),      # 29 > 28 tokens
    (dict(input_alpha=(0.0,)), "input_alpha"),
    (dict(target_alpha=(1.0, -1.0, 1.0, 1.0)), "target_alpha"),
    (dict(input_alpha=(1.0, 1.0)), "input_alpha"),                 # neither 1 nor 4 values
    (dict(modalities=("image",)), "modalities"),
])
def test_bad_values_are_refused_naming_the_key(kw, field):
  def parse():
    cfg = dict(dict(type="multimodal_masked", modalities=ALL, input_budget=6,
                    target_budget=5), **kw)
    o = objectives.make_objective("fourm", cfg, KINDS)
    from mmjax.experiment.checks import check_against_model
    check_against_model("t", [o], small_model(objectives.heads_for([o])).spec)
  with pytest.raises(ConfigError, match=field):
    parse()


def test_the_recipe_refuses_a_budget_beyond_its_tokens_before_building():
  # image 16 + audio 16 + video 8 + text 48 = 88 tokens in the recipe's model.
  c = recipe.load(f"{RECIPE}:tiny_fourm", ["tasks.pretrain.objectives.fourm."
                                           "input_budget=80"])
  with pytest.raises(ConfigError, match=r"objectives\.fourm\.input_budget=80.*88 tokens"):
    experiment.parse(c)


def test_every_variant_parses_and_the_arms_differ_only_in_pretraining():
  parsed = {v: experiment.parse(recipe.load(f"{RECIPE}:{v}"))
            for v in ("tiny_fourm", "tiny_masked", "tiny_scratch")}
  kinds = {v: sorted(type(o).__name__ for t in e.tasks.values() for o in t.objectives)
           for v, e in parsed.items()}
  assert kinds == {"tiny_fourm": ["Classification", "MultimodalMasked"],
                   "tiny_masked": ["Classification"] + ["Masked"] * 4,
                   "tiny_scratch": ["Classification"]}
  finetune = {v: e.tasks["finetune"].settings.batch_size for v, e in parsed.items()}
  assert len(set(finetune.values())) == 1


@pytest.mark.slow
def test_tiny_fourm_pretrains_finetunes_and_evaluates(world_dir, tmp_path):
  run_cli("mmjax.train", ["--config", f"{RECIPE}:tiny_fourm", "--workdir", str(tmp_path),
                          f"--config.tasks.pretrain.data.data_dir={world_dir}",
                          f"--config.tasks.finetune.data.data_dir={world_dir}"])
  rows = read_metrics(tmp_path)
  pre = [r for r in rows if "train/pretrain/fourm/loss" in r]
  assert pre and all(np.isfinite(r["train/pretrain/fourm/loss"]) for r in pre)
  assert any("finetune/classification/accuracy" in r for r in rows)
