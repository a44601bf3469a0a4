"""Evaluator registry: an evaluator is built from its config's `type` and exposes
`run(params) -> iterable of (metric name, value)` and `every_steps`.

Metric names are paths: `<task>/<evaluator name>/<what>`.
"""
from __future__ import annotations

from mmjax.evaluators.classification import ClassificationAccuracy
from mmjax.evaluators.common import EvalContext
from mmjax.evaluators.loss import EvalLoss
from mmjax.evaluators.retrieval import Retrieval

REGISTRY = {"retrieval": Retrieval, "classification": ClassificationAccuracy, "loss": EvalLoss}


def make_evaluator(name: str, cfg, ctx: EvalContext):
  cfg = dict(cfg)
  kind = cfg.pop("type", None)
  if kind not in REGISTRY:
    raise ValueError(f"evals.{name}.type={kind!r}; valid: {sorted(REGISTRY)}")
  if cfg.get("task") not in ctx.tasks:
    raise ValueError(f"evals.{name}.task={cfg.get('task')!r}; valid: {sorted(ctx.tasks)}")
  try:
    return REGISTRY[kind](name=name, ctx=ctx, **cfg)
  except TypeError as e:
    raise ValueError(f"evals.{name} (type {kind!r}): {e}") from None


def make_evaluators(evals_cfg, ctx: EvalContext) -> list:
  return [make_evaluator(n, c, ctx) for n, c in evals_cfg.items()]
