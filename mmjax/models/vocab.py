"""An extended vocabulary: one embedding table over several id ranges (FuseLIP, 4M).

A `discrete` modality's ids index one segment of the vocabulary, e.g.
(("text", 259), ("image", 1000), ("special", 2)): text ids take rows 0..258, image codes
rows 259..1258, special tokens rows 1259..1260. Every discrete modality of a model shares
the one table (`VocabTable`), so text and image tokens are rows of the same matrix and a
single transformer reads them as one sequence of one kind of token: early fusion over
discrete tokens. The segments, and so the offsets, are part of the model spec
(ModalitySpec.vocab), so a checkpoint says how its rows are laid out.
"""
from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from mmjax.config.registry import check
from mmjax.models import logical_axes as axes


def offsets(segments: Sequence[tuple[str, int]]) -> dict[str, int]:
  """{segment: its first row}: segments in order, each right after the one before."""
  out, start = {}, 0
  for name, size in segments:
    out[name] = start
    start += size
  return out


def check_segments(segments, segment: str, vocab_size: int) -> None:
  """A discrete modality's vocabulary: named segments of positive sizes that fit the table,
  and the segment its ids are in."""
  check(len(segments) > 0 and all(
      len(s) == 2 and isinstance(s[0], str) and isinstance(s[1], int) and s[1] > 0
      for s in segments), "vocab",
      f"a discrete modality needs its vocabulary as (name, size) pairs, e.g. "
      f"(('text', 259), ('image', 1000), ('special', 2))")
  names = [s[0] for s in segments]
  check(len(set(names)) == len(names), "vocab", f"segment names {names} repeat")
  total = sum(s[1] for s in segments)
  sizes = " + ".join(f"{n} {s}" for n, s in segments)
  check(isinstance(vocab_size, int) and vocab_size >= total, "vocab_size",
        f"the discrete vocabulary ({sizes} = {total} ids) is larger than the "
        f"embedding table; use vocab_size >= {total}")
  check(segment in names, "segment",
        f"name the vocabulary segment this modality's ids are in; valid: {names}")


class VocabTable(nnx.Module):
  """The one embedding table of every discrete modality of a model: [vocab_size, width]."""

  def __init__(self, vocab_size: int, width: int, *, param_dtype, rngs: nnx.Rngs):
    self.embedding = axes.param(rngs, jax.nn.initializers.normal(1.0), (vocab_size, width),
                                ("vocab", "embed"), param_dtype)
