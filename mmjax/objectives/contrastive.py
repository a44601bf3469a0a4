"""Pairwise contrastive alignment of two modalities (softmax InfoNCE or sigmoid/SigLIP).

Rows in which either modality is absent (`<m>_present` False) take no part: they are
neither positives nor negatives, and the loss is a mean over the rows that remain.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.config.registry import check
from mmjax.models.aux_outputs import combine
from mmjax.models.spec import Heads
from mmjax.objectives import base

KINDS = ("softmax", "sigmoid")


def _kept(keep_b, b):
  return jnp.ones((b,), bool) if keep_b is None else keep_b


def softmax_infonce(za_bd, zb_bd, scale, keep_b=None):
  """Symmetric InfoNCE over in-batch negatives (CLIP). Returns (loss, logits_ab)."""
  return symmetric_softmax_xent(scale * za_bd @ zb_bd.T, keep_b)


def symmetric_softmax_xent(logits, keep_b=None):
  """Mean of the row-wise (a->b) and column-wise (b->a) softmax cross-entropies of square
  logits [B,B] whose diagonal holds the positives. Returns (loss, masked logits)."""
  b = logits.shape[0]
  keep = _kept(keep_b, b)
  pair = keep[:, None] & keep[None, :]
  # A dropped row keeps only its own diagonal (so every softmax stays finite) and is then
  # left out of the mean; kept rows never see dropped columns.
  eye = jnp.eye(b, dtype=bool)
  masked = jnp.where(pair, logits, jnp.where(eye, 0.0, -jnp.inf))
  idx = jnp.arange(b)
  lab = jax.nn.log_softmax(masked, axis=1)[idx, idx]
  lba = jax.nn.log_softmax(masked, axis=0)[idx, idx]
  n = jnp.maximum(keep.sum(), 1)
  return -jnp.sum(jnp.where(keep, lab + lba, 0.0)) / (2 * n), masked


def sigmoid_pairwise(za_bd, zb_bd, scale, bias, keep_b=None):
  """SigLIP: every pair is an independent binary match/non-match. Returns (loss, logits)."""
  b = za_bd.shape[0]
  keep = _kept(keep_b, b)
  logits = scale * za_bd @ zb_bd.T + bias
  signs = 2.0 * jnp.eye(b) - 1.0
  pair = keep[:, None] & keep[None, :]
  per_pair = jnp.where(pair, jax.nn.log_sigmoid(signs * logits), 0.0)
  return -jnp.sum(per_pair) / jnp.maximum(keep.sum(), 1), jnp.where(pair, logits, -jnp.inf)


@dataclasses.dataclass(frozen=True)
class Contrastive:
  """Aligns pooled embeddings of modality `a` with modality `b`, each encoded alone.

  head: the name of the learned temperature; "" = "<a>_<b>" (not the objective's name, so
  renaming the objective keeps a checkpoint's heads).
  """
  name: str
  a: str = "text"
  b: str = "image"
  kind: str = "softmax"
  weight: float = 1.0
  head: str = ""

  def __post_init__(self):
    check(self.kind in KINDS, "kind", f"valid: {', '.join(map(repr, KINDS))}")
    check(self.a != self.b, "b", f"a and b are both {self.a!r}; name two modalities")

  @property
  def modalities(self):
    return (self.a, self.b)

  @property
  def scale_name(self) -> str:
    return self.head or f"{self.a}_{self.b}"

  def forward_passes(self):
    return ((self.a,), (self.b,))

  def batch_keys(self):
    return base.needed_keys(self.modalities)

  def heads(self):
    return Heads(projections=(self.a, self.b), contrastive_scales=(self.scale_name,))

  def predict_fns(self):
    return {}  # its embeddings are the model's `embed/<modality>` predict functions

  def embeddings(self, model, batch, inputs=None):
    """(za, zb, aux): unit-norm [B,E] embeddings of each side, encoded separately."""
    x = base.inputs_for(batch, inputs, self.modalities)
    (za, aux_a), (zb, aux_b) = (model.embed_modality(x, m) for m in (self.a, self.b))
    return za, zb, combine([aux_a, aux_b])

  def __call__(self, model, batch, rng, inputs=None):
    del rng
    x = base.inputs_for(batch, inputs, self.modalities)
    za, zb, aux = self.embeddings(model, batch, x)
    keep = x.present_rows(self.modalities, za.shape[0])
    scale, bias = model.contrastive_scale(self.scale_name)
    if self.kind == "softmax":
      loss, logits = softmax_infonce(za, zb, scale, keep)
    else:
      loss, logits = sigmoid_pairwise(za, zb, scale, bias, keep)
    labels = jnp.arange(za.shape[0])
    n = jnp.maximum(keep.sum(), 1)
    metrics = {
        f"{self.a}_to_{self.b}_acc": jnp.sum((jnp.argmax(logits, 1) == labels) & keep) / n,
        f"{self.b}_to_{self.a}_acc": jnp.sum((jnp.argmax(logits, 0) == labels) & keep) / n,
        "scale": scale,
    }
    return loss, metrics, aux
