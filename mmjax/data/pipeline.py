"""Input pipelines the trainer and evaluators call: source -> grain -> numpy batches.

Batches are host-local: with P processes each yields batch_size // P rows and
`mmjax.runtime.sharding` assembles the global array.

The unit of work is a whole batch: grain maps batch index -> (read the batch's records,
decode them per feature, run the batched preprocessing ops). Each batch is a pure
function of its index, the seed and the preprocess section, so it is the same whether it is built in
this process, in a read-ahead thread, or in any of N grain worker processes.
"""

import functools
from typing import Any, Iterator, Mapping

import grain
import numpy as np

from mmjax.data import packed_iterator
from mmjax.data import packing
from mmjax.data import preprocess as preprocess_lib
from mmjax.data import sources
from mmjax.data import text_tokenizer as tokenizer_lib
from mmjax.data import workers as workers_lib
from mmjax.config.registry import FieldError
from mmjax.errors import MmjaxError

# The data API callers need lives in this module; sources.py holds the implementation.
DataError = sources.DataError
get_source = sources.get_source
check_dataset_name = sources.check_name
InputConfigError = workers_lib.InputConfigError


class InputError(MmjaxError, RuntimeError):
  """Building a batch failed (a worker died, or an op raised): names the examples."""


def _get(cfg, key: str, default: Any = None) -> Any:
  """Works for ConfigDict and plain dicts alike."""
  return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _as_dicts(value: Any) -> Any:
  """ConfigDict -> nested dicts, so the section can be read with ordinary mapping code."""
  return value.to_dict() if hasattr(value, "to_dict") else value


def _make_preprocess(data_cfg, source: sources.Source, train: bool):
  tok = _as_dicts(_get(data_cfg, "tokenizer")) or {}
  tokenizer = tokenizer_lib.make_tokenizer(tok.get("kind", "byte"), tok.get("model_path", ""))
  return preprocess_lib.Preprocess(_as_dicts(_get(data_cfg, "preprocess")), tokenizer=tokenizer,
                                   train=train, features=source.features)


def _per_process(batch_size: int, process_count: int) -> int:
  if batch_size % process_count:
    raise InputConfigError(f"batch_size {batch_size} is not divisible by process_count "
                           f"{process_count}; every process must get the same number of rows: "
                           f"use a multiple of {process_count}")
  return batch_size // process_count


def validate(data_cfg, *, batch_size: int, process_count: int = 1) -> workers_lib.Parallelism:
  """Checks a task's data settings without reading data: worker_count for this host, the
  batch against the process count, and the preprocess section (ops, args, batched=True on an
  op that cannot batch). Raises InputConfigError/ValueError naming the key."""
  _per_process(batch_size, process_count)
  parallelism = workers_lib.resolve(_get(data_cfg, "worker_count", workers_lib.AUTO))
  tok = _as_dicts(_get(data_cfg, "tokenizer")) or {}
  if tok.get("kind", "byte") == "byte":  # other tokenizers load files: checked when built
    preprocess_lib.Preprocess(_as_dicts(_get(data_cfg, "preprocess")),
                              tokenizer=tokenizer_lib.make_tokenizer("byte"))
  packing_config(data_cfg)
  return parallelism


def packing_config(data_cfg) -> packing.PackingConfig | None:
  """The task's `packing` section, checked against its preprocess section; None if off."""
  try:
    cfg = packing.parse(_get(data_cfg, "packing"))
    if cfg is not None:
      cfg.check_preprocess(_as_dicts(_get(data_cfg, "preprocess")))
  except FieldError as e:
    raise InputConfigError(f"packing.{e.field}: {e}") from None
  return cfg


def output_keys(data_cfg) -> list[str]:
  """Every batch key the task's preprocess section makes, from the section alone."""
  section = _as_dicts(_get(data_cfg, "preprocess"))
  return preprocess_lib.Preprocess(section, tokenizer=tokenizer_lib.make_tokenizer("byte")).output_keys()


