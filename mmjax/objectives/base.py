"""What every objective shares: reading model inputs from a batch, and batch checks."""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

# Batch keys that describe a modality rather than being one.
_TEXT_MASK = "text_mask"
# int32 [B, K]: the tokens of the modality that enter the trunk (token drop; training only,
# added by the train step: mmjax/training/token_drop.py).
KEEP_SUFFIX = "_keep"


def missing_inputs(needed: Sequence[str], batch_keys, objective: str, task: str) -> str | None:
  """A message naming what is missing from the batch, or None if all is there."""
  missing = [k for k in needed if k not in batch_keys]
  if not missing:
    return None
  return (f"objective {objective!r} of task {task!r} needs batch keys {missing}, but the "
          f"batch has {sorted(batch_keys)}; add them to tasks.{task}.data.preprocess")


def model_inputs(batch: Mapping[str, jax.Array], modalities: Sequence[str]):
  """(inputs, valid, present, keep) for `model.encode` from a batch in the design.md
  format; `keep` holds the kept token indices of modalities under token drop."""
  inputs = {m: batch[m] for m in modalities}
  valid = {}
  if "text" in modalities and _TEXT_MASK in batch:
    valid["text"] = batch[_TEXT_MASK]
  present = {m: batch[f"{m}_present"] for m in modalities if f"{m}_present" in batch}
  keep = {m: batch[m + KEEP_SUFFIX] for m in modalities if m + KEEP_SUFFIX in batch}
  return inputs, valid, present, keep


def present_rows(batch: Mapping[str, jax.Array], modalities: Sequence[str], b: int) -> jax.Array:
  """bool [B]: the rows in which every one of `modalities` is present."""
  keep = jnp.ones((b,), bool)
  for m in modalities:
    if f"{m}_present" in batch:
      keep = keep & batch[f"{m}_present"]
  return keep


def needed_keys(modalities: Sequence[str]) -> list[str]:
  keys = list(modalities)
  if "text" in modalities:
    keys.append(_TEXT_MASK)
  return keys
