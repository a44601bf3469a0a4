"""The experiment: a recipe's ConfigDict parsed once into typed parts.

`parse(config)` reads every key of the recipe exactly once: the model spec, each task's
settings, objectives and data section, the task schedule, the evaluators' configs, and the
optimizer, checkpoint, trainer and mesh sections. Training, evaluation and sweeps take the
`Experiment`; nothing after it reads the ConfigDict again (it is kept only to be written
to the workdir's config.json, and for the data pipeline's own section).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mmjax import evaluators, schedules
from mmjax.config.task_settings import TaskSettings, task_settings
from mmjax.experiment import build, checks, sections
from mmjax.models.spec import ModelSpec


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """One task: what it reads (its data section), what it optimises, and how it trains."""
  name: str
  settings: TaskSettings
  objectives: tuple
  data: Any  # the task's `data` section, read by mmjax/data/pipeline.py

  @property
  def batch_size(self) -> int:
    return self.settings.batch_size

  @property
  def microbatches(self) -> int:
    return self.settings.microbatches

  def seed(self, base_seed: int) -> int:
    return self.settings.seed(base_seed)


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
  config: Any  # the ConfigDict it was parsed from: written to config.json, never re-read
  trainer: sections.TrainerConfig
  optim: sections.OptimConfig
  checkpoint: sections.CheckpointConfig
  mesh: sections.MeshConfig
  model: ModelSpec
  tasks: Mapping[str, Task]
  schedule: Any  # the task schedule: task_at(step) -> task name (mmjax/schedules)
  evals: Mapping[str, Any]  # evaluator name -> its parsed config (mmjax/evaluators)

  @property
  def objectives(self) -> dict[str, tuple]:
    return {name: task.objectives for name, task in self.tasks.items()}

  @property
  def total_steps(self) -> int:
    return self.trainer.total_steps


def parse(config) -> Experiment:
  """The typed experiment of a loaded recipe; raises ConfigError naming the first bad key.
  Cheap: builds no model and reads no data."""
  checks.check_top_level(config)
  trainer = sections.trainer_config(config)
  objectives = build.task_objectives(config)  # parses every objective section
  spec = build.model_spec(config, objectives)  # parses model, fusion, ffn, modalities
  tasks = {}
  for name, task_cfg in config.tasks.items():
    settings = task_settings(task_cfg, name)
    checks.check_task(name, task_cfg, settings, objectives[name], spec)
    tasks[name] = Task(name, settings, objectives[name], task_cfg.data)
  schedule = schedules.make_schedule(config.get("schedule", {"type": "weighted"}),
                                     {n: t.settings for n, t in tasks.items()}, trainer.seed)
  mesh = sections.mesh_config(config)
  evals = {name: evaluators.parse_eval(name, ev, objectives) for name, ev in config.evals.items()}
  return Experiment(config=config, trainer=trainer, optim=sections.optim_config(config),
                    checkpoint=sections.checkpoint_config(config), mesh=mesh, model=spec,
                    tasks=tasks, schedule=schedule, evals=evals)
