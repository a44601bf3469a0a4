"""The experiment: a recipe loaded, overridden and checked as a whole.

Owns the parse of a recipe's ConfigDict into what training, evaluation and sweeps use
(objectives per task, the model spec). May import every component package (models,
objectives, evaluators, schedules, data, runtime) and config; never training or checkpoint.
"""
from __future__ import annotations

from typing import Sequence

import ml_collections

from mmjax.config.recipe import apply_override, load_recipe
from mmjax.experiment.checks import validate


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Recipe + overrides, validated."""
  config = load_recipe(spec)
  for o in overrides:
    apply_override(config, o)
  validate(config)
  return config
