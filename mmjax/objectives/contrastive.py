"""Pairwise contrastive alignment of two modalities (softmax InfoNCE or sigmoid/SigLIP)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.objectives import base

KINDS = ("softmax", "sigmoid")


def softmax_infonce(za_bd, zb_bd, scale):
  """Symmetric InfoNCE over in-batch negatives (CLIP). Returns (loss, logits_ab)."""
  logits = scale * za_bd @ zb_bd.T
  labels = jnp.arange(za_bd.shape[0])
  lab = jax.nn.log_softmax(logits, axis=1)[labels, labels]
  lba = jax.nn.log_softmax(logits, axis=0)[labels, labels]
  return -(lab.mean() + lba.mean()) / 2, logits


def sigmoid_pairwise(za_bd, zb_bd, scale, bias):
  """SigLIP: every pair is an independent binary match/non-match. Returns (loss, logits)."""
  logits = scale * za_bd @ zb_bd.T + bias
  signs = 2.0 * jnp.eye(za_bd.shape[0]) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(signs * logits)) / za_bd.shape[0], logits


@dataclasses.dataclass(frozen=True)
class Contrastive:
  """Aligns pooled embeddings of modality `a` with modality `b`, each encoded alone."""
  name: str
  a: str
  b: str
  kind: str = "softmax"
  weight: float = 1.0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"objective {self.name!r}: kind={self.kind!r}; valid: {KINDS}")
    if self.a == self.b:
      raise ValueError(f"objective {self.name!r}: a and b are both {self.a!r}")

  @property
  def modalities(self):
    return (self.a, self.b)

  def batch_keys(self):
    return base.needed_keys(self.modalities)

  def heads(self):
    return dict(projections=(self.a, self.b), contrastive_scales=(self.name,))

  def embeddings(self, model, batch):
    """(za, zb): L2-normalised [B,E] embeddings of each side, encoded separately."""
    zs = []
    for m in (self.a, self.b):
      inputs, valid, present = base.model_inputs(batch, (m,))
      enc = model.encode(inputs, valid=valid, present=present)
      zs.append(model.embed(enc.pooled[m], m))
    return zs

  def __call__(self, model, batch, rng):
    del rng
    za, zb = self.embeddings(model, batch)
    scale, bias = model.contrastive_scale(self.name)
    if self.kind == "softmax":
      loss, logits = softmax_infonce(za, zb, scale)
    else:
      loss, logits = sigmoid_pairwise(za, zb, scale, bias)
    labels = jnp.arange(za.shape[0])
    metrics = {
        f"{self.a}_to_{self.b}_acc": jnp.mean(jnp.argmax(logits, 1) == labels),
        f"{self.b}_to_{self.a}_acc": jnp.mean(jnp.argmax(logits, 0) == labels),
        "scale": scale,
    }
    return loss, metrics
