"""The task's training objectives evaluated on a held-out split (no update): its `loss`
predict function, averaged over the split."""
from __future__ import annotations

import dataclasses

import jax

from mmjax.config.registry import check
from mmjax.evaluators.common import EvalContext, gather, strip_private


@dataclasses.dataclass(frozen=True)
class EvalLossConfig:
  task: str = "default"
  split: str = ""       # "" = the task's data.eval_split
  every_steps: int = 1000
  seed: int = 0         # fixed masks etc., so evals are comparable over time

  def __post_init__(self):
    check(self.every_steps > 0, "every_steps", "must be a positive integer")

  def check(self, predict_names, key: str) -> None:
    del predict_names, key  # every task has a `loss` predict function

  def build(self, name: str, ctx: EvalContext) -> "EvalLoss":
    return EvalLoss(name, self, ctx)


class EvalLoss:

  def __init__(self, name: str, cfg: EvalLossConfig, ctx: EvalContext):
    self.name, self.ctx = name, ctx
    self.task, self.split, self.every_steps = cfg.task, cfg.split, cfg.every_steps
    loss = ctx.predict(cfg.task, "loss")
    key = jax.random.key(cfg.seed)
    self._metrics = ctx.jit(lambda model, batch: loss(model, batch, key))

  def run(self, params):
    # Batch-level losses (contrastive ones especially) depend on the batch, so the padded
    # last batch is cut to its real rows (one more compile) instead of masked.
    sums, total = {}, 0
    for batch in self.ctx.batches(self.task, self.split):
      keep = batch["_valid"]
      keep_all = gather(keep)  # the global batch's rows: the same on every process
      n = int(keep_all.sum())
      if n < len(keep_all):
        if self.ctx.process_count > 1:
          # A global array needs equal parts per process, which a trimmed batch does not
          # have: multi-process evals skip this last partial batch (the single-device
          # `mmjax.evaluate` counts every example; num_examples says how many counted).
          continue
        batch = {k: v[keep] for k, v in batch.items()}
      metrics = self._metrics(params, self.ctx.to_device(strip_private(batch)))
      for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + float(gather(v)) * n
      total += n
    for k, v in sorted(sums.items()):
      yield f"{self.task}/{self.name}/{k}", v / max(total, 1)
    yield f"{self.task}/{self.name}/num_examples", float(total)
