"""Evaluators, selected by `evals.<name>.type`.

Each type has a frozen dataclass config (defaults + checks; every config has `task`,
`split` and `every_steps`) whose `check(task_objectives, key)` cross-checks it before anything is built and whose
`build(name, ctx)` makes the evaluator: an object with
`run(params) -> iterable of (metric name, value)` and `every_steps`. Evaluators reach the
model only through the objectives' and the model's own prediction functions. Metric names
are paths: `<task>/<evaluator name>/<what>`. To add one: a new file, one line in EVALUATORS.
"""
from __future__ import annotations

from typing import Mapping

from mmjax.config.registry import Registry
from mmjax.errors import ConfigError
from mmjax.evaluators.classification import ClassificationConfig
from mmjax.evaluators.common import EvalContext
from mmjax.evaluators.loss import EvalLossConfig
from mmjax.evaluators.retrieval import RetrievalConfig

EVALUATORS = Registry("evaluator", {
    "retrieval": RetrievalConfig, "classification": ClassificationConfig,
    "loss": EvalLossConfig})


def parse_eval(name: str, cfg, objectives: Mapping[str, tuple]) -> object:
  """The validated config of `evals.<name>`, checked against its task's objectives.

  objectives: {task: objectives} of the run (mmjax.experiment.build.task_objectives).
  """
  c = EVALUATORS.parse(cfg, f"evals.{name}")
  if c.task not in objectives:
    raise ConfigError(f"config.evals.{name}.task={c.task!r}; valid: {sorted(objectives)}")
  c.check(objectives[c.task], f"evals.{name}")
  return c


def make_evaluators(evals: Mapping[str, object], ctx: EvalContext) -> list:
  """The evaluators of parsed configs ({name: config}, as `parse_eval` returns them)."""
  return [c.build(n, ctx) for n, c in evals.items()]


__all__ = ["EVALUATORS", "EvalContext", "make_evaluators", "parse_eval"]
