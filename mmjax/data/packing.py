"""Packed training rows: several examples (documents) in one row of a fixed length.

A *document* is k consecutive examples of the training stream (GlobalOrder's positions
[d k, (d+1) k)), each an (image, caption) pair, laid out as NMM's interleaved data:

    image_1  caption_1  image_2  caption_2  ...  image_k  caption_k

kind="pairs" is k = 1 (image-caption pairs); kind="interleaved" is k = pairs_per_document.
grain's FirstFitPackIterDataset packs documents into rows of `length` text tokens and
`images` image slots (a document goes to the first row where both its captions and its
images fit); rows of one global batch are one packing batch of B bins.

A packed batch holds, for text modality t and image modality i (ModelInputs' keys):
  t [B, length] ids, t_mask (a token of some document), t_segment (its document in the
  row, from 1; 0 = padding), t_order (its place in its document: TokenInfo.order),
  t_position (its place in its caption: the position embedding it takes);
  i [B, images, H, W, C], i_segment [B, images] (0 = an empty slot), i_order.
Each image takes one order value (its tokens are one bidirectional block, TokenInfo) and
each caption token the next ones after its image, so a caption sees its own image, the
captions and images before it in its document, and nothing of other documents.

Every process packs the global stream alike and keeps its rows of each global batch, so
the iterator state (grain's packing state: where in the document stream the next batch's
packing starts, and which of its bins come next) is the same in every process and resumes
exactly, on any number of processes.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import grain
import numpy as np

from mmjax.config.registry import FieldError, check

KINDS = ("pairs", "interleaved")


@dataclasses.dataclass(frozen=True)
class PackingConfig:
  """A task's `data.packing` section (absent or length 0: examples are not packed).

  length: text tokens per packed row.
  images: image slots per packed row (0 for a text-only task).
  kind: "pairs" (one image-caption pair per document) or "interleaved" (k of them).
  pairs_per_document: k, for kind="interleaved".
  text, image: the preprocess keys of the text and image modalities.
  """
  length: int = 0
  images: int = 0
  kind: str = "pairs"
  pairs_per_document: int = 2
  text: str = "text"
  image: str = "image"

  def __post_init__(self):
    check(isinstance(self.length, int) and self.length > 0, "length",
          f"must be a positive number of text tokens per row, got {self.length!r}")
    check(isinstance(self.images, int) and self.images >= 0, "images",
          f"must be an integer >= 0 (image slots per row), got {self.images!r}")
    check(self.kind in KINDS, "kind", f"{self.kind!r}; valid: {', '.join(map(repr, KINDS))}")
    check(isinstance(self.pairs_per_document, int) and self.pairs_per_document > 0,
          "pairs_per_document", f"must be a positive integer, got {self.pairs_per_document!r}")

  @property
  def pairs(self) -> int:
    """k: the (image, caption) pairs of one document."""
    return self.pairs_per_document if self.kind == "interleaved" else 1

  @property
  def packed_image(self) -> str:
    """The image key packed into slots, or "" when rows hold no images."""
    return self.image if self.images else ""

  def check_preprocess(self, preprocess: Mapping) -> None:
    """Refuses rows shorter than one document, and keys the preprocess section lacks."""
    op = dict(preprocess.get(self.text, {}))
    check(op.get("op") == "tokenize", "text",
          f"{self.text!r} is not a tokenize op of the preprocess section "
          f"(it has {sorted(preprocess)}); name the text key to pack")
    most = self.pairs * op["max_len"]
    check(self.length >= most, "length",
          f"length={self.length} is shorter than one example: a document of {self.pairs} "
          f"caption(s) holds up to {most} tokens (preprocess.{self.text}.max_len="
          f"{op['max_len']}); use length >= {most}")
    if self.images:
      check(dict(preprocess.get(self.image, {})).get("op") == "image", "image",
            f"{self.image!r} is not an image op of the preprocess section")
      check(self.images >= self.pairs, "images",
            f"images={self.images} is fewer than the {self.pairs} image(s) of one document; "
            f"use images >= {self.pairs}")


def parse(section) -> PackingConfig | None:
  """The `data.packing` section as a PackingConfig; None when packing is off."""
  if not section:
    return None
  section = dict(section.to_dict() if hasattr(section, "to_dict") else section)
  if not section.get("length", 0):
    return None
  names = {f.name for f in dataclasses.fields(PackingConfig)}
  unknown = sorted(set(section) - names)
  if unknown:
    raise FieldError(unknown[0], f"is not a packing setting; valid: {', '.join(sorted(names))}")
  return PackingConfig(**section)


def document(cfg: PackingConfig, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """k preprocessed examples (a batch of k rows) -> one document, variable length: the
  captions' valid tokens concatenated, the images stacked, and each token's order and
  position (module docstring)."""
  t = cfg.text
  ids, orders, positions, image_orders = [], [], [], []
  start = 0
  for j in range(cfg.pairs):
    caption = batch[t][j][batch[t + "_mask"][j]]
    if cfg.images:
      image_orders.append(start)  # the image's block; its caption follows it
      start += 1
    ids.append(caption)
    orders.append(start + np.arange(len(caption)))
    positions.append(np.arange(len(caption)))
    start += len(caption)
  out = {t: np.concatenate(ids).astype(np.int32),
         t + "_order": np.concatenate(orders).astype(np.int32),
         t + "_position": np.concatenate(positions).astype(np.int32)}
  if cfg.images:
    out[cfg.image] = batch[cfg.image][: cfg.pairs]
    out[cfg.image + "_order"] = np.asarray(image_orders, np.int32)
  return out


def _length_struct(cfg: PackingConfig) -> dict[str, int]:
  t, i = cfg.text, cfg.packed_image
  lengths = {t: cfg.length, t + "_order": cfg.length, t + "_position": cfg.length}
  if i:
    lengths.update({i: cfg.images, i + "_order": cfg.images})
  return lengths


def batch_keys(cfg: PackingConfig, packed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """grain's packed rows -> the batch keys of the module docstring (grain's per-feature
  segment ids become t_segment / i_segment; its positions are not used: a caption's
  positions restart at its first token, which for pairs is the same thing)."""
  t, i = cfg.text, cfg.packed_image
  out = {k: packed[k] for k in _length_struct(cfg)}
  out[t + "_segment"] = packed[t + "_segment_ids"].astype(np.int32)
  out[t + "_mask"] = out[t + "_segment"] > 0
  if i:
    out[i + "_segment"] = packed[i + "_segment_ids"].astype(np.int32)
  return out


def packed_rows(documents: grain.IterDataset, cfg: PackingConfig,
                global_batch: int) -> grain.IterDataset:
  """Documents -> packed rows, B bins packed at a time (one global batch), in order."""
  return grain.experimental.FirstFitPackIterDataset(
      documents, length_struct=_length_struct(cfg), num_packing_bins=global_batch,
      shuffle_bins=False)
