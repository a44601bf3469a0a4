"""Parameters, tokens and FLOPs of a run, for sweeps and collect.

The trainer records `model/params`, `train/tokens`, `perf/flops` (its analytic count) and
`train/examples` in metrics.jsonl at every log step; `run_counts` uses those. For workdirs
written before it did, it derives the same quantities here:
  params  every parameter of the model built from the config (embeddings and heads included)
  tokens  examples seen x tokens per example, summed over the modalities the task's
          objectives encode (each modality's own sequence length)
  flops   6 N D, the estimate the fitted law's C = 6ND uses
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

TRAINER_KEYS = dict(params="model/params", tokens="train/tokens", flops="perf/flops",
                    examples="train/examples")


def param_count(exp) -> int:
  """Total parameters of the experiment's model, from abstract shapes (allocates nothing)."""
  import jax
  from flax import nnx
  from mmjax.models.model import build_model
  params = nnx.state(nnx.eval_shape(lambda: build_model(exp.model, 0)), nnx.Param)
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


def tokens_per_example(exp, task: str) -> int:
  """Input tokens of one example of `task`: every modality its objectives encode, once."""
  specs = exp.model.modalities
  used = dict.fromkeys(m for o in exp.tasks[task].objectives for m in o.modalities)
  return int(sum(specs[m].num_tokens(specs[m].shape) for m in used))


def loaded(recipe_name: str, overrides: Sequence[str]):
  """The parsed experiment of a recipe + overrides."""
  from mmjax import experiment
  from mmjax.config import recipe
  return experiment.parse(recipe.load(recipe_name, overrides))


def params_of(recipe_name: str, overrides: Sequence[str]) -> int:
  """For sweep designs: N of a recipe + overrides."""
  return param_count(loaded(recipe_name, overrides))


def tokens_per_example_of(recipe_name: str, overrides: Sequence[str], task: str = "default") -> int:
  return tokens_per_example(loaded(recipe_name, overrides), task)


def run_counts(exp, row: Mapping, step: int) -> dict:
  """{params, tokens, flops, examples} of a run after `step` steps.

  `row` is the metrics.jsonl row at `step` (the trainer's own figures when it has them).
  Single-task runs only for the derived figures: with several tasks the per-task step
  counts are the trainer's to record.
  """
  out = {k: float(row[v]) for k, v in TRAINER_KEYS.items() if v in row}
  if len(out) == len(TRAINER_KEYS):
    return out
  tasks = list(exp.tasks)
  if len(tasks) != 1:
    raise ValueError(f"run has tasks {tasks} and its metrics lack {sorted(TRAINER_KEYS.values())}"
                     f"; per-task token counts need the trainer's figures")
  task = tasks[0]
  examples = float(step * exp.tasks[task].batch_size)
  derived = dict(examples=examples, params=float(param_count(exp)))
  derived["tokens"] = examples * tokens_per_example(exp, task)
  derived["flops"] = 6.0 * derived["params"] * derived["tokens"]
  return {**derived, **out}
