"""Pretokenizing one dataset with one tokenizer: every split, shard by shard.

The image op of the tokenizer's own recipe turns the source images into the pixels the
tokenizer was trained on; batches of a fixed size (the last one padded, so one compile
serves all) go through the jitted `tokens/<objective>` predict function. A shard finished
by the same tokenizer is skipped, so a rerun writes nothing (layout.py).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

import numpy as np

from mmjax.data import preprocess as preprocess_lib
from mmjax.data import sources
from mmjax.data import text_tokenizer
from mmjax.pretokenize import layout, writer
from mmjax.pretokenize import tokenizer as tokenizer_lib
from mmjax.pretokenize.tokenizer import PretokenizeError


@dataclasses.dataclass(frozen=True)
class Request:
  tokenizer: str           # the tokenizer's workdir
  dataset: str             # the source dataset's name (mm_world/default, a TFDS name)
  out: str                 # the data_dir the result goes into
  name: str = ""           # the result's dataset name; "" = "<source>_tokens"
  data_dir: str = ""       # the source's data_dir ("" = $MMJAX_DATA_DIR or the default)
  batch_size: int = 256
  shard_size: int = 8192
  overwrite: bool = False


def output_name(req: Request) -> tuple[str, str]:
  """(dataset name, config) of the result: the source's config is kept."""
  base, _, config = req.dataset.partition("/")
  name = req.name or base.split(":")[0] + "_tokens"
  if not name.replace("_", "").isalnum() or not name[0].isalpha():
    raise PretokenizeError(f"--name {name!r}: a dataset name is letters, digits and _, "
                           f"starting with a letter (e.g. mm_world_tokens)")
  return name, (config.split(":")[0] or "default")


def _check(req: Request) -> None:
  """Bad input refused before any restore or read."""
  for field in ("batch_size", "shard_size"):
    if getattr(req, field) <= 0:
      raise PretokenizeError(f"--{field}={getattr(req, field)}: must be a positive integer")
  try:
    sources.check_name(req.dataset, req.data_dir)
  except sources.DataError as e:
    raise PretokenizeError(f"--dataset: {e}") from None


class _Split:
  """One split's source, image op and progress."""

  def __init__(self, req: Request, tok, split: str):
    self.source = sources.get_source(req.dataset, split, req.data_dir)
    key = tok.objective.modality
    self.image_from = tok.image_op["from"]
    self.preprocess = preprocess_lib.Preprocess(
        {key: dict(tok.image_op)}, tokenizer=text_tokenizer.make_tokenizer("byte"),
        train=False, features=self.source.features)
    self.key, self.tok, self.batch_size = key, tok, req.batch_size

  def records(self, features, lo: int, hi: int):
    """The serialized examples lo..hi-1 of the split."""
    for start in range(lo, hi, self.batch_size):
      idx = np.arange(start, min(start + self.batch_size, hi))
      columns = self.source.read_batch(idx)
      images = self.preprocess.batch({self.image_from: columns[self.image_from]})[self.key]
      pad = self.batch_size - len(idx)
      if pad:  # one compiled shape for every batch
        images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
      ids = self.tok.encode(images)[:len(idx)]
      yield from writer.rows(columns, features, ids, self.image_from)


def _owner(req: Request, tok) -> dict:
  return {"dataset": req.dataset, "fingerprint": tok.fingerprint, "workdir": tok.workdir,
          "step": tok.step, "levels": list(tok.objective.levels),
          "grid": list(tok.grid), "codebook_size": tok.codebook_size}


def pretokenize(req: Request, log=lambda s: print(s, file=sys.stderr, flush=True)) -> dict:
  """Writes (or completes) the pretokenized dataset; returns what it did."""
  _check(req)
  tok = tokenizer_lib.load(req.tokenizer)
  name, config = output_name(req)
  directory = layout.dataset_dir(req.out, name, config)
  manifest = layout.claim(directory, _owner(req, tok), req.overwrite)
  os.makedirs(directory, exist_ok=True)
  if layout.read_manifest(directory) != manifest:  # a rerun touches no file
    layout.write_json_atomic(os.path.join(directory, layout.MANIFEST), manifest)
  splits = list(sources.get_source(req.dataset, "train", req.data_dir).info.splits.keys())
  written = skipped = 0
  lengths, features, seconds = {}, None, 0.0
  for split in splits:
    part = _Split(req, tok, split)
    features = features or writer.output_features(
        part.source.info.features, part.image_from, tok.grid[0] * tok.grid[1])
    n = len(part.source)
    count = max(1, math.ceil(n / req.shard_size))
    lengths[split] = []
    for i in range(count):
      lo, hi = i * req.shard_size, min(n, (i + 1) * req.shard_size)
      shard = layout.shard_name(name, split, i, count)
      lengths[split].append(hi - lo)
      if layout.finished(manifest, directory, shard, hi - lo):
        skipped += hi - lo
        continue
      start = time.perf_counter()
      writer.write_shard(os.path.join(directory, shard), part.records(features, lo, hi))
      seconds += time.perf_counter() - start
      written += hi - lo
      manifest["shards"][shard] = hi - lo
      layout.write_json_atomic(os.path.join(directory, layout.MANIFEST), manifest)
      log(f"pretokenize {split}: shard {i + 1}/{count} ({hi}/{n} examples, "
          f"{written / max(seconds, 1e-9):.0f} examples/s)")
  if written or not os.path.exists(os.path.join(directory, "dataset_info.json")):
    writer.write_metadata(directory, name, features, lengths,
                          f"{req.dataset} pretokenized by {tok.workdir} step {tok.step} "
                          f"(params sha256 {tok.fingerprint})")
  return {"dataset": f"{name}/{config}", "data_dir": os.path.abspath(req.out),
          "directory": directory, "written": written, "skipped": skipped,
          "examples_per_s": written / seconds if seconds else None,
          "tokens_per_image": tok.grid[0] * tok.grid[1], "codebook_size": tok.codebook_size}
