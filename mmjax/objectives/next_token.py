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
from mmjax.models import decoding
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


def token_xent(logits_bnv, ids_bn, valid_bn, segment_bn=None):
  """(xent [B, N-1], target weight [B, N-1], log Z [B, N-1], hit [B, N-1]): the
  cross-entropy of each next token (logits at t score ids at t+1) and whether it counts."""
  logits = logits_bnv[:, :-1].astype(jnp.float32)
  target = ids_bn[:, 1:]
  w = target_weights(valid_bn, segment_bn)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  xent = log_z - jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
  return xent, w, log_z, (jnp.argmax(logits, -1) == target)


def next_token_loss(logits_bnv, ids_bn, valid_bn, z_loss_weight: float = 0.0, segment_bn=None):
  """(loss, metrics): logits at t score ids at t+1, averaged over the valid targets."""
  xent, w, log_z, hit = token_xent(logits_bnv, ids_bn, valid_bn, segment_bn)
  count = jnp.maximum(w.sum(), 1.0)
  xent_mean = jnp.sum(xent * w) / count
  metrics = {"perplexity": jnp.exp(xent_mean), "token_acc": jnp.sum(hit * w) / count}
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
    """next_token/<name>: per-example sums over the split's targets; generate/<name>:
    cached decoding after each row's prompt (the captioning evaluator, mmjax.generate)."""
    return {f"next_token/{self.name}": self._token_scores,
            f"generate/{self.name}": self._generate}

  def _text(self, batch, inputs=None):
    """(model inputs with the text causal, text ids, valid text tokens)."""
    m = self.modality
    x = base.inputs_for(batch, inputs, self.modalities).replace(causal=(m,))
    valid_bn = x.valid.get(m, jnp.ones(batch[m].shape, bool))
    if m in x.present:
      valid_bn = valid_bn & x.present[m][:, None]
    return x, batch[m], valid_bn

  def _token_scores(self, model, batch):
    """{"xent_sum", "targets", "correct"}: float32 [B] sums over each example's targets."""
    x, ids, valid_bn = self._text(batch)
    logits = model.decode(model.encode(x).tokens[self.modality], self.head_name)
    xent, w, _, hit = token_xent(logits, ids, valid_bn)
    return {"xent_sum": jnp.sum(xent * w, 1), "targets": jnp.sum(w, 1),
            "correct": jnp.sum(hit * w, 1)}

  def _generate(self, model, batch, rng, sampling, eos_id: int, prompt_tokens: int = 0,
                prompt=None):
    """{"ids": int32 [B, L], "length": int32 [B], "reference": the batch's text ids,
    "reference_valid": bool [B, L]}: each row's prompt continued by `sampling` until EOS,
    the context as prefix. The prompt: the row's valid text tokens, or only the first
    `prompt_tokens` of them (> 0; 1 = BOS alone, to caption from the context), or `prompt`
    (int ids [P], BOS first) for every row."""
    x, ids, valid_bn = self._text(batch)
    n_valid = jnp.sum(valid_bn, axis=1)
    prompt_len = jnp.minimum(n_valid, prompt_tokens) if prompt_tokens else n_valid
    buffer = ids
    if prompt is not None:
      buffer = jnp.zeros_like(ids).at[:, :len(prompt)].set(jnp.asarray(prompt, ids.dtype))
      prompt_len = jnp.full(n_valid.shape, len(prompt))
    prompt_len = jnp.maximum(prompt_len, 1).astype(jnp.int32)
    out = decoding.generate(model, x.select(self.context), buffer, prompt_len,
                            modality=self.modality, head=self.head_name, eos_id=eos_id,
                            sampling=sampling, rng=rng)
    return {"ids": out.ids, "length": out.length, "reference": ids,
            "reference_valid": valid_bn}

  def __call__(self, model, batch, rng, inputs=None):
    del rng
    x, ids, valid_bn = self._text(batch, inputs)
    enc = model.encode(x)
    logits = model.decode(enc.tokens[self.modality], self.head_name)
    loss, metrics = next_token_loss(logits, ids, valid_bn, self.z_loss,
                                    x.segment.get(self.modality))
    return loss, metrics, enc.aux
