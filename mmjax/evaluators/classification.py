"""Classification accuracy of a task's classification objective over a split."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from mmjax.config.registry import check
from mmjax.errors import ConfigError
from mmjax.evaluators.common import EvalContext, gather, strip_private
from mmjax.objectives.classification import Classification


@dataclasses.dataclass(frozen=True)
class ClassificationConfig:
  task: str = "default"
  objective: str = ""   # which classification objective of the task; "" = the only one
  split: str = ""       # "" = the task's data.eval_split
  every_steps: int = 1000

  def __post_init__(self):
    check(self.every_steps > 0, "every_steps", "must be a positive integer")

  def check(self, objectives: tuple, key: str) -> Classification:
    """The task's classification objective this evaluator scores."""
    candidates = [o for o in objectives if isinstance(o, Classification)]
    chosen = [o for o in candidates if not self.objective or o.name == self.objective]
    if len(chosen) != 1:
      raise ConfigError(f"config.{key}.objective={self.objective!r} must name one "
                        f"classification objective of task {self.task!r}; valid: "
                        f"{[o.name for o in candidates]}")
    return chosen[0]

  def build(self, name: str, ctx: EvalContext) -> "ClassificationAccuracy":
    return ClassificationAccuracy(name, self, ctx)


class ClassificationAccuracy:

  def __init__(self, name: str, cfg: ClassificationConfig, ctx: EvalContext):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.every_steps = cfg.every_steps
    self._obj = obj = cfg.check(ctx.objectives[cfg.task], f"evals.{name}")
    self._predict = ctx.jit(lambda model, batch: jnp.argmax(obj.compute_logits(model, batch)[0], -1))

  def run(self, params):
    correct = total = 0
    for batch in self.ctx.batches(self.cfg.task, self.cfg.split):
      keep = gather(batch["_valid"])
      pred = gather(self._predict(params, self.ctx.to_device(strip_private(batch))))
      correct += int(np.sum((pred == gather(batch[self._obj.label]))[keep]))
      total += int(keep.sum())
    prefix = f"{self.cfg.task}/{self.name}"
    yield f"{prefix}/accuracy", correct / max(total, 1)
    yield f"{prefix}/num_examples", float(total)
