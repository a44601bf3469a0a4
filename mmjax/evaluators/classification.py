"""Classification accuracy of a task's classification objective over a split."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from mmjax.evaluators.common import EvalContext, gather, strip_private


@dataclasses.dataclass
class ClassificationAccuracy:
  name: str
  ctx: EvalContext
  task: str
  objective: str = ""   # which classification objective of the task; "" = the only one
  split: str = ""
  every_steps: int = 1000

  def __post_init__(self):
    objs = [o for o in self.ctx.objectives[self.task] if hasattr(o, "logits")]
    if self.objective:
      objs = [o for o in objs if o.name == self.objective]
    if len(objs) != 1:
      names = [o.name for o in self.ctx.objectives[self.task] if hasattr(o, "logits")]
      raise ValueError(f"evals.{self.name}: objective={self.objective!r} must name one "
                       f"classification objective of task {self.task!r}; valid: {names}")
    self._obj = objs[0]
    self._predict = self.ctx.jit(lambda model, batch: jnp.argmax(self._obj.logits(model, batch), -1))

  def run(self, params):
    correct = total = 0
    for batch in self.ctx.batches(self.task, self.split):
      keep = gather(batch["_valid"])
      pred = gather(self._predict(params, self.ctx.to_device(strip_private(batch))))
      correct += int(np.sum((pred == gather(batch[self._obj.label]))[keep]))
      total += int(keep.sum())
    yield f"{self.task}/{self.name}/accuracy", correct / max(total, 1)
    yield f"{self.task}/{self.name}/num_examples", float(total)
