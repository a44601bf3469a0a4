"""Classification of an integer label from the joint embedding of some modalities."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.config.registry import check
from mmjax.models.fusion_heads import KINDS as FUSED_KINDS, FusedHead
from mmjax.models.spec import Heads
from mmjax.objectives import base


LOGITS = ("joint", "modality_mean") + FUSED_KINDS


def check_head(logits: str, rank) -> None:
  """The checks of the `logits` and `rank` fields classification and matching share."""
  check(logits in LOGITS, "logits", f"valid: {', '.join(map(repr, LOGITS))}")
  check(isinstance(rank, int) and not isinstance(rank, bool) and rank > 0, "rank",
        "the rank of LMF's weight tensor must be a positive integer (the paper uses 4 to 16)")


def class_head(head: str, num_classes: int, logits: str, modalities, rank: int) -> Heads:
  """The head of a classifying objective: a linear classifier, or a fused head (LMF,
  concat + MLP) over the pooled vectors of `modalities`."""
  fused = {}
  if logits in FUSED_KINDS:
    fused = {head: FusedHead(kind=logits, modalities=tuple(modalities), rank=rank)}
  return Heads(class_heads={head: num_classes}, fused_heads=fused)


def softmax_xent(logits_bk, labels_b):
  logp = jax.nn.log_softmax(logits_bk, axis=-1)
  return -jnp.take_along_axis(logp, labels_b[:, None], axis=-1)[:, 0]


@dataclasses.dataclass(frozen=True)
class Classification:
  """Encodes `inputs` jointly (fused in one pass) and predicts batch[label].

  head: the classifier's name; "" = the label key, so objectives on one label share a
  classifier unless they name their own, and renaming the objective keeps its head.
  logits: "joint" classifies the joint pooled vector; "modality_mean" averages the logits
  of each present modality's pooled vector (MBT); "lmf" fuses the modalities' pooled
  vectors by low-rank tensor fusion of rank `rank` (mmjax/models/fusion_heads.py);
  "concat_mlp" by an MLP on their concatenation (LMF's baseline).
  """
  name: str
  inputs: tuple[str, ...] = ()
  label: str = "label"
  num_classes: int = 0
  weight: float = 1.0
  head: str = ""
  logits: str = "joint"
  rank: int = 4

  def __post_init__(self):
    check_head(self.logits, self.rank)
    check(isinstance(self.num_classes, int) and self.num_classes >= 2, "num_classes",
          "need >= 2")
    check(len(self.inputs) > 0, "inputs", "is empty; name the modalities to fuse")

  @property
  def modalities(self):
    return tuple(self.inputs)

  @property
  def head_name(self) -> str:
    return self.head or self.label

  def forward_passes(self):
    return (self.modalities,)

  def batch_keys(self):
    return base.needed_keys(self.modalities) + [self.label]

  def heads(self):
    return class_head(self.head_name, self.num_classes, self.logits, self.modalities,
                      self.rank)

  def compute_logits(self, model, batch, inputs=None):
    """(logits [B,K], aux) of this objective's head."""
    x = base.inputs_for(batch, inputs, self.modalities)
    return model.class_logits(x, self.head_name, per_modality=self.logits == "modality_mean")

  def predict_fns(self):
    """{"classify/<name>": fn(model, batch) -> logits [B,K], label [B], usable [B]}."""
    def classify(model, batch):
      labels = batch[self.label]
      return {"logits": self.compute_logits(model, batch)[0], "label": labels,
              "usable": jnp.ones(labels.shape, bool)}
    return {f"classify/{self.name}": classify}

  def __call__(self, model, batch, rng, inputs=None):
    del rng
    logits, aux = self.compute_logits(model, batch, inputs)
    labels = batch[self.label]
    loss = softmax_xent(logits, labels).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}, aux
