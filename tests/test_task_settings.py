"""Per-task settings (seed_offset, lr_multiplier, token_drop, input resolution) and the
bad inputs config validation refuses before anything is built or compiled."""
from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mmjax.experiment import build
from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax.training import optimizer as optim, predict
from mmjax.training import token_drop
from mmjax.training import step as train_step
from mmjax.data import pipeline
from mmjax.errors import ConfigError
from mmjax.evaluators.loss import EvalLoss, EvalLossConfig
from mmjax.models import patchify
from mmjax.models.model_inputs import model_inputs
from mmjax.perf import flops
from mmjax.runtime.sharding import make_mesh
from mmjax.training.step import abstract_train_state
from tests.conftest import ROOT, TINY
from tests.test_train_e2e import final_params

TWO_TASKS = os.path.join(ROOT, "tests", "recipes", "two_tasks.py")


def _load(world_dir, *overrides, recipe=TINY):
  tasks = ("default", "masked_text") if recipe == TWO_TASKS else ("default",)
  return experiment.load(recipe, [f"tasks.{t}.data.data_dir={world_dir}" for t in tasks]
                         + list(overrides))


class Tiny:
  """The tiny recipe's model, optimizer, initial state and one real batch of task `task`."""

  def __init__(self, config, task="default"):
    self.config = config
    self.objectives = build.task_objectives(config)[task]
    self.spec = build.model_spec(config)
    self.optimizer = optim.make_optimizer(config.optim, config.total_steps)
    self.graphdef, init_fn, _ = abstract_train_state(self.spec, config.seed, self.optimizer)
    self.state = jax.jit(init_fn)()
    t = config.tasks[task]
    it = pipeline.make_train_iterator(t.data, batch_size=t.batch_size, seed=config.seed)
    self.batch = jax.tree.map(jnp.asarray, next(it))

  def step(self, state=None, **kw):
    fn = train_step.make_train_step(self.graphdef, self.objectives, self.optimizer,
                                    self.config.seed, modalities=self.spec.modalities, **kw)
    return jax.jit(fn)(self.state if state is None else state, self.batch)


@pytest.fixture(scope="module")
def tiny(world_dir):
  return Tiny(_load(world_dir))


# ------------------------------------------------------------------ lr_multiplier

def _delta(new, old):
  return jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.params, old.params)


