"""Batches held in memory: a checkpointable iterator for `trainer.train(iterators=...)`
(benchmarks, tests), and synthetic batches shaped like a task's real ones."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


class InMemoryIterator:
  """Cycles through a list of host-local batches; its state is the position."""

  def __init__(self, batches: Sequence[Mapping[str, np.ndarray]], position: int = 0):
    if not batches:
      raise ValueError("InMemoryIterator needs at least one batch")
    self.batches, self.position = list(batches), position

  def __iter__(self):
    return self

  def __next__(self) -> Mapping[str, np.ndarray]:
    batch = self.batches[self.position % len(self.batches)]
    self.position += 1
    return batch

  def get_state(self) -> dict:
    return {"position": self.position}

  def set_state(self, state: Mapping) -> None:
    self.position = int(state["position"])

  def close(self) -> None:
    """Nothing to release (the trainer closes every iterator it was given)."""


def synthetic_batch(modalities: Mapping, batch_size: int, seed: int = 0,
                    labels: Sequence[str] = ("label",), num_classes: int = 2) -> dict:
  """Random inputs at each modality's reference shape (`config.model.modalities`), a full
  text mask, one word per text token, and integer labels: the keys and dtypes the data
  pipeline produces."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, m in modalities.items():
    shape = (batch_size, *tuple(m.shape))
    if m.kind == "text":
      out[name] = rng.integers(0, m.vocab_size, shape).astype(np.int32)
      out[f"{name}_mask"] = np.ones(shape, bool)
      out[f"{name}_words"] = np.broadcast_to(np.arange(1, shape[1] + 1, dtype=np.int32), shape).copy()
    else:
      out[name] = rng.normal(size=shape).astype(np.float32)
  for key in labels:
    out[key] = rng.integers(0, num_classes, batch_size).astype(np.int32)
  return out
