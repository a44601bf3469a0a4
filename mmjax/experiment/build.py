"""From a config to the parts it names: each task's objectives and the model spec."""
from __future__ import annotations

from mmjax import objectives as objectives_lib
from mmjax.models.spec import ModelSpec, spec_from_config


def task_objectives(config) -> dict[str, tuple]:
  """{task: objectives}, each parsed and checked against the model's modalities."""
  kinds = {n: m.get("kind") for n, m in config.model.modalities.items()}
  return {t: objectives_lib.make_objectives(task.objectives, kinds, f"tasks.{t}.objectives")
          for t, task in config.tasks.items()}


def model_spec(config, objectives: dict[str, tuple] | None = None) -> ModelSpec:
  """The model holds the heads of every task's objectives (tasks share one model).

  objectives: task_objectives(config), when the caller has built them already.
  """
  objectives = objectives if objectives is not None else task_objectives(config)
  heads = objectives_lib.heads_for([o for objs in objectives.values() for o in objs])
  return spec_from_config(config.model, heads)