def tokenizer_vocab_size(data_cfg) -> int:
  """How many ids the task's tokenizer makes (a SentencePiece model is read for it)."""
  tok = _as_dicts(_get(data_cfg, "tokenizer")) or {}
  return tokenizer_lib.vocab_size(tok.get("kind", "byte"), tok.get("model_path", ""))


def input_shapes(data_cfg) -> dict[str, tuple[int, ...] | None]:
  """{batch key: per-example shape} the task's preprocess section makes, from the section alone
  (None where it varies, e.g. audio without a fixed length). Needs no tokenizer files:
  shapes do not depend on the tokenizer."""
  section = _as_dicts(_get(data_cfg, "preprocess"))
  return preprocess_lib.Preprocess(section, tokenizer=tokenizer_lib.make_tokenizer("byte")).shapes()


def _to_iter(dataset: grain.MapDataset, parallelism: workers_lib.Parallelism):
  """Batches in order, built in process (with read-ahead threads) or in worker processes."""
  if parallelism.workers:
    from absl import flags  # grain's worker start-up reads its absl flags
    if not flags.FLAGS.is_parsed():  # a library caller (tests, notebooks) parsed none
      flags.FLAGS.mark_as_parsed()
    return dataset.to_iter_dataset().mp_prefetch(
        grain.MultiprocessingOptions(num_workers=parallelism.workers, per_worker_buffer_size=2))
  threads = parallelism.read_threads
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                   prefetch_buffer_size=2 * threads))


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

  def position(self, j):
    """Global position(s) of this process's j-th example(s) (int or int array)."""
    return self.start + (j // self.rows) * self.global_batch + self.offset + j % self.rows

  def index(self, g: int) -> int:
    return int(self.indices(np.asarray([g]))[0])

  def indices(self, g: np.ndarray) -> np.ndarray:
    """Dataset indices of global positions g (any shape)."""
    epoch, i = np.divmod(g, self.n)
    out = np.empty_like(g)
    for e in np.unique(epoch):
      out[epoch == e] = _permutation(self.seed, int(e), self.n)[i[epoch == e]]
    return out


@functools.lru_cache(maxsize=4)  # the stream moves forward: a few epochs suffice
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def _some(indices: np.ndarray, n: int = 8) -> str:
  head = ", ".join(str(int(i)) for i in indices[:n])
  return f"[{head}{', ...' if len(indices) > n else ''}] ({len(indices)} in all)"


def _build(source, preprocess, indices: np.ndarray, positions: np.ndarray | None,
           seed: int) -> dict[str, np.ndarray]:
  """One batch: read, decode, preprocess. Random augmentation draws from an rng keyed by
  (seed, global position), the same as the per-example path: identical after any resume."""
  rngs = None
  if preprocess.random and positions is not None:
    rngs = [np.random.default_rng([seed, 1, int(g)]) for g in positions]
  try:
    return preprocess.batch(source.read_batch(indices), rngs)
  except DataError:
    raise  # already names the example and the file
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f"preprocessing examples {_some(indices)} of {source!r} failed: "
                     f"{type(e).__name__}: {e}") from e


class _TrainBatch:
  """k -> this process's rows of the k-th global batch after `order.start`."""

  def __init__(self, source, order: GlobalOrder, preprocess):
    self.source, self.order, self.preprocess = source, order, preprocess

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    positions = self.order.position(np.arange(k * self.order.rows, (k + 1) * self.order.rows))
    return _build(self.source, self.preprocess, self.order.indices(positions), positions,
                  self.order.seed)


