"""Classification accuracy of one of a task's `classify/<objective>` predict functions."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from mmjax.evaluators.common import EvalContext, ObjectiveEvalConfig, gather, strip_private


@dataclasses.dataclass(frozen=True)
class ClassificationConfig(ObjectiveEvalConfig):
  prefix: ClassVar[str] = "classify/"
  kind: ClassVar[str] = "classification"

  def build(self, name: str, ctx: EvalContext) -> "ClassificationAccuracy":
    return ClassificationAccuracy(name, self, ctx)


def correct_and_usable(out: dict):
  """(correct, usable), both bool [B,...]: a K-way head predicts its argmax, a one-logit
  head (matching) predicts 1 where its logit is positive."""
  logits = out["logits"]
  if logits.shape[-1] == 1:
    pred = (logits[..., 0] > 0).astype(jnp.int32)
  else:
    pred = jnp.argmax(logits, -1)
  return pred == out["label"], out["usable"]


class ClassificationAccuracy:

  def __init__(self, name: str, cfg: ClassificationConfig, ctx: EvalContext):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.every_steps = cfg.every_steps
    predict = ctx.predict(cfg.task, cfg.check(ctx.predict_names[cfg.task], f"evals.{name}"))
    self._predict = ctx.jit(lambda model, batch: correct_and_usable(predict(model, batch)))

  def run(self, params):
    correct = total = 0
    for batch in self.ctx.batches(self.cfg.task, self.cfg.split):
      right, usable = map(gather, self._predict(params, self.ctx.to_device(strip_private(batch))))
      valid = gather(batch["_valid"]).reshape((-1,) + (1,) * (usable.ndim - 1))
      keep = usable & valid
      correct += int(np.sum(right & keep))
      total += int(keep.sum())
    prefix = f"{self.cfg.task}/{self.name}"
    yield f"{prefix}/accuracy", correct / max(total, 1)
    yield f"{prefix}/num_examples", float(total)
