"""The facts an mm_world caption states (shape, colour, size, position), read back from text.

Captions follow several templates (mmjax/data/world_render.py), so a field is found by its
words wherever they stand, not by its slot: a position is the longest of the world's
position phrases ("top left" before "top") that occurs as whole words.
"""
from __future__ import annotations

import re

from mmjax.data import world_render

FIELDS = {"shape": world_render.SHAPES, "colour": world_render.COLOUR_NAMES,
          "size": world_render.SIZES, "position": world_render.POSITIONS}


def _occurs(phrase: tuple[str, ...], words: list[str]) -> bool:
  n = len(phrase)
  return any(tuple(words[i:i + n]) == phrase for i in range(len(words) - n + 1))


def caption_fields(text: str) -> dict[str, str | None]:
  """{field: the value the text names, or None where it names none or contradicts itself
  (two shapes). Shorter phrases inside the longest one found do not count ("top left" is
  one position, not also "top" and "left")."""
  words = re.findall(r"[a-z]+", text.lower())
  found = {}
  for field, values in FIELDS.items():
    hits = [v for v in values if _occurs(tuple(v.split()), words)]
    best = max(hits, key=lambda v: len(v.split())) if hits else None
    if best and any(not set(h.split()) <= set(best.split()) for h in hits):
      best = None
    found[field] = best
  return found
