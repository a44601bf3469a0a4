"""Classification accuracy of one of a task's `classify/<objective>` predict functions."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from mmjax.config.registry import check
from mmjax.errors import ConfigError
from mmjax.evaluators.common import EvalContext, gather, strip_private

PREFIX = "classify/"


@dataclasses.dataclass(frozen=True)
class ClassificationConfig:
  task: str = "default"
  objective: str = ""   # which classifying objective of the task; "" = the only one
  split: str = ""       # "" = the task's data.eval_split
  every_steps: int = 1000

  def __post_init__(self):
    check(self.every_steps > 0, "every_steps", "must be a positive integer")

  def check(self, predict_names, key: str) -> str:
    """The name of the predict function this evaluator scores."""
    candidates = [n[len(PREFIX):] for n in predict_names if n.startswith(PREFIX)]
    chosen = [o for o in candidates if not self.objective or o == self.objective]
    if len(chosen) != 1:
      raise ConfigError(f"config.{key}.objective={self.objective!r} must name one "
                        f"classification objective of task {self.task!r}; valid: {candidates}")
    return PREFIX + chosen[0]

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
