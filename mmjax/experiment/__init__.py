"""The experiment: a recipe loaded, overridden and parsed once into typed parts.

Owns the parse of a recipe's ConfigDict (mmjax/config) into the `Experiment` that training,
evaluation and sweeps use: the model spec, each task's settings, objectives and data, the
task schedule, the evaluators' configs, and the optimizer, checkpoint, trainer and mesh
sections. May import config, errors, the component packages (models, objectives,
evaluators, schedules, data) and runtime; never training, checkpoint or scaling.
"""
from __future__ import annotations

from typing import Sequence

import ml_collections

from mmjax.config import recipe
from mmjax.experiment.experiment import Experiment, Task, parse


def load(recipe_name: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Recipe + overrides, checked by a full parse (the ConfigDict, for tools that edit it)."""
  config = recipe.load(recipe_name, overrides)
  parse(config)
  return config


def validate(config: ml_collections.ConfigDict) -> Experiment:
  """The parse of `config`: raises ConfigError naming the first invalid key."""
  return parse(config)


__all__ = ["Experiment", "Task", "load", "parse", "validate"]
