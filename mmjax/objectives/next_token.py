"""Next-token prediction: each token of a text modality predicted from everything before it.

The target modality attends causally and its `context` modalities (an image, say) are a
bidirectional prefix before it: with early fusion a prefix-LM, with `late_decoder` NMM's
late fusion (TokenInfo's mask; the trunk config refuses a trunk where this would not be
sound, at validation). Position t's output predicts token t+1; the loss is the
cross-entropy averaged over the valid targets (a target counts when it and the token
before it are valid tokens of a present modality, and, in a packed row, of one example).
The first token (BOS) is never a target: nothing in the text precedes it.

tied: the unembedding is the modality's embedding table (scaled by width^-0.5), not a
  decoder of its own.
z_loss: PaLM's auxiliary loss, weight * log(Z)^2 averaged over the same targets (Z the
  softmax normaliser of the logits); it keeps the logits from drifting. PaLM used 1e-4.
head: the decoder's name; "" = "next_<modality>", apart from a masked objective's default
  head on the same modality (its modality's name), so the two coexist with a decoder each.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.config.registry import check
from mmjax.models.spec import Heads
from mmjax.objectives import base


def target_weights(valid_bn, segment_bn=None):
  """float [B, N-1]: 1 where the token at t+1 is a target of the output at t: both valid
  and, in a packed row, of one example (a caption's first token is never predicted from
  the example before it)."""
  w = valid_bn[:, 1:] & valid_bn[:, :-1]
  if segment_bn is not None:
    w = w & (segment_bn[:, 1:] == segment_bn[:, :-1])
  return w.astype(jnp.float32)


def token_xent(logits_bnv, ids_bn):
  """(cross-entropy [B, N-1] of the output at t scoring the id at t+1, log Z, logits)."""
  logits = logits_bnv[:, :-1].astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  xent = log_z - jnp.take_along_axis(logits, ids_bn[:, 1:, None], axis=-1)[..., 0]
  return xent, log_z, logits


def next_token_loss(logits_bnv, ids_bn, valid_bn, z_loss_weight: float = 0.0, segment_bn=None):
  """(loss, metrics): logits at t score ids at t+1, averaged over the valid targets."""
  target = ids_bn[:, 1:]
  w = target_weights(valid_bn, segment_bn)
  count = jnp.maximum(w.sum(), 1.0)
  xent, log_z, logits = token_xent(logits_bnv, ids_bn)
  xent_mean = jnp.sum(xent * w) / count
  metrics = {"perplexity": jnp.exp(xent_mean),
             "token_acc": jnp.sum((jnp.argmax(logits, -1) == target) * w) / count}
  loss = xent_mean
  if z_loss_weight:
    z = jnp.sum(jnp.square(log_z) * w) / count
    metrics.update(xent=xent_mean, z_loss=z)
    loss = loss + z_loss_weight * z
  return loss, metrics


@dataclasses.dataclass(frozen=True)
class NextToken:
  name: str
  modality: str = "text"
  context: tuple[str, ...] = ()
  weight: float = 1.0
  head: str = ""
  tied: bool = False
  z_loss: float = 0.0

  def __post_init__(self):
    check(self.z_loss >= 0.0, "z_loss", "must be >= 0 (PaLM used 1e-4; 0 = off)")
    check(self.modality not in self.context, "context",
          f"repeats the predicted modality {self.modality!r}; name only the prefix modalities")

  @property
  def modalities(self):
    return (self.modality,) + tuple(self.context)

  @property
  def causal_modalities(self) -> tuple[str, ...]:
    """The modalities its passes run causally (mmjax/experiment/checks.py checks the trunk)."""
    return (self.modality,)

  @property
  def head_name(self) -> str:
    return self.head or f"next_{self.modality}"

  def forward_passes(self):
    return (self.modalities,)

  def batch_keys(self):
    return base.needed_keys(self.modalities)

  def heads(self):
    return Heads(decoders={self.head_name: self.modality},
                 tied=(self.head_name,) if self.tied else ())

  def predict_fns(self):
    # Per-token log-probs and decoding come with the captioning evaluator (not yet built).
    return {}

  def __call__(self, model, batch, rng, inputs=None):
    del rng
    m = self.modality
    x = base.inputs_for(batch, inputs, self.modalities).replace(causal=(m,))
    ids = batch[m]
    valid_bn = x.valid.get(m, jnp.ones(ids.shape, bool))
    if m in x.present:
      valid_bn = valid_bn & x.present[m][:, None]
    enc = model.encode(x)
    logits = model.decode(enc.tokens[m], self.head_name)
    loss, metrics = next_token_loss(logits, ids, valid_bn, self.z_loss, x.segment.get(m))
    return loss, metrics, enc.aux