def test_lr_multiplier_scales_the_whole_update(tiny):
  start, _ = tiny.step()  # past step 0, where warmup's learning rate is 0
  one, _ = tiny.step(start)
  two, _ = tiny.step(start, lr_multiplier=2.0)
  d1, d2 = _delta(one, start), _delta(two, start)
  moved = 0
  for a, b, p in zip(jax.tree.leaves(d1), jax.tree.leaves(d2), jax.tree.leaves(start.params)):
    # Equal up to the rounding of adding the steps to the weights (a few float32 ulps).
    ulps = 2 * np.spacing(np.abs(np.asarray(p)) + np.abs(b))
    assert np.all(np.abs(b - 2.0 * a) <= ulps + 1e-6 * np.abs(a))
    moved += int(np.any(a != 0))
  assert moved > 10  # the update really moved the weights
  # The optimizer's moments are shared and see the raw gradients: the same either way.
  for a, b in zip(jax.tree.leaves(one.opt_state), jax.tree.leaves(two.opt_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------ token drop

def test_token_drop_keeps_a_fixed_count_drawn_from_seed_and_step():
  rng = train_step.step_rng(0, 7)
  idx = np.asarray(token_drop.keep_indices(rng, 4, 16, 0.75))
  assert idx.shape == (4, 4) and idx.dtype == np.int32  # 16 - floor(0.75 * 16)
  for row in idx:
    assert len(set(row)) == 4 and list(row) == sorted(row) and 0 <= row.min() and row.max() < 16
  assert len({tuple(r) for r in idx}) > 1  # per example
  np.testing.assert_array_equal(idx, token_drop.keep_indices(train_step.step_rng(0, 7), 4, 16, 0.75))
  assert not np.array_equal(idx, token_drop.keep_indices(train_step.step_rng(0, 8), 4, 16, 0.75))
  assert not np.array_equal(idx, token_drop.keep_indices(train_step.step_rng(1, 7), 4, 16, 0.75))
  assert token_drop.keep_indices(rng, 2, 5, 0.99).shape == (2, 1)  # never all dropped


def test_token_drop_trains_on_kept_tokens_and_flops_count_them(tiny):
  rates = {"video": 0.5}
  before = dict(tiny.batch)
  inputs = token_drop.drop_tokens(model_inputs(tiny.batch, ("video", "text")), rates,
                                  tiny.spec.modalities, train_step.step_rng(0, 0))
  n = tiny.spec.modalities["video"].num_tokens(tuple(tiny.batch["video"].shape[1:]))
  assert inputs.keep["video"].shape == (tiny.batch["video"].shape[0], n // 2)
  assert set(inputs.keep) == {"video"}
  assert set(tiny.batch) == set(before)  # the batch is never written to
  model = nnx.merge(tiny.graphdef, tiny.state.params)
  enc = model.encode(inputs.select(("video",)))
  assert enc.tokens["video"].shape[1] == n // 2
  _, m_drop = tiny.step(token_drop=rates)
  _, m_full = tiny.step()
  # The classifier starts at zero (loss log 20 either way); the gradients see the drop.
  assert float(m_drop["grad_norm"]) != float(m_full["grad_norm"])
  assert float(m_drop["text_image/loss"]) == float(m_full["text_image/loss"])  # no video
  shapes = {k: v.shape for k, v in tiny.batch.items()}
  assert flops.pass_tokens(tiny.spec, ("video",), shapes, rates) == {"video": n // 2}
  assert (flops.train_step_flops(tiny.spec, tiny.objectives, shapes, 1, rates)
          < flops.train_step_flops(tiny.spec, tiny.objectives, shapes))
  assert (flops.tokens_per_step(tiny.spec, tiny.objectives, shapes, rates)
          == flops.tokens_per_step(tiny.spec, tiny.objectives, shapes) - 16 * (n - n // 2))


def test_evaluation_never_drops_tokens(world_dir, tiny):
  """The loss evaluator of a task with token drop equals the one of the same task without."""
  def eval_loss(config):
    ctx = predict.make_eval_context(tiny.graphdef, make_mesh({"data": 1}, jax.devices()[:1]),
                                    experiment.parse(config))
    return dict(EvalLoss("loss", EvalLossConfig(split="test"), ctx).run(tiny.state.params))
  dropped = eval_loss(_load(world_dir, "tasks.default.token_drop={'video': 0.5}"))
  assert dropped == eval_loss(tiny.config)


# ------------------------------------------------------------------ resolution

def test_a_model_for_32px_and_4_frames_trains_on_16px_and_2_frames(world_dir, tiny):
  small = Tiny(_load(world_dir, "tasks.default.data.preprocess.image.size=16",
                     "tasks.default.data.preprocess.video.frames=2"))
  assert small.batch["image"].shape[1:] == (16, 16, 3)
  assert small.batch["video"].shape[1:3] == (2, 16)
  assert small.spec == tiny.spec  # the model keeps its reference shapes
  _, metrics = small.step()
  assert np.isfinite(float(metrics["loss"]))
  model = nnx.merge(small.graphdef, small.state.params)
  emb = model.embedders["image"]
  enc = model.encode(model_inputs(small.batch, ("image",)))
  assert enc.tokens["image"].shape[1] == 4  # (16 / 8)^2 patches
  want = patchify.resize_positions(emb.positions[...], (4, 4), (2, 2))
  tok = emb(small.batch["image"])
  patches = patchify.patchify(small.batch["image"], 8) @ emb.kernel[...] + emb.bias[...]
  np.testing.assert_allclose(tok, patches + want[None] + emb.type_embedding[...], atol=1e-5)
  assert model.encode(model_inputs(small.batch, ("video",))).tokens["video"].shape[1] == 4  # 1x2x2


# ------------------------------------------------------------------ seed_offset, resume

def test_seed_offset_changes_the_data_order_only_of_its_task(world_dir):
  config = _load(world_dir)
  data = config.tasks.default.data
  first = lambda seed: next(pipeline.make_train_iterator(data, batch_size=16, seed=seed))["text"]
  assert not np.array_equal(first(0), first(3))
  settings = experiment.load(TWO_TASKS, [f"tasks.masked_text.data.data_dir={world_dir}",
                                         "tasks.masked_text.seed_offset=3"])
  from mmjax.config.task_settings import all_task_settings
  seeds = {t: s.seed(settings.seed) for t, s in all_task_settings(settings).items()}
  assert seeds == {"default": 0, "masked_text": 3}


def _train(config, workdir):
  from mmjax.training import trainer
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()  # nothing to compile but the steps
    config.progress = False
  return trainer.train(experiment.parse(config), str(workdir))


@pytest.mark.slow  # three real training runs (~40 s)
def test_two_task_run_with_per_task_settings_resumes_bit_identically(world_dir, tmp_path):
  common = ["total_steps=4", "checkpoint.every_steps=2", "log_every_steps=2",
            "optim.warmup_steps=1", "tasks.masked_text.seed_offset=5",
            "tasks.masked_text.lr_multiplier=0.5", "tasks.default.token_drop={'video': 0.5}"]
  _train(_load(world_dir, *common, recipe=TWO_TASKS), tmp_path / "whole")
  # A run stopped right after its step-2 checkpoint: its later checkpoint never happened.
  _train(_load(world_dir, *common, recipe=TWO_TASKS), tmp_path / "cut")
  shutil.rmtree(tmp_path / "cut" / "checkpoints" / "4")
  _train(_load(world_dir, *common, recipe=TWO_TASKS), tmp_path / "cut")
  a, b = final_params(tmp_path / "whole", 4), final_params(tmp_path / "cut", 4)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # The offset is in effect: without it the masked task reads other examples.
  _train(_load(world_dir, *common[:-3], recipe=TWO_TASKS), tmp_path / "plain")
  c = final_params(tmp_path / "plain", 4)
  assert any(not np.array_equal(a[k], c[k]) for k in a if "decoders" in k)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("overrides, message", [
    (["tasks.default.data.name=mm_world/huge"],
     r"tasks.default.data.name: unknown dataset 'mm_world/huge'.*mm_world/tiny"),
    (["tasks.default.data.name=no_such_dataset"],
     r"tasks.default.data.name: unknown dataset 'no_such_dataset'"),
    (["tasks.default.objectives.text_image.a=smell"], "uses modality 'smell'"),
    (["tasks.default.objectives.av_label.type=regression"],
     "av_label.type='regression': unknown objective type.*valid: "),
    (["tasks.default.weight=0.0"], "every task weight is 0"),
    (["tasks.default.weight=-1.0"], r"tasks.default.weight=-1.0: must be a finite number >= 0"),
    (["tasks.default.weight=1e999"], r"config.tasks.default.weight=inf: must be a finite"),
    (["schedule.type=interval"], "tasks.default.interval is not set"),
    (["schedule.type=interval", "tasks.default.interval=2"], "no task is due at step 1"),
    (["tasks.default.data.preprocess.image.size=20"],
     r"preprocess.image.size=20 is not divisible by model.modalities.image.patch\[0\]=8; "
     r"valid: 16, 24, 32"),
    (["tasks.default.data.preprocess.video.frames=3"],
     r"video.frames=3 is not divisible by .*\(tubelet length\)=2; valid: 2, 4, 6"),
    (["tasks.default.data.preprocess.video.size=12"], r"video.size=12 is not divisible"),
    (["tasks.default.data.preprocess.audio.samples=2000"],
     r"audio.samples=2000 makes 28 spectrogram frames.*valid samples: 1728, 2240"),
    (["tasks.default.data.preprocess.audio.num_mels=30"], r"audio.num_mels=30 is not divisible"),
    (["tasks.default.data.preprocess.text.max_len=64"],
     r"text.max_len=64 is longer than model.modalities.text.shape=\(48,\).*valid: 1..48"),
    (["tasks.default.lr_multiplier=0.0"], r"tasks.default.lr_multiplier=0.0: must be a finite"),
    (["tasks.default.lr_multiplier=-2.0"], r"lr_multiplier=-2.0: must be a finite number > 0"),
    (["tasks.default.token_drop={'video': 1.0}"], r"rate of 'video' must be a number in \[0, 1\)"),
    (["tasks.default.token_drop={'smell': 0.5}"], r"token_drop.smell: .*valid: audio, image"),
    (["tasks.default.seed_offset=0.5"], r"tasks.default.seed_offset=0.5: expected a int"),
    (["model.modalities.text.vocab_size=200"],
     r"config.model.modalities.text.vocab_size=200 is smaller than the 259 ids of "
     r"config.tasks.default.data.tokenizer \(kind 'byte'\).*use vocab_size >= 259"),
    (["tasks.default.seed_ofset=1"],
     r"has no 'seed_ofset' \(did you mean 'seed_offset'\?\); valid: .*lr_multiplier.*token_drop"),
])
def test_bad_task_input_is_refused_by_config_validation(world_dir, overrides, message):
  with pytest.raises(ConfigError, match=message):
    _load(world_dir, *overrides)


@pytest.mark.parametrize("overrides, message", [
    (["schedule.type=interval", "tasks.default.interval=1", "tasks.masked_text.interval=1"],
     r"tasks.masked_text.interval=1: task 'masked_text' never runs"),
    (["schedule.type=interval", "tasks.default.interval=1", "tasks.masked_text.interval=1",
      "schedule.order=('default', 'masked_text', 'x')"], "must list every task once"),
    (["tasks.default.weight=0.0", "tasks.masked_text.weight=0.0"], "every task weight is 0"),
    (["tasks.masked_text.token_drop={'text': 0.5}"],
     r"token_drop.text: objective 'text_mlm' predicts every text token"),
])
def test_bad_multi_task_input_is_refused_by_config_validation(world_dir, overrides, message):
  with pytest.raises(ConfigError, match=message):
    _load(world_dir, *overrides, recipe=TWO_TASKS)


def test_a_misspelt_task_key_in_a_recipe_is_refused(world_dir):
  config = _load(world_dir)
  with config.unlocked():
    config.tasks.default.lr_multipler = 2.0
  with pytest.raises(ConfigError, match=r"unknown config key tasks.default.lr_multipler.*"
                                        r"did you mean 'lr_multiplier'"):
    experiment.validate(config)