class TrainIterator:
  """Infinite iterator of this process's rows of consecutive global batches.

  Its state is {"examples": global examples consumed, "global_batch": B}: independent of
  the process count, JSON-serialisable, exact.
  """

  def __init__(self, make_dataset, global_batch: int, examples: int = 0, describe=None):
    self._make = make_dataset
    self.global_batch = global_batch
    self._describe = describe or (lambda g: f"global positions [{g}, {g + global_batch})")
    self._it = None
    self._start(examples)

  def _start(self, examples: int):
    self.close()
    self.examples = examples
    self._it = iter(self._make(examples))

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    try:
      batch = next(self._it)
    except (DataError, InputError):
      raise
    except Exception as e:  # e.g. a grain worker process killed (OOM) or crashed
      raise InputError(f"the input pipeline failed while building the batch of "
                       f"{self._describe(self.examples)}: {type(e).__name__}: {e}") from e
    self.examples += self.global_batch
    return batch

  def close(self) -> None:
    """Stops grain worker processes, if any (they also stop when the process exits)."""
    if self._it is not None and hasattr(self._it, "close"):
      self._it.close()

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
  parallelism = validate(data_cfg, batch_size=batch_size, process_count=process_count)
  rows = batch_size // process_count
  source = sources.get_source(_get(data_cfg, "name"), _get(data_cfg, "train_split", "train"),
                              _get(data_cfg, "data_dir", ""))
  if len(source) < batch_size:
    raise ValueError(f"{source!r} has {len(source)} examples: fewer than one batch of "
                     f"{batch_size}")
  preprocess = _make_preprocess(data_cfg, source, train=True)
  pack = packing_config(data_cfg)
  if pack is not None:
    return packed_iterator.PackedTrainIterator(
        _DocumentBuilder(source, preprocess, pack, seed), pack, batch_size,
        process_index=process_index, process_count=process_count,
        read_threads=parallelism.read_threads)

  def make_dataset(examples: int):
    order = GlobalOrder(len(source), seed, batch_size, process_index, process_count,
                        start=examples)
    ds = grain.MapDataset.range(_STREAM_LENGTH // rows).map(_TrainBatch(source, order, preprocess))
    return _to_iter(ds, parallelism)

  def describe(g: int) -> str:
    order = GlobalOrder(len(source), seed, batch_size, process_index, process_count, start=g)
    indices = order.indices(order.position(np.arange(rows)))
    return (f"global positions [{g}, {g + batch_size}) (this process's rows: examples "
            f"{_some(indices)} of {source!r})")

  return TrainIterator(make_dataset, batch_size, describe=describe)


class _DocumentBuilder:
  """c -> the documents [c C, (c+1) C) of a packed task (C = `chunk`): document d is the k
  examples at global positions [d k, (d+1) k) of the shuffled training stream
  (GlobalOrder). A chunk's examples are preprocessed as one batch (one document at a time
  cost 13x the input time of the unpacked task); the documents are the same either way."""

  chunk = packed_iterator.DOCUMENTS_PER_CHUNK

  def __init__(self, source, preprocess, pack: packing.PackingConfig, seed: int):
    self.source, self.preprocess, self.pack, self.seed = source, preprocess, pack, seed
    self.order = GlobalOrder(len(source), seed, pack.pairs, 0, 1)

  def __call__(self, c: int) -> list[dict[str, np.ndarray]]:
    k, n = self.pack.pairs, self.chunk
    positions = np.arange(c * n * k, (c + 1) * n * k)
    batch = _build(self.source, self.preprocess, self.order.indices(positions), positions,
                   self.seed)
    return [packing.document(self.pack, {key: v[d * k:(d + 1) * k] for key, v in batch.items()})
            for d in range(n)]


class _EvalBatch:
  """Row of example indices -> preprocessed batch; index -1 is padding (a copy of example 0)."""

  def __init__(self, source, preprocess, indices: np.ndarray):
    self.source, self.preprocess, self.indices = source, preprocess, indices

  def __call__(self, b: int) -> dict[str, np.ndarray]:
    row = self.indices[b]
    out = _build(self.source, self.preprocess, np.maximum(row, 0), None, 0)
    out["_valid"] = row >= 0
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
  parallelism = validate(data_cfg, batch_size=batch_size, process_count=process_count)
  source = sources.get_source(_get(data_cfg, "name"), split, _get(data_cfg, "data_dir", ""))
  indices = eval_indices(len(source), batch_size, process_index, process_count)
  build = _EvalBatch(source, _make_preprocess(data_cfg, source, train=False), indices)
  # The train path's parallelism: batches are read ahead while the caller evaluates.
  it = iter(_to_iter(grain.MapDataset.range(len(indices)).map(build), parallelism))
  try:
    yield from it
  finally:
    if hasattr(it, "close"):
      it.close()
