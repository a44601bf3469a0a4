"""Classification accuracy of a task's classification objective over a split."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from mmjax.components import check
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

  def build(self, name: str, ctx: EvalContext) -> "ClassificationAccuracy":
    return ClassificationAccuracy(name, self, ctx)


class ClassificationAccuracy:

  def __init__(self, name: str, cfg: ClassificationConfig, ctx: EvalContext):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.every_steps = cfg.every_steps
    candidates = [o for o in ctx.objectives[cfg.task] if isinstance(o, Classification)]
    chosen = [o for o in candidates if not cfg.objective or o.name == cfg.objective]
    if len(chosen) != 1:
      raise ConfigError(f"config.evals.{name}.objective={cfg.objective!r} must name one "
                        f"classification objective of task {cfg.task!r}; valid: "
                        f"{[o.name for o in candidates]}")
    self._obj = obj = chosen[0]
    self._predict = ctx.jit(lambda model, batch: jnp.argmax(obj.logits(model, batch)[0], -1))

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
