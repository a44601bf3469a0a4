"""Masked modelling: hide a fraction of one modality's tokens and predict them.

`context` names modalities encoded jointly with the masked one and never hidden (e.g. a
caption's masked tokens predicted while seeing the image): a per-token loss that measures
how well the model fuses modalities, independent of the batch size.
Text predicts the hidden token ids (cross-entropy); image/video/audio regress the
hidden patches' values, normalised per patch (MAE's target).
`unit="word"` (text) hides whole words instead of single tokens: a word cut in half is
nearly always recoverable from its visible pieces, a whole hidden word only from what the
context determines, so the loss keeps a floor wherever the context leaves doubt. Where the
words are comes from the tokenize op, whatever the tokenizer: it writes `<text>_words`
(mmjax/data/preprocess.py), each token's word number, 0 for tokens in no word.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.config.registry import check
from mmjax.models.spec import Heads
from mmjax.objectives import base
from mmjax.objectives.classification import softmax_xent


def random_token_mask(rng, shape, ratio: float, valid_bn):
  """bool [B,N]: each valid token hidden with probability `ratio`, at least one per row."""
  scores = jax.random.uniform(rng, shape)
  hide = (scores < ratio) & valid_bn
  # Guarantee one hidden valid token per row so every example contributes a target.
  first = jnp.argmax(jnp.where(valid_bn, scores, -1.0), axis=1)
  return hide | (jax.nn.one_hot(first, shape[1], dtype=bool) & valid_bn)


# The batch key of a text modality's word marks: `<modality>_words`, int32 [B, N].
WORDS_SUFFIX = "_words"


def word_separators(words_bn, valid_bn):
  """bool [B,N]: tokens in no word (spaces, bos, eos, padding); whole-word masking keeps them."""
  return (words_bn == 0) | ~valid_bn


def whole_word_mask(rng, words_bn, ratio: float, valid_bn):
  """bool [B,N]: each word (words_bn: each token's word number, 0 = in no word) hidden
  whole with probability `ratio`; the lowest-scored word of a row is hidden anyway, so
  every row has a target."""
  sep = word_separators(words_bn, valid_bn)
  # Each word reads the score at its index: the count of separators up to it, plus one for
  # each word that starts right after another (tokenizers that mark words without spaces
  # between them). Words after a space keep the index they had when only spaces separated
  # words, so the masks of byte-tokenised text are what they always were.
  prev = jnp.pad(words_bn[:, :-1], ((0, 0), (1, 0)))
  abutting = ~sep & (words_bn != prev) & (prev > 0)
  word_bn = jnp.cumsum(sep | abutting, axis=1)
  scores = jax.random.uniform(rng, words_bn.shape)
  word_scores = jnp.where(sep, 2.0, jnp.take_along_axis(scores, word_bn, axis=1))
  lowest = word_scores == word_scores.min(axis=1, keepdims=True)
  return ((word_scores < ratio) | lowest) & ~sep


@dataclasses.dataclass(frozen=True)
class Masked:
  name: str
  modality: str = "text"
  ratio: float = 0.5
  weight: float = 1.0
  context: tuple[str, ...] = ()
  unit: str = "token"   # token | word (whole words of text: the batch's word marks)
  head: str = ""        # the decoder's name; "" = the modality's (objectives share it then)

  def __post_init__(self):
    check(0.0 < self.ratio < 1.0, "ratio", "need 0 < ratio < 1")
    check(self.unit in ("token", "word"), "unit", f"{self.unit!r}: choose token or word")
    check(self.unit == "token" or self.modality == "text", "unit",
          f"'word' needs the text modality (its tokenize op marks the words), not "
          f"{self.modality!r}")
    check(self.modality not in self.context, "context",
          f"repeats the masked modality {self.modality!r}; name only the other modalities")

  @property
  def modalities(self):
    return (self.modality,) + tuple(self.context)

  @property
  def head_name(self) -> str:
    return self.head or self.modality

  def forward_passes(self):
    return (self.modalities,)

  def batch_keys(self):
    words = [self.modality + WORDS_SUFFIX] if self.unit == "word" else []
    return base.needed_keys(self.modalities) + words

  def heads(self):
    return Heads(decoders={self.head_name: self.modality})

  def predict_fns(self):
    return {}

  def __call__(self, model, batch, rng, inputs=None):
    m = self.modality
    # Token drop never applies to `modality` (config validation refuses it): every token
    # is a target. Context modalities may be dropped.
    x = base.inputs_for(batch, inputs, self.modalities)
    spec = model.spec.modalities[m]
    b = batch[m].shape[0]
    n = spec.num_tokens(tuple(batch[m].shape[1:]))
    valid_bn = token_validity(x, m, (b, n))
    if self.unit == "word":
      hide = whole_word_mask(rng, batch[m + WORDS_SUFFIX], self.ratio, valid_bn)
    else:
      hide = random_token_mask(rng, (b, n), self.ratio, valid_bn)
    enc = model.encode(x, replace={m: hide})
    pred = model.decode(enc.tokens[m], self.head_name)
    w = hide.astype(jnp.float32)
    per_tok, correct = reconstruction_loss(spec, pred, token_targets(spec, batch[m]))
    metrics = {}
    if correct is not None:
      metrics["token_acc"] = jnp.sum(correct * w) / jnp.maximum(w.sum(), 1.0)
    loss = jnp.sum(per_tok * w) / jnp.maximum(w.sum(), 1.0)
    metrics["hidden_fraction"] = w.sum() / jnp.maximum(valid_bn.sum(), 1)
    return loss, metrics, enc.aux


def token_validity(x, m: str, shape) -> jax.Array:
  """bool [B, N]: modality m's real tokens: valid (text padding) in a present modality."""
  valid_bn = x.valid.get(m, jnp.ones(shape, bool))
  if m in x.present:
    valid_bn = valid_bn & x.present[m][:, None]
  return valid_bn


def token_targets(spec, raw: jax.Array) -> jax.Array:
  """What a decoder predicts per token: text ids [B, N], or the patches [B, N, P]
  normalised per patch (MAE's target)."""
  if spec.kind == "text":
    return raw
  target = spec.cut(raw.astype(jnp.float32))
  mu = target.mean(-1, keepdims=True)
  sd = jnp.sqrt(target.var(-1, keepdims=True) + 1e-6)
  return (target - mu) / sd


def reconstruction_loss(spec, pred: jax.Array, target: jax.Array):
  """Per-token loss [B, N] of a decoder's predictions against token_targets: cross-entropy
  of text ids, mean squared error of patches; and, for text, whether the argmax is right
  (bool [B, N]; None for patches)."""
  if spec.kind == "text":
    b, n = target.shape
    per_tok = softmax_xent(pred.reshape(b * n, -1), target.reshape(-1)).reshape(b, n)
    return per_tok, jnp.argmax(pred, -1) == target
  return jnp.mean(jnp.square(pred - target), axis=-1), None
