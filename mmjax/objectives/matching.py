"""Caption matching: does this caption belong to these inputs? Decided from ONE fused pass.

Every example gives a positive pair (its caption with its own inputs) and a negative pair
(its inputs with the caption of another example of the batch whose content differs), and
a binary head on the fused representation scores both. Each input and each caption
appears once in a positive and about once in a negative, so nothing about either side
alone predicts the answer: it lies in their interaction. A trunk that only meets the
modalities at a linear head (late fusion) cannot solve it; early and bottleneck fusion can.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.config.registry import check
from mmjax.objectives import base
from mmjax.objectives.classification import check_head, class_head


def negative_partners(content_b: jax.Array, max_shift: int) -> tuple[jax.Array, jax.Array]:
  """(partner [B], ok [B]): for row i the first row i+k (k = 1..max_shift, cyclic) whose
  content differs from row i's; ok is False where none of them does."""
  b = content_b.shape[0]
  idx = jnp.arange(b)
  cand_kb = (idx[None, :] + jnp.arange(1, max_shift + 1)[:, None]) % b
  differs_kb = content_b[cand_kb] != content_b[None, :]
  first = jnp.argmax(differs_kb, axis=0)
  return cand_kb[first, idx], differs_kb.any(axis=0)


@dataclasses.dataclass(frozen=True)
class Matching:
  name: str
  text: str = "text"
  inputs: tuple[str, ...] = ("image",)
  content_key: str = "content_id"  # equal ids = interchangeable captions: never a negative
  max_shift: int = 8               # how far in the batch to look for a negative partner
  weight: float = 1.0
  head: str = ""                   # "" = "match_<text>_<inputs>"
  logits: str = "joint"            # as classification's: modality_mean | lmf | concat_mlp
  rank: int = 4                    # lmf only

  def __post_init__(self):
    check(len(self.inputs) > 0, "inputs", "is empty; name the modalities to match the text to")
    check(self.text not in self.inputs, "inputs", f"contains the text modality {self.text!r}")
    check(isinstance(self.max_shift, int) and self.max_shift >= 1, "max_shift", "must be >= 1")
    check_head(self.logits, self.rank)

  @property
  def modalities(self):
    return (self.text,) + tuple(self.inputs)

  @property
  def head_name(self) -> str:
    return self.head or f"match_{self.text}_{'_'.join(self.inputs)}"

  def forward_passes(self):
    # One pass over 2B rows (positives and negatives): the cost of two B-row passes.
    return (self.modalities, self.modalities)

  def batch_keys(self):
    return base.needed_keys(self.modalities) + [self.content_key]

  def heads(self):
    return class_head(self.head_name, 1, self.logits, self.modalities, self.rank)

  def pairs(self, batch, inputs):
    """(inputs of 2B rows: positives then negatives, label [2B], usable [2B])."""
    partner, ok = negative_partners(batch[self.content_key], self.max_shift)
    second = lambda m, x: x[partner] if m == self.text else x
    paired = inputs.map_rows(lambda m, x: jnp.concatenate([x, second(m, x)]))
    b = partner.shape[0]
    label = jnp.concatenate([jnp.ones((b,)), jnp.zeros((b,))])
    usable = jnp.concatenate([jnp.ones((b,), bool), ok])
    return paired, label, usable & paired.present_rows(self.modalities, 2 * b)

  def _logits(self, model, batch, inputs=None):
    """(logits [2B,1] of the pairs, label [2B], usable [2B], aux)."""
    paired, label, usable = self.pairs(batch, base.inputs_for(batch, inputs, self.modalities))
    logits, aux = model.class_logits(paired, self.head_name,
                                     per_modality=self.logits == "modality_mean")
    return logits, label, usable, aux

  def predict_fns(self):
    """{"classify/<name>": fn(model, batch) -> logits [B,2,1], label [B,2], usable [B,2]}:
    each example's positive and negative pair (a one-logit head: match iff logit > 0)."""
    def classify(model, batch):
      logits, label, usable, _ = self._logits(model, batch)
      by_row = lambda x: jnp.swapaxes(x.reshape(2, -1, *x.shape[1:]), 0, 1)
      return {"logits": by_row(logits), "label": by_row(label.astype(jnp.int32)),
              "usable": by_row(usable)}
    return {f"classify/{self.name}": classify}

  def __call__(self, model, batch, rng, inputs=None):
    del rng
    logits, label, usable, aux = self._logits(model, batch, inputs)
    logit = logits[:, 0]
    per_row = -(label * jax.nn.log_sigmoid(logit) + (1 - label) * jax.nn.log_sigmoid(-logit))
    n = jnp.maximum(usable.sum(), 1)
    loss = jnp.sum(jnp.where(usable, per_row, 0.0)) / n
    correct = (logit > 0) == (label > 0.5)
    return loss, {"accuracy": jnp.sum(correct & usable) / n}, aux
