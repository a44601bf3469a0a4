"""Random-access example sources: TFDS ArrayRecord data behind one small wrapper.

The wrapper exists to turn storage failures into errors a user can act on: a
dataset that was never prepared, or a truncated/corrupt ArrayRecord file, is
reported with the file, the split and the fix, instead of a Riegeli traceback
from inside a grain worker. Nothing here ever deletes or rewrites data.
"""

import os
import re
from typing import Any

from array_record.python import array_record_module
import tensorflow_datasets as tfds

from mmjax.data import decode
from mmjax.data import world
from mmjax.errors import MmjaxError

WORLD = "mm_world"


class DataError(MmjaxError, RuntimeError):
  """A dataset is missing, from another build, or damaged on disk."""


def default_data_dir(data_dir: str = "") -> str:
  return (data_dir or os.environ.get("MMJAX_DATA_DIR")
          or os.path.expanduser("~/.cache/mmjax/tensorflow_datasets"))


def _rebuild_hint(data_dir: str) -> str:
  return (f"Fix: rebuild the dataset into a fresh data_dir (or delete the damaged "
          f"dataset folder under {data_dir} yourself and rebuild); nothing was deleted.")


class Source:
  """Sequence of decoded examples (dicts of numpy / bytes / int) of one split."""

  def __init__(self, name: str, split: str, data_dir: str, tfds_source, files: list[str]):
    self.name, self.split, self.data_dir = name, split, data_dir
    self._source = tfds_source
    self.files = files
    self.features = list(tfds_source.dataset_info.features.keys())
    self._decode_batch = decode.make_batch_decoder(tfds_source.dataset_info.features)

  def __len__(self) -> int:
    return len(self._source)

  @property
  def info(self):
    """The dataset's TFDS DatasetInfo (its features and splits), for tools that write
    derived datasets (mmjax/pretokenize)."""
    return self._source.dataset_info

  def __getitem__(self, index: int) -> dict[str, Any]:
    try:
      return self._source[index]
    except (RuntimeError, ValueError, OSError) as e:
      raise DataError(
          f"could not read example {index} of {self.name} split {self.split!r} "
          f"(files: {self.files}): {e}. The data on disk is corrupt or truncated. "
          + _rebuild_hint(self.data_dir)) from e

  def read_batch(self, indices) -> dict[str, Any]:
    """Examples `indices` as columns (feature -> [B, ...] array or list), decoded in one
    pass per feature where the dataset's features allow (see decode.py)."""
    indices = [int(i) for i in indices]
    if self._decode_batch is None:
      return decode.columns_of([self[i] for i in indices])
    try:
      records = [self._source.data_source[i] for i in indices]
      return self._decode_batch(records)
    except Exception:  # pylint: disable=broad-except
      # Read one by one to name the example that fails (raises DataError).
      for i in indices:
        self[i]
      raise

  def __repr__(self) -> str:
    # grain writes this into iterator state: keep it free of paths so a
    # checkpoint resumes when the data moves.
    return f"Source({self.name!r}, split={self.split!r}, n={len(self)})"


def _probe(path: str, expected: int) -> str | None:
  """What is wrong with one ArrayRecord shard, or None."""
  if not os.path.exists(path):
    return "is missing"
  reader = array_record_module.ArrayRecordReader(path)
  if not reader.ok():  # the footer/index did not read: truncated or overwritten
    return "is truncated or corrupt (its ArrayRecord footer does not read)"
  found = reader.num_records()
  reader.close()
  if found != expected:
    return f"holds {found} records, but dataset_info.json says {expected}"
  return None


def _check_files(name: str, split: str, data_dir: str, info) -> list[str]:
  """Opens every shard of `split`; a truncated file fails here, before training."""
  base = split.split("[")[0]
  if base not in info.splits:  # e.g. under tfds.testing.mock_data: no files to check
    return []
  split_info = info.splits[base]
  files = [os.fspath(p) for p in split_info.filepaths]
  for path, expected in zip(files, split_info.shard_lengths):
    problem = _probe(path, expected)
    if problem:
      raise DataError(f"{name} split {split!r}: file {path} {problem}. " + _rebuild_hint(data_dir))
  return files


def _world_config(name: str) -> str:
  config = name.partition("/")[2] or "default"
  known = [c.name for c in world.CONFIGS]
  if config not in known:
    raise DataError(f"unknown dataset {name!r}: the built-in world has "
                    f"{', '.join(f'{WORLD}/{c}' for c in known)}; any other name must be a "
                    f"TFDS dataset prepared as ArrayRecord in data_dir")
  return config


def check_name(name: str, data_dir: str = "") -> None:
  """Raises DataError for a dataset name that names nothing: neither a built-in world
  config, nor a TFDS dataset, nor a folder of prepared data in `data_dir`. Reads no data
  (config validation calls it)."""
  if not isinstance(name, str) or not name:
    raise DataError(f"dataset name {name!r}: expected e.g. '{WORLD}/tiny' or a TFDS name")
  if name == WORLD or name.startswith(WORLD + "/"):
    _world_config(name)
    return
  base = name.split("/")[0].split(":")[0]
  if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", base) or ".." in name.split("/"):
    raise DataError(f"dataset name {name!r} is not a dataset name (letters, digits, _, - "
                    f"and ., then an optional /config and :version); it names a dataset, not "
                    f"a path: put the folder that holds prepared datasets in data_dir")
  if os.path.isdir(os.path.join(default_data_dir(data_dir), base)):
    return  # prepared there (perhaps by a builder this TFDS does not register)
  try:
    tfds.builder_cls(base)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(f"unknown dataset {name!r}: not '{WORLD}/<config>', not a TFDS dataset "
                    f"and not prepared in {default_data_dir(data_dir)}") from None


def get_source(name: str, split: str, data_dir: str = "") -> Source:
  """`name` is "mm_world/<config>" (built here on first use) or any TFDS dataset
  already prepared as ArrayRecord in `data_dir`."""
  data_dir = default_data_dir(data_dir)
  if name == WORLD or name.startswith(WORLD + "/"):
    config = _world_config(name)
    tfds_source = world.prepare(config, data_dir).as_data_source(split)
  else:
    try:
      tfds_source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (NotImplementedError, AssertionError, FileNotFoundError, ValueError) as e:
      raise DataError(
          f"dataset {name!r} split {split!r} is not prepared as ArrayRecord in {data_dir} "
          f"({type(e).__name__}: {e}). Fix: prepare it there, e.g. `tfds build {name} "
          f"--data_dir={data_dir} --file_format=array_record`, or point "
          f"data_dir / $MMJAX_DATA_DIR at a directory that has it.") from e
  files = _check_files(name, split, data_dir, tfds_source.dataset_info)
  return Source(name, split, data_dir, tfds_source, files)
