"""Input pipelines the trainer and evaluators call: source -> grain -> numpy batches.

Batches are host-local: with P processes each yields batch_size // P rows and
`mmjax.sharding` assembles the global array.
"""

import json
from typing import Any, Iterator, Mapping

import grain
import numpy as np

from mmjax.data import preprocess as preprocess_lib
from mmjax.data import sources
from mmjax.data import tokenizer as tokenizer_lib

# The data API callers need lives in this module; sources.py holds the implementation.
DataError = sources.DataError
get_source = sources.get_source


def _get(cfg, key: str, default: Any = None) -> Any:
  """Works for ConfigDict and plain dicts alike."""
  return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _plain(value: Any) -> Any:
  """ConfigDict -> nested dicts, so the spec can be read with ordinary mapping code."""
  return value.to_dict() if hasattr(value, "to_dict") else value


def _make_preprocess(data_cfg, source: sources.Source, train: bool):
  tok = _plain(_get(data_cfg, "tokenizer")) or {}
  tokenizer = tokenizer_lib.make_tokenizer(tok.get("kind", "byte"), tok.get("model_path", ""))
  return preprocess_lib.Preprocess(_plain(_get(data_cfg, "preprocess")), tokenizer=tokenizer,
                                   train=train, features=source.features)


def _per_process(batch_size: int, process_count: int) -> int:
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} is not divisible by process_count "
                     f"{process_count}; every process must get the same number of rows")
  return batch_size // process_count


class _PreprocessMap(grain.transforms.RandomMap):
  """grain hands each record an rng derived from (seed, record), so random crops
  are reproducible and a resumed iterator draws the same ones."""

  def __init__(self, fn):
    self.fn = fn

  def random_map(self, element, rng: np.random.Generator):
    return self.fn(element, rng)


class TrainIterator:
  """Infinite iterator of batches whose position is a JSON-serialisable dict."""

  def __init__(self, loader: grain.DataLoader):
    self._loader = loader
    self._it = iter(loader)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  def get_state(self) -> dict:
    return json.loads(self._it.get_state())  # grain gives JSON bytes

  def set_state(self, state: Mapping) -> None:
    self._it.set_state(json.dumps(dict(state)).encode())


def make_train_iterator(data_cfg, *, batch_size: int, seed: int,
                        process_index: int = 0, process_count: int = 1) -> TrainIterator:
  """Shuffled (per epoch, seeded), infinite, deterministic batches of this process's shard."""
  rows = _per_process(batch_size, process_count)
  source = sources.get_source(_get(data_cfg, "name"), _get(data_cfg, "train_split", "train"),
                              _get(data_cfg, "data_dir", ""))
  # Each process reads a disjoint contiguous shard and shuffles within it.
  shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
  if len(source) // process_count < rows:
    raise ValueError(f"{source!r} has {len(source)} examples: too few for "
                     f"{process_count} process(es) x {rows} rows per batch")
  sampler = grain.samplers.IndexSampler(len(source), shard, shuffle=True, num_epochs=None,
                                        seed=seed)
  loader = grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[_PreprocessMap(_make_preprocess(data_cfg, source, train=True)),
                  grain.transforms.Batch(rows, drop_remainder=True)],
      worker_count=_get(data_cfg, "worker_count", 0),
      # In-process read-ahead threads measured no faster on 2 cores, and grain's
      # default 500-record buffer costs more in bookkeeping than it saves.
      read_options=grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  return TrainIterator(loader)


class _EvalRow:
  """Index -> preprocessed example; index -1 is padding (a copy of example 0)."""

  def __init__(self, source, fn):
    self.source, self.fn = source, fn

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    out = self.fn(self.source[max(int(index), 0)])
    out["_valid"] = np.bool_(index >= 0)
    return out


def eval_indices(num_examples: int, batch_size: int, process_index: int,
                 process_count: int) -> np.ndarray:
  """This process's example indices, -1 for padding, shape [num_batches, rows].

  Global batch b holds examples [b*B, (b+1)*B) in order, and process p owns rows
  [p*B/P, (p+1)*B/P) of it, so every process yields the same number of batches
  (collectives stay in step) and the gathered batches list each example once, in order.
  """
  rows = _per_process(batch_size, process_count)
  num_batches = -(-num_examples // batch_size)
  padded = np.full(num_batches * batch_size, -1, np.int64)
  padded[:num_examples] = np.arange(num_examples)
  per_batch = padded.reshape(num_batches, process_count, rows)
  return per_batch[:, process_index]


def iter_eval_batches(data_cfg, *, split: str, batch_size: int, process_index: int = 0,
                      process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `split`; the last batch is padded and `_valid` marks real rows."""
  source = sources.get_source(_get(data_cfg, "name"), split, _get(data_cfg, "data_dir", ""))
  indices = eval_indices(len(source), batch_size, process_index, process_count)
  rows = _EvalRow(source, _make_preprocess(data_cfg, source, train=False))
  dataset = grain.MapDataset.source(indices.reshape(-1)).map(rows).batch(indices.shape[1])
  # Threads read ahead while the caller evaluates the previous batch.
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
