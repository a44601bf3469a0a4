"""Evaluators, selected by `evals.<name>.type`.

Each type has a frozen dataclass config (defaults + checks; every config has `task`,
`split` and `every_steps`) whose `check(predict_names, key)` cross-checks it, against the
names of its task's predict functions, before anything is built, and whose
`build(name, ctx)` makes the evaluator: an object with
`run(params) -> iterable of (metric name, value)` and `every_steps`. Evaluators reach the
model only through the named predict functions of the context (mmjax/training/predict.py
makes them; evaluators import no objective). Metric names are paths:
`<task>/<evaluator name>/<what>`. To add one: a new file, one line in EVALUATORS.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from mmjax.config.registry import Registry
from mmjax.errors import ConfigError
from mmjax.evaluators.captioning import CaptioningConfig
from mmjax.evaluators.classification import ClassificationConfig
from mmjax.evaluators.common import EvalContext
from mmjax.evaluators.loss import EvalLossConfig
from mmjax.evaluators.retrieval import RetrievalConfig
from mmjax.evaluators.tokenizer import TokenizerEvalConfig

EVALUATORS = Registry("evaluator", {
    "retrieval": RetrievalConfig, "classification": ClassificationConfig,
    "loss": EvalLossConfig, "captioning": CaptioningConfig, "tokenizer": TokenizerEvalConfig})


def parse_eval(name: str, cfg, predict_names: Mapping[str, Sequence]) -> object:
  """The validated config of `evals.<name>`, checked against its task's predict functions.

  predict_names: {task: names of its predict functions} (mmjax.training.predict.predict_names).
  """
  c = EVALUATORS.parse(cfg, f"evals.{name}")
  if c.task not in predict_names:
    raise ConfigError(f"config.evals.{name}.task={c.task!r}; valid: {sorted(predict_names)}")
  c.check(_names(predict_names[c.task]), f"evals.{name}")
  return c


def _names(entries: Sequence) -> tuple[str, ...]:
  """A task's predict function names. The experiment's parse (mmjax/experiment), which may
  not import training, hands over the task's objectives instead: then the names of the
  predict functions they make (each objective's `predict_fns()`)."""
  return tuple(n for e in entries for n in ((e,) if isinstance(e, str) else e.predict_fns()))


def make_evaluators(evals: Mapping[str, object], ctx: EvalContext) -> list:
  """The evaluators of parsed configs ({name: config}, as `parse_eval` returns them)."""
  return [c.build(n, ctx) for n, c in evals.items()]


__all__ = ["EVALUATORS", "EvalContext", "make_evaluators", "parse_eval"]
