"""A trained image tokenizer, loaded from its workdir for pretokenization.

The workdir is an ordinary training workdir whose recipe has one `fsq_autoencoder`
objective (configs/mm_world_tokenizer.py). Its newest finished checkpoint is restored onto
one device (read-only: a trainer may still be writing it), and its `tokens/<objective>`
predict function is jitted: images -> token ids. The fingerprint names the checkpoint by
content (a hash of its parameters), so a pretokenized folder can say which tokenizer
made it whatever the workdir is called or wherever it moved.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable

import jax
import numpy as np

from mmjax.checkpoint.errors import CheckpointError
from mmjax.errors import MmjaxError
from mmjax.objectives.fsq_autoencoder import FsqAutoencoderObjective
from mmjax.training.restore import restore_params


class PretokenizeError(MmjaxError, RuntimeError):
  """Bad input to pretokenize: what is wrong and what would be right, in one line."""


@dataclasses.dataclass(frozen=True)
class LoadedTokenizer:
  workdir: str
  step: int
  fingerprint: str          # sha256 of the restored parameters (hex)
  objective: FsqAutoencoderObjective
  image_op: dict            # the tokenizer task's preprocess entry for its image
  encode: Callable[[np.ndarray], np.ndarray]  # float images [B, H, W, C] -> int32 ids [B, N]

  @property
  def grid(self) -> tuple[int, int]:
    size = self.image_op["size"]
    return self.objective.spec.grid((size, size))

  @property
  def codebook_size(self) -> int:
    return self.objective.spec.codebook_size


def params_fingerprint(params: Any) -> str:
  """sha256 over every parameter's path, dtype, shape and bytes."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0],
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    value = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}|{value.dtype}|{value.shape}|".encode())
    h.update(value.tobytes())
  return h.hexdigest()


def _tokenizer_task(exp, workdir: str):
  """(task name, its fsq_autoencoder objective): the workdir must have exactly one."""
  found = [(name, o) for name, t in exp.tasks.items() for o in t.objectives
           if isinstance(o, FsqAutoencoderObjective)]
  if len(found) != 1:
    raise PretokenizeError(
        f"--tokenizer {workdir!r}: its recipe has {len(found)} objectives of type "
        f"fsq_autoencoder; pretokenize needs a workdir trained with exactly one (e.g. "
        f"python -m mmjax.train --config configs/mm_world_tokenizer.py --workdir {workdir})")
  return found[0]


def load(workdir: str) -> LoadedTokenizer:
  """The tokenizer of `workdir`'s newest checkpoint; PretokenizeError if there is none."""
  if not os.path.isdir(workdir):
    raise PretokenizeError(f"--tokenizer {workdir!r} is not a folder; give the workdir of a "
                           f"tokenizer run (python -m mmjax.train --config "
                           f"configs/mm_world_tokenizer.py --workdir DIR)")
  try:
    exp, step, ctx, params, _ = restore_params(workdir)
  except FileNotFoundError as e:
    raise PretokenizeError(f"--tokenizer: {e}") from None
  except CheckpointError as e:
    raise PretokenizeError(f"--tokenizer {workdir!r} has no finished checkpoint ({e}); "
                           f"train it until it saves one") from None
  task, objective = _tokenizer_task(exp, workdir)
  image_op = dict(exp.tasks[task].data.preprocess[objective.modality])
  predict = ctx.jit(ctx.predict(task, f"tokens/{objective.name}"))
  modality = objective.modality

  def encode(images: np.ndarray) -> np.ndarray:
    return np.asarray(predict(params, {modality: images})["ids"])

  return LoadedTokenizer(workdir=os.path.abspath(workdir), step=int(step),
                         fingerprint=params_fingerprint(params), objective=objective,
                         image_op=image_op, encode=encode)
