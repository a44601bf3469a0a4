"""Input pipelines the trainer and evaluators call: source -> grain -> numpy batches.

Batches are host-local: with P processes each yields batch_size // P rows and
`mmjax.sharding` assembles the global array.
"""

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


class GlobalOrder:
  """The training stream as one global sequence, the same for any number of processes.

  Global position g (counting examples since the start of training) reads example
  perm_e[g mod N] of epoch e = g // N, where perm_e is a permutation seeded by
  (seed, e). Global batch k is positions [kB, (k+1)B); process p of P reads rows
  [p B/P, (p+1) B/P) of it. A position therefore means the same examples whatever
  the process count, so a run resumed on another number of processes continues the
  stream with nothing repeated or lost.
  """

  def __init__(self, num_examples: int, seed: int, global_batch: int, process_index: int,
               process_count: int, start: int = 0):
    self.n, self.seed, self.start = num_examples, seed, start
    self.global_batch = global_batch
    self.rows = _per_process(global_batch, process_count)
    self.offset = process_index * self.rows
    self._perms: dict[int, np.ndarray] = {}

  def position(self, j: int) -> int:
    """Global position of this process's j-th example."""
    return self.start + (j // self.rows) * self.global_batch + self.offset + j % self.rows

  def index(self, g: int) -> int:
    epoch, i = divmod(g, self.n)
    if epoch not in self._perms:
      if len(self._perms) > 2:  # the stream only moves forward: drop old epochs
        self._perms.pop(min(self._perms))
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
    return int(self._perms[epoch][i])


class _TrainRow:
  """Local index j -> preprocessed example at its global position. Random augmentation
  draws from an rng keyed by (seed, global position): identical after any resume."""

  def __init__(self, source, order: GlobalOrder, fn):
    self.source, self.order, self.fn = source, order, fn

  def __call__(self, j: int) -> dict[str, np.ndarray]:
    g = self.order.position(int(j))
    rng = np.random.default_rng([self.order.seed, 1, g])
    return self.fn(self.source[self.order.index(g)], rng)


class TrainIterator:
  """Infinite iterator of this process's rows of consecutive global batches.

  Its state is {"examples": global examples consumed, "global_batch": B}: independent of
  the process count, JSON-serialisable, exact.
  """

  def __init__(self, make_dataset, global_batch: int, examples: int = 0):
    self._make = make_dataset
    self.global_batch = global_batch
    self._start(examples)

  def _start(self, examples: int):
    self.examples = examples
    self._it = iter(self._make(examples))

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._it)
    self.examples += self.global_batch
    return batch

  def get_state(self) -> dict:
    return {"examples": self.examples, "global_batch": self.global_batch}

  def set_state(self, state: Mapping) -> None:
    if "examples" not in state:
      raise ValueError(f"input state {dict(state)} is not from this pipeline (no 'examples')")
    self._start(int(state["examples"]))


# An upper bound on examples one run reads (grain datasets need a length; this is lazy).
_STREAM_LENGTH = 1 << 50


def make_train_iterator(data_cfg, *, batch_size: int, seed: int,
                        process_index: int = 0, process_count: int = 1) -> TrainIterator:
  """Shuffled (per epoch, seeded), infinite, deterministic batches of this process's rows.

  batch_size is global; each process yields batch_size // process_count rows.
  """
  rows = _per_process(batch_size, process_count)
  source = sources.get_source(_get(data_cfg, "name"), _get(data_cfg, "train_split", "train"),
                              _get(data_cfg, "data_dir", ""))
  if len(source) < batch_size:
    raise ValueError(f"{source!r} has {len(source)} examples: fewer than one batch of "
                     f"{batch_size}")
  preprocess = _make_preprocess(data_cfg, source, train=True)
  if _get(data_cfg, "worker_count", 0):
    raise ValueError(f"data.worker_count={_get(data_cfg, 'worker_count')}: worker processes are "
                     "not supported by the global-order pipeline; use 0 (in-process, measured "
                     "faster on 2 cores) and config.prefetch_batches for overlap")

  def make_dataset(examples: int):
    order = GlobalOrder(len(source), seed, batch_size, process_index, process_count,
                        start=examples)
    ds = grain.MapDataset.range(_STREAM_LENGTH).map(_TrainRow(source, order, preprocess))
    # In-process, no read-ahead threads: measured no faster on 2 cores; the trainer's
    # prefetch thread overlaps input with the step instead.
    return ds.batch(rows).to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))

  return TrainIterator(make_dataset, batch_size)


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
