"""Config checks of one task against the model: its input resolutions and its token drop.

A task's input resolution is its own `data.preprocess` (image.size, video.frames and size,
audio.samples, text.max_len). The model takes any resolution its patch and tubelet sizes
divide (learned positions are interpolated to the task's grid, and cut for shorter text),
so these are the checks; without them a bad size fails inside tracing. Each message names
the key and the values that would work.
"""
from __future__ import annotations

from typing import Mapping

from mmjax.errors import ConfigError

_NEAR = 3  # how many valid values a message lists


def _multiples(p: int, near: int) -> str:
  lo = max(p, (near // p) * p)
  return ", ".join(str(lo + i * p) for i in range(_NEAR)) + ", ... (multiples of " + f"{p})"


def _need_multiple(value: int, p: int, key: str, what: str) -> None:
  if value % p:
    raise ConfigError(f"config.{key}={value} is not divisible by {what}={p}; valid: "
                      f"{_multiples(p, value)}")


def check_resolution(key: str, op_args: Mapping, shape: tuple[int, ...] | None, spec,
                     model_key: str, posemb: str) -> None:
  """`shape`: the per-example shape the preprocess op at `key` makes (None: varies);
  `spec`: the ModalitySpec of the model modality it feeds, at `model_key`."""
  if shape is None:
    return
  kind, patch = spec.kind, tuple(spec.patch)
  ranks = {"image": 3, "video": 4, "audio": 2, "text": 1, "discrete": 1}
  if len(shape) != ranks[kind]:
    raise ConfigError(f"config.{key}: op {op_args.get('op')!r} makes a {len(shape)}-d input "
                      f"{shape}, but {model_key} is a {kind} modality (shape {spec.shape})")
  if kind in ("image", "video") and shape[-1] != spec.shape[-1]:
    raise ConfigError(f"config.{key}: makes {shape[-1]} channels; {model_key}.shape has "
                      f"{spec.shape[-1]}")
  if kind == "image":
    _need_multiple(shape[0], patch[0], f"{key}.size", f"{model_key}.patch[0]")
  elif kind == "video":
    _need_multiple(shape[0], patch[0], f"{key}.frames", f"{model_key}.patch[0] (tubelet length)")
    _need_multiple(shape[1], patch[1], f"{key}.size", f"{model_key}.patch[1]")
  elif kind == "audio":
    frames, mels = shape
    if frames % patch[0]:
      frame, hop = op_args["frame"], op_args["hop"]
      good = [frame + (f - 1) * hop for f in range(max(patch[0], frames - frames % patch[0]),
                                                      frames + 2 * patch[0], patch[0])][:_NEAR]
      raise ConfigError(
          f"config.{key}.samples={op_args['samples']} makes {frames} spectrogram frames "
          f"(1 + (samples - frame) // hop), not divisible by {model_key}.patch[0]={patch[0]}; "
          f"valid samples: {', '.join(map(str, good))}, ...")
    _need_multiple(mels, patch[1], f"{key}.num_mels", f"{model_key}.patch[1]")
  elif kind in ("text", "discrete") and posemb == "learn" and shape[0] > spec.shape[0]:
    raise ConfigError(f"config.{key}.max_len={shape[0]} is longer than {model_key}.shape="
                      f"{tuple(spec.shape)}, the longest text the model has learned positions "
                      f"for; valid: 1..{spec.shape[0]}")


def check_token_drop(tname: str, token_drop: Mapping[str, float], objectives,
                     fed: set) -> None:
  """Token drop names modalities this task's objectives read and its data makes, and never
  the modality a masked objective predicts (its targets are every token)."""
  read = {m for o in objectives for m in o.modalities}
  for m in token_drop:
    key = f"config.tasks.{tname}.token_drop.{m}"
    if m not in read or m not in fed:
      raise ConfigError(f"{key}: task {tname!r} does not feed modality {m!r} to its "
                        f"objectives; valid: {', '.join(sorted(read & fed)) or '(none)'}")
    for o in objectives:
      if m in o.heads().decoders.values():  # a masked objective reconstructs this modality
        raise ConfigError(f"{key}: objective {o.name!r} predicts every {m} token, so none may "
                          f"be dropped; drop a context modality or none")
