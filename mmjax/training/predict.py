"""The model's named predict functions, built in one place, and the eval context that hands
them to the evaluators (big_vision's `predict_fns`).

Evaluators never import an objective: they name the predict function they need, and this
module, which may know the objectives, makes it. The names, per task:

  embed/<modality>     fn(model, batch) -> float32 [B,E] unit-norm embedding of the modality
                       encoded alone (for every modality of the model);
  classify/<objective> fn(model, batch) -> {"logits": [B,...,K], "label": int [B,...],
                       "usable": bool [B,...]} from objectives that classify (a classification
                       head, a matching head's two pairs per example, ...);
  next_token/<objective> fn(model, batch) -> {"xent_sum", "targets", "correct": float32 [B]}:
                       per-example sums over the next-token targets (next_token objectives);
  generate/<objective> fn(model, batch, rng, sampling, eos_id) -> {"ids": int32 [B,L],
                       "length": int32 [B]}: cached decoding after each row's prompt (its
                       valid text tokens), the objective's context as prefix (next_token);
  loss                 fn(model, batch, rng) -> {metric: scalar}: the task's objectives'
                       total loss and metrics, as in training but with no token drop.

Every array a predict function returns starts with the batch axis, so an evaluator can drop
padded rows with the batch's `_valid` alone.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

from mmjax import objectives as objectives_lib
from mmjax.evaluators.common import EvalContext
from mmjax.models.model_inputs import model_inputs

PredictFn = Callable[..., Any]


def embed_fn(modality: str) -> PredictFn:
  """The contrastive embedding of one modality, encoded alone (eval never drops tokens)."""
  def embed(model, batch):
    return model.embed_modality(model_inputs(batch, (modality,)), modality)[0]
  return embed


def loss_fn(objectives: tuple) -> PredictFn:
  def loss(model, batch, rng):
    return objectives_lib.total_loss(objectives, model, batch, rng)[1]
  return loss


def task_predict_fns(objectives: tuple, modalities) -> dict[str, PredictFn]:
  """{name: predict function} of one task (names: the module docstring)."""
  fns = {f"embed/{m}": embed_fn(m) for m in modalities}
  for o in objectives:
    fns.update(o.predict_fns())
  fns["loss"] = loss_fn(objectives)
  return fns


def predict_names(objectives: Mapping[str, tuple], modalities=()) -> dict[str, tuple]:
  """{task: names of its predict functions}, what evals are checked against."""
  return {t: tuple(task_predict_fns(objs, modalities)) for t, objs in objectives.items()}


def make_eval_context(graphdef, mesh: jax.sharding.Mesh, exp, *, process_index: int = 0,
                      process_count: int = 1) -> EvalContext:
  """The context every evaluator of the experiment `exp` gets: the model's predict functions
  per task, the mesh and the tasks' eval data. The trainer and `mmjax.evaluate` both build
  it here."""
  return EvalContext(
      graphdef=graphdef, mesh=mesh, data={n: t.data for n, t in exp.tasks.items()},
      predict_fns={n: task_predict_fns(t.objectives, exp.model.modalities)
                   for n, t in exp.tasks.items()},
      batch_size=exp.trainer.eval_batch_size, process_index=process_index,
      process_count=process_count)
