"""Classification of an integer label from the joint embedding of some modalities."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.objectives import base


def softmax_xent(logits_bk, labels_b):
  logp = jax.nn.log_softmax(logits_bk, axis=-1)
  return -jnp.take_along_axis(logp, labels_b[:, None], axis=-1)[:, 0]


@dataclasses.dataclass(frozen=True)
class Classification:
  """Encodes `inputs` jointly (early fusion when several) and predicts batch[label]."""
  name: str
  inputs: tuple[str, ...]
  label: str = "label"
  num_classes: int = 0
  weight: float = 1.0

  def __post_init__(self):
    if self.num_classes < 2:
      raise ValueError(f"objective {self.name!r}: num_classes={self.num_classes}; need >= 2")
    if not self.inputs:
      raise ValueError(f"objective {self.name!r}: inputs is empty; name modalities to fuse")

  @property
  def modalities(self):
    return tuple(self.inputs)

  def batch_keys(self):
    return base.needed_keys(self.modalities) + [self.label]

  def heads(self):
    return dict(class_heads={self.name: self.num_classes})

  def logits(self, model, batch):
    inputs, valid, present = base.model_inputs(batch, self.modalities)
    enc = model.encode(inputs, valid=valid, present=present)
    return model.classify(enc.joint, self.name)

  def __call__(self, model, batch, rng):
    del rng
    logits = self.logits(model, batch)
    labels = batch[self.label]
    loss = softmax_xent(logits, labels).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
