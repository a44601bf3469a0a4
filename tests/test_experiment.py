"""The Experiment: a recipe parsed once into typed parts, with every default in one place."""
from __future__ import annotations

import os
import re

import pytest

from mmjax import experiment
from mmjax.config import recipe
from mmjax.errors import ConfigError
from mmjax.experiment import sections
from tests.conftest import ROOT, TINY


def test_the_tiny_recipe_parses_into_typed_sections():
  exp = experiment.parse(recipe.load(TINY))
  assert exp.trainer == sections.TrainerConfig(
      total_steps=12, seed=0, log_every_steps=4, nan_policy="halt", eval_batch_size=64,
      progress=False, watchdog_timeout_s=600.0, prefetch_batches=2, stop_check_every_steps=10,
      compile_threads=0)
  assert exp.optim.learning_rate == 3e-3 and exp.optim.warmup_steps == 2
  assert exp.checkpoint == sections.CheckpointConfig(every_steps=6, keep=2, async_save=True)
  assert exp.mesh.axes["data"] == -1 and dict(exp.mesh.rules)["mlp"] == "tensor"
  task = exp.tasks["default"]
  assert (task.batch_size, task.microbatches) == (16, 1)
  assert sorted(o.name for o in task.objectives) == ["av_label", "text_image"]
  assert task.data.name == "mm_world/tiny"
  assert sorted(exp.evals) == ["classification", "loss", "retrieval", "retrieval_shuffled_images"]
  assert exp.schedule.task_at(5) == "default"


def test_a_key_the_recipe_leaves_out_takes_its_dataclass_default():
  config = recipe.load(TINY)
  with config.unlocked():
    del config["stop_check_every_steps"]
    del config["optim"]["b2"]
  exp = experiment.parse(config)
  assert exp.trainer.stop_check_every_steps == sections.TrainerConfig().stop_check_every_steps
  assert exp.optim.b2 == sections.OptimConfig().b2


@pytest.mark.parametrize("where, key, message", [
    ((), "log_evry_steps", r"unknown config key 'log_evry_steps': the top level has no "
                           r"'log_evry_steps' \(did you mean 'log_every_steps'\?\); valid: .*total_steps"),
    (("optim",), "momentum", r"unknown config key optim.momentum: optim has no 'momentum'; "
                             r"valid: b1, b2, clip_norm, end_lr_fraction"),
    (("checkpoint",), "every", r"unknown config key checkpoint.every: .*did you mean 'every_steps'"),
    (("sharding",), "rule", r"unknown config key 'sharding.rule'; valid: max_replicated_params, rules"),
])
def test_a_key_no_typed_section_knows_is_refused_naming_the_section(where, key, message):
  config = recipe.load(TINY)
  node = config
  for part in where:
    node = node[part]
  with config.unlocked(), node.unlocked():
    node[key] = 1
  with pytest.raises(ConfigError, match=message):
    experiment.parse(config)


def test_nothing_outside_the_parser_reads_a_config_key_with_a_default_of_its_own():
  """Every default lives once, in its dataclass: no `config.get(key, default)` elsewhere."""
  offenders = []
  for folder, _, files in os.walk(os.path.join(ROOT, "mmjax")):
    if os.sep + "experiment" in folder or folder.endswith(os.sep + "config"):
      continue
    for f in files:
      if f.endswith(".py"):
        text = open(os.path.join(folder, f)).read()
        offenders += [f"{f}: {m}" for m in re.findall(r"config\.get\([^)]*\)", text)]
  assert not offenders, offenders


def test_training_parses_once_and_reads_only_the_experiment(monkeypatch, world_dir, tmp_path):
  """Set-up and compile read only the Experiment: its ConfigDict can be gone, and nothing
  parses the recipe's objectives again."""
  from mmjax.experiment import build
  from mmjax.training import trainer
  calls = []
  original = build.task_objectives
  monkeypatch.setattr(build, "task_objectives", lambda c: calls.append(1) or original(c))
  exp = experiment.parse(recipe.load(TINY, [f"tasks.default.data.data_dir={world_dir}"]))
  assert len(calls) == 1
  without_config = experiment.Experiment(**{**exp.__dict__, "config": None})
  report = trainer.train(without_config, str(tmp_path), compile_only=True)
  assert report["default"]["analytic_flops"] > 0
  assert len(calls) == 1
