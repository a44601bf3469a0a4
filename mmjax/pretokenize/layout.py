"""Where pretokenized data goes, and the manifest that says who wrote it.

A pretokenized dataset is an ordinary TFDS folder, so a recipe reads it by name with
`data.name` and `data.data_dir` like any prepared dataset:

  OUT/<name>/<config>/1.0.0/
      dataset_info.json, features.json          TFDS metadata (written last)
      <name>-<split>.array_record-0000i-of-0000n  the shards
      pretokenize.json                           the manifest (below)

The manifest records the tokenizer's fingerprint, the source dataset and every finished
shard with its record count. It is what makes a rerun idempotent (finished shards are
skipped) and what refuses an output folder made by another tokenizer or from another
dataset. Every file is written to a temporary name and renamed, so a killed run leaves
either a finished file or none.
"""
from __future__ import annotations

import json
import os

from array_record.python import array_record_module

from mmjax.pretokenize.tokenizer import PretokenizeError

VERSION = "1.0.0"
MANIFEST = "pretokenize.json"


def dataset_dir(out: str, name: str, config: str) -> str:
  return os.path.join(out, name, config, VERSION)


def shard_name(name: str, split: str, index: int, count: int) -> str:
  return f"{name}-{split}.array_record-{index:05d}-of-{count:05d}"


def write_json_atomic(path: str, value) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def read_manifest(directory: str) -> dict | None:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise PretokenizeError(f"{path} is not readable JSON ({e}); it was damaged: give "
                           f"another --out, or remove that folder yourself") from None


def claim(directory: str, owner: dict, overwrite: bool) -> dict:
  """The manifest to continue from: the folder's own if `owner` (tokenizer fingerprint and
  source dataset) made it, a fresh one if the folder is new or `overwrite` is set; else
  PretokenizeError. A non-empty folder without a manifest is never written into."""
  found = read_manifest(directory)
  if found is None:
    if os.path.isdir(directory) and os.listdir(directory):
      raise PretokenizeError(f"--out: {directory} holds files that pretokenize did not write "
                             f"(no {MANIFEST}); give an empty or new --out folder")
    return dict(owner, shards={})
  mine = all(found.get(k) == v for k, v in owner.items() if k != "workdir")
  if mine:
    return found
  if not overwrite:
    theirs = {k: found.get(k) for k in ("dataset", "fingerprint", "workdir")}
    raise PretokenizeError(f"--out: {directory} holds pretokenized data of another tokenizer "
                           f"or dataset ({theirs}); give another --out, or pass --overwrite "
                           f"to replace it")
  return dict(owner, shards={})


def finished(manifest: dict, directory: str, shard: str, expected: int) -> bool:
  """Whether `shard` was finished by this manifest's tokenizer and is still on disk whole."""
  if manifest["shards"].get(shard) != expected:
    return False
  path = os.path.join(directory, shard)
  if not os.path.exists(path):
    return False
  reader = array_record_module.ArrayRecordReader(path)
  ok = reader.ok() and reader.num_records() == expected
  reader.close()
  return ok
