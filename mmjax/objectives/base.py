"""What every objective shares: its model inputs, and batch checks.

An objective is called as `objective(model, batch, rng, inputs)`: `inputs` is the step's
ModelInputs of every modality the task's objectives read (mmjax.models.model_inputs, with
the kept-token indices of token drop; None: read from the batch, without token drop), and
`batch` gives the rest (labels, targets, word marks).
"""
from __future__ import annotations

from typing import Sequence

from mmjax.models.model_inputs import ModelInputs, model_inputs

# Batch keys that describe a modality rather than being one.
_TEXT_MASK = "text_mask"


def inputs_for(batch, inputs: ModelInputs | None, modalities: Sequence[str]) -> ModelInputs:
  """The objective's own modalities of the step's inputs, or of the batch where it has none
  (evaluators score objectives without token drop)."""
  if inputs is None:
    return model_inputs(batch, modalities)
  return inputs.select(modalities)


def missing_inputs(needed: Sequence[str], batch_keys, objective: str, task: str) -> str | None:
  """A message naming what is missing from the batch, or None if all is there."""
  missing = [k for k in needed if k not in batch_keys]
  if not missing:
    return None
  return (f"objective {objective!r} of task {task!r} needs batch keys {missing}, but the "
          f"batch has {sorted(batch_keys)}; add them to tasks.{task}.data.preprocess")


def needed_keys(modalities: Sequence[str]) -> list[str]:
  keys = list(modalities)
  if "text" in modalities:
    keys.append(_TEXT_MASK)
  return keys
