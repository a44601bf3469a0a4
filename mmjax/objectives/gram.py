"""GRAM: contrastive alignment of n >= 2 modalities by the volume they span (Cicchetti et
al., "Gramian Multimodal Representation Learning and Alignment", ICLR 2025).

Each modality is encoded alone to a unit embedding. For anchor row i and candidate row j
the score is the volume (mmjax/models/volume.py) of the anchor's embedding a_i together
with the other modalities' embeddings of candidate j:

    logits_ij = -vol(a_i, o_1j, ..., o_kj) * s          (s = 1/tau, learned)

A matched set (i = j) spans a small volume: its modalities point the same way. The loss
is the softmax cross-entropy on the diagonal in both directions, anchor -> candidates
(rows) and candidates -> anchor (columns), as the paper's D2A and A2D terms. The paper's
optional data-anchor matching loss is not part of this objective. Rows in which any of
the modalities is absent take no part, as in the pairwise objective (contrastive.py).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from mmjax.config.registry import check
from mmjax.models.aux_outputs import combine
from mmjax.models.spec import Heads
from mmjax.models.volume import volume_matrix
from mmjax.objectives import base
from mmjax.objectives.contrastive import symmetric_softmax_xent


def gram_logits(anchor_bd, others_kbd, scale):
  """[B,B] logits -vol(a_i, o_.j) * scale: row i is anchor i against every candidate j."""
  return -scale * volume_matrix(anchor_bd, others_kbd)


@dataclasses.dataclass(frozen=True)
class Gram:
  """Aligns `anchor` with all of `others` at once by volume (n = 1 + len(others)).

  head: the name of the learned temperature; "" = "gram_<anchor>_<others...>".
  """
  name: str
  anchor: str = "text"
  others: tuple[str, ...] = ("image", "audio", "video")
  weight: float = 1.0
  head: str = ""

  def __post_init__(self):
    check(len(self.others) >= 1, "others",
          f"a volume needs n >= 2 modalities; name at least one modality besides the "
          f"anchor {self.anchor!r}")
    check(self.anchor not in self.others, "others",
          f"contains the anchor {self.anchor!r}; name the other modalities")
    check(len(set(self.others)) == len(self.others), "others",
          f"names a modality twice in {self.others!r}: its volume would always be 0")

  @property
  def modalities(self):
    return (self.anchor,) + tuple(self.others)

  @property
  def scale_name(self) -> str:
    return self.head or "gram_" + "_".join(self.modalities)

  def forward_passes(self):
    return tuple((m,) for m in self.modalities)

  def batch_keys(self):
    return base.needed_keys(self.modalities)

  def heads(self):
    return Heads(projections=self.modalities, contrastive_scales=(self.scale_name,))

  def predict_fns(self):
    return {}  # retrieval ranks the model's `embed/<modality>` outputs by volume

  def __call__(self, model, batch, rng, inputs=None):
    del rng
    x = base.inputs_for(batch, inputs, self.modalities)
    embedded = [model.embed_modality(x, m) for m in self.modalities]
    anchor = embedded[0][0]
    others = jnp.stack([z for z, _ in embedded[1:]])
    keep = x.present_rows(self.modalities, anchor.shape[0])
    scale, _ = model.contrastive_scale(self.scale_name)
    loss, logits = symmetric_softmax_xent(gram_logits(anchor, others, scale), keep)
    labels = jnp.arange(anchor.shape[0])
    n = jnp.maximum(keep.sum(), 1)
    to_others = f"{self.anchor}_to_{'+'.join(self.others)}_acc"
    from_others = f"{'+'.join(self.others)}_to_{self.anchor}_acc"
    metrics = {
        to_others: jnp.sum((jnp.argmax(logits, 1) == labels) & keep) / n,
        from_others: jnp.sum((jnp.argmax(logits, 0) == labels) & keep) / n,
        "positive_volume": jnp.sum(jnp.where(keep, -jnp.diag(logits), 0.0)) / (n * scale),
        "scale": scale,
    }
    return loss, metrics, combine([aux for _, aux in embedded])
