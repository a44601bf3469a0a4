"""The lowest loss masked caption modelling can reach on mm_world: the law's E, computed.

A caption is a template filled with the scene's size, colour, shape and position, all drawn
uniformly and independently (data/world_render.py). Masked caption modelling hides each
caption token (bos, bytes, eos) -- or with unit="word" each whole word -- with probability
`ratio` (plus one guaranteed target per row), and scores a cross-entropy per hidden token;
the masks here are the objective's own. The best possible model knows the caption's length (the
validity mask), the visible bytes, and whatever the context modality determines:
  image  size, colour, shape, position   (only the template is left: the floor is ~0)
  audio  shape (pitch)                   (colour, size and position are not: a real floor)
  none   nothing
Its loss on a hidden token is -log of the share of the captions consistent with all that
which put the true byte there (scenes are uniform, so the posterior is uniform over them).
Averaged over hidden tokens, that is the irreducible loss E of L(N, D) = E + A/N^a + B/D^b:
a fitted E can be checked against it.

`next_token_floor` is the same for NMM's generative target (objectives/next_token.py:
each caption token after BOS predicted from the ones before it and the context). By the
chain rule a caption's summed loss under the ideal model is -log P(caption | context):
with scenes uniform, log(|captions consistent with the context| / copies of this text among
them). The objective averages over target tokens, so the floor is the sum of that over all
scenes over the sum of their targets, exactly (no sampling). The image fixes every factor but
not the template (drawn independently, 4 of them), so the floor with the image is small
but > 0, and without the image (`none`) the factors are unknown too: the gap is what
fusing the image is worth.
"""
from __future__ import annotations

import itertools

import numpy as np

from mmjax.data import world_render as render
from mmjax.data.text_tokenizer import ByteTokenizer

KNOWN = dict(image=("size", "colour", "shape", "position"), audio=("shape",), none=())
FACTORS = dict(size=render.SIZES, colour=render.COLOUR_NAMES, shape=render.SHAPES,
               position=render.POSITIONS)


def _captions(max_len: int):
  """Every caption as token ids [K, max_len] and its factors {name: int[K]}."""
  names = ("template",) + tuple(FACTORS)
  combos = np.array(list(itertools.product(
      range(len(render.TEMPLATES)), *(range(len(v)) for v in FACTORS.values()))))
  factors = {n: combos[:, i] for i, n in enumerate(names)}
  texts = [render.TEMPLATES[c[0]].format(**{n: FACTORS[n][v] for n, v in zip(names[1:], c[1:])})
           for c in combos]
  ids, _ = ByteTokenizer().encode_batch(texts, max_len)
  return ids, factors


def hidden(ids, valid, ratio: float, unit: str, seed: int) -> np.ndarray:
  """The objective's own masks (objectives/masked.py) for [B, N] caption ids."""
  import jax  # local: the floor of a config is computed without jax otherwise
  from mmjax.objectives import masked
  rng = jax.random.key(seed)
  if unit == "word":
    return np.asarray(masked.whole_word_mask(rng, ByteTokenizer().words(ids), ratio, valid))
  return np.asarray(masked.random_token_mask(rng, ids.shape, ratio, valid))


def floor(context: str = "audio", ratio: float = 0.5, unit: str = "token",
          examples: int = 20_000, seed: int = 0, max_len: int = 48) -> float:
  """Mean Bayes-optimal cross-entropy (nats) per hidden caption token, by Monte Carlo."""
  if context not in KNOWN:
    raise ValueError(f"context {context!r}: choose one of {sorted(KNOWN)}")
  ids, factors = _captions(max_len)
  valid = ids != 0
  rng = np.random.default_rng(seed)
  rows = rng.integers(0, len(ids), examples)
  hides = hidden(ids[rows], valid[rows], ratio, unit, seed)
  total, count = 0.0, 0
  for i, hide in zip(rows, hides):
    # Captions the ideal model cannot tell apart from the true one.
    same = (valid == valid[i]).all(1) & (ids[:, ~hide] == ids[i, ~hide]).all(1)
    for name in KNOWN[context]:
      same &= factors[name] == factors[name][i]
    candidates = ids[same][:, hide]                    # [M, hidden]
    share = (candidates == ids[i, hide]).mean(0)       # posterior of the true byte
    total -= np.log(share).sum()
    count += int(hide.sum())
  return total / count


def next_token_floor(context: str = "image", max_len: int = 48) -> float:
  """Bayes-optimal next-token cross-entropy (nats) per target caption token, exactly."""
  if context not in KNOWN:
    raise ValueError(f"context {context!r}: choose one of {sorted(KNOWN)}")
  ids, factors = _captions(max_len)
  targets = (ids != 0).sum(1) - 1  # every valid token but BOS
  known = np.stack([factors[n] for n in KNOWN[context]], 1) if KNOWN[context] \
      else np.zeros((len(ids), 1), np.int64)
  _, cls = np.unique(known, axis=0, return_inverse=True)
  _, text = np.unique(ids, axis=0, return_inverse=True)
  cls, text = cls.ravel(), text.ravel()
  class_size = np.bincount(cls)[cls]
  pair = cls * (text.max() + 1) + text  # copies of this caption's text within its class
  _, where, counts = np.unique(pair, return_inverse=True, return_counts=True)
  copies = counts[where.ravel()]
  return float(np.log(class_size / copies).sum() / targets.sum())
