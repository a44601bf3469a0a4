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
