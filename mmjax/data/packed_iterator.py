"""The training iterator of a packed task (mmjax/data/packing.py): documents -> grain's
first-fit packing -> global batches of packed rows -> this process's rows.

Documents are built C at a time (one preprocessed batch, in read-ahead threads) and
flattened by grain's FlatMapIterDataset. Its state is grain's own iterator state (the
chunk and document the next packing batch starts from, the bins of the current one
already emitted, the count of rows): JSON-serialisable and
exact. Every process packs the whole global stream, so the state is the same in every
process and a resume on another number of processes continues the same rows.
"""
from __future__ import annotations

from typing import Callable, Mapping

import grain
import numpy as np

from mmjax.data import packing

# An upper bound on the chunks one run reads (grain datasets need a length; this is lazy).
_STREAM_LENGTH = 1 << 40
# Documents preprocessed together (the builder's batch); the stream is the same for any.
DOCUMENTS_PER_CHUNK = 32


class _Documents(grain.experimental.FlatMapTransform):
  """A chunk (a list of documents) -> its documents, one element each."""
  max_fan_out = DOCUMENTS_PER_CHUNK

  def flat_map(self, element):
    return element


class PackedTrainIterator:
  """Infinite iterator of this process's rows of consecutive packed global batches."""

  def __init__(self, build_chunk: Callable[[int], list], cfg: packing.PackingConfig,
               global_batch: int, *, process_index: int = 0, process_count: int = 1,
               read_threads: int = 1):
    self.cfg, self.global_batch = cfg, global_batch
    rows = global_batch // process_count
    self._rows = slice(process_index * rows, (process_index + 1) * rows)
    chunks = grain.MapDataset.range(_STREAM_LENGTH).map(build_chunk)
    threads = max(read_threads, 1)
    chunks = chunks.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                      prefetch_buffer_size=2 * threads))
    documents = grain.experimental.FlatMapIterDataset(chunks, _Documents())
    self._dataset = packing.packed_rows(documents, cfg, global_batch).batch(global_batch)
    self._it = iter(self._dataset)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    packed = next(self._it)
    rows = {k: v[self._rows] for k, v in packed.items()}
    return packing.batch_keys(self.cfg, rows)

  def close(self) -> None:
    """Nothing to stop: documents are read by threads of this process."""

  def get_state(self) -> dict:
    return {"packed": self._it.get_state(), "global_batch": self.global_batch}

  def set_state(self, state: Mapping) -> None:
    if "packed" not in state:
      raise ValueError(f"input state {dict(state)} is not from a packed pipeline (no "
                       f"'packed'); the task's data.packing section changed since it was saved")
    if state.get("global_batch") != self.global_batch:
      raise ValueError(f"input state was saved with global batch {state.get('global_batch')}, "
                       f"this run packs {self.global_batch} rows at a time: rows would differ")
    self._it = iter(self._dataset)
    self._it.set_state(state["packed"])
