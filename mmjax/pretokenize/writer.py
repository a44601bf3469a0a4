"""Writing pretokenized examples as TFDS ArrayRecord shards, and the TFDS metadata.

What an output example holds: `<image>_tokens`, the image's token ids (int32 [h * w],
row-major over the tokenizer's grid, stored as raw bytes so the batched decoder of
mmjax/data/decode.py reads a whole batch in one pass), and every text and scalar feature of
the source example unchanged (captions, labels, ids): a recipe's tokenize op then reads the
caption as it does from the source, with any text tokenizer. The source's other tensors
(the image itself, video, audio) are not copied.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

from array_record.python import array_record_module
import numpy as np
import tensorflow_datasets as tfds

from mmjax.pretokenize import layout

TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_Tensor, _Text = tfds.features.Tensor, tfds.features.Text


def kept(feature) -> bool:
  """Text and scalar features travel with the tokens; tensors (pixels, audio) do not."""
  return isinstance(feature, _Text) or (isinstance(feature, _Tensor) and feature.shape == ())


def output_features(source_features, image_key: str, num_tokens: int):
  """The FeaturesDict of the pretokenized dataset."""
  out = {k: f for k, f in source_features.items() if k != image_key and kept(f)}
  out[image_key + "_tokens"] = _Tensor(shape=(num_tokens,), dtype=np.int32,
                                       encoding=tfds.features.Encoding.BYTES)
  return tfds.features.FeaturesDict(out)


def rows(columns: Mapping[str, Sequence], features, ids: np.ndarray, image_key: str):
  """The serialized examples of one batch: its kept columns and its token ids."""
  names = [k for k in features.keys() if k != image_key + "_tokens"]
  for i in range(len(ids)):
    example = {k: columns[k][i] for k in names}
    example[image_key + "_tokens"] = ids[i].astype(np.int32)
    yield features.serialize_example(example)


def write_shard(path: str, records) -> int:
  """Writes `records` to `path` through a temporary file; returns how many."""
  tmp = path + ".tmp"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  n = 0
  for r in records:
    writer.write(r)
    n += 1
  writer.close()
  os.replace(tmp, path)
  return n


def write_metadata(directory: str, name: str, features, lengths: Mapping[str, list[int]],
                   description: str) -> None:
  """dataset_info.json and features.json: what makes the folder a TFDS dataset that
  `tfds.data_source(name, data_dir=OUT)` (and so mmjax's sources) reads by name."""
  template = tfds.core.ShardedFileTemplate(data_dir=directory, dataset_name=name,
                                           filetype_suffix="array_record", template=TEMPLATE)
  infos = []
  for split, shard_lengths in lengths.items():
    size = sum(os.path.getsize(os.path.join(directory, layout.shard_name(
        name, split, i, len(shard_lengths)))) for i in range(len(shard_lengths)))
    infos.append(tfds.core.SplitInfo(name=split, shard_lengths=list(shard_lengths),
                                     num_bytes=size, filename_template=template.replace(
                                         split=split)))
  tfds.folder_dataset.write_metadata(data_dir=directory, features=features, split_infos=infos,
                                     filename_template=TEMPLATE, check_data=False,
                                     description=description)
