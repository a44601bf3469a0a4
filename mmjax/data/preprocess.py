"""Preprocessing built from a task's `preprocess` section: output key -> dict(op=..., **args), per example or batched.

    {"image": {"op": "image", "from": "image", "size": 32},
     "text": {"op": "tokenize", "from": "caption", "max_len": 32},  # + text_mask, text_words
     "label": {"op": "label", "from": "label"}}

Ops take one source feature and return host numpy arrays. Each op also runs on a whole
batch (`apply_batch`, vectorised numpy), equal bit for bit to stacking its per-example
`apply` (tests/test_batched_input.py); the pipelines use the batched form. Decoding of
encoded images stays per example inside it. An op that cannot batch for its arguments says so
(`batchable`), and asking it to with `batched=True` is an error.
Randomness (random crops) comes from an rng keyed by the example's global position, so a run is
reproducible and resumable; with `train=False` random ops fall back to their
deterministic form so eval sees the same input every time.
"""

import functools
import io
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from mmjax.data import audio
from mmjax.data import resize as resize_lib


def _to_uint8_hwc(value: Any) -> np.ndarray:
  """Decodes encoded JPEG/PNG bytes; passes raw [H, W, C] arrays through."""
  if isinstance(value, (bytes, np.bytes_)):
    value = np.asarray(Image.open(io.BytesIO(value)).convert("RGB"))
  value = np.asarray(value)
  if value.ndim == 2:
    value = value[..., None]
  if value.shape[-1] == 1:  # grayscale: models expect RGB
    value = np.repeat(value, 3, axis=-1)
  return value


def _resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
  h, w = img.shape[:2]
  if min(h, w) == size:
    return img
  scale = size / min(h, w)
  new_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
  return np.asarray(Image.fromarray(img).resize(new_hw[::-1], Image.BILINEAR))


def _crop_offsets(hw, size: int, mode: str, rng: np.random.Generator | None):
  h, w = hw
  if mode == "random" and rng is not None:
    return int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
  return (h - size) // 2, (w - size) // 2


def _stacked_uint8(column) -> np.ndarray | None:
  """A column of raw [.., H, W, 3] uint8 arrays as one array, or None if it needs the
  per-example path (encoded bytes, grayscale, other dtypes, ragged shapes)."""
  if isinstance(column, np.ndarray):
    arr = column
  elif any(isinstance(v, (bytes, np.bytes_)) for v in column):
    return None
  else:
    try:
      arr = np.stack([np.asarray(v) for v in column])
    except ValueError:  # shapes differ
      return None
  return arr if arr.dtype == np.uint8 and arr.shape[-1] == 3 else None


def _resize_shorter_batch(imgs: np.ndarray, size: int) -> np.ndarray:
  """`_resize_shorter` of each [..., H, W, 3] image of a stack (all share H, W)."""
  h, w = imgs.shape[-3:-1]
  if min(h, w) == size:
    return imgs
  scale = size / min(h, w)
  return resize_lib.resize_bilinear(imgs, max(size, round(h * scale)), max(size, round(w * scale)))


def _crop_batch(imgs: np.ndarray, size: int, offsets: list[tuple[int, int]]) -> np.ndarray:
  """Per-example crops of [B, ..., H, W, C] at per-example (y, x) offsets."""
  if len(set(offsets)) == 1:
    y, x = offsets[0]
    return imgs[..., y:y + size, x:x + size, :]
  return np.stack([im[..., y:y + size, x:x + size, :] for im, (y, x) in zip(imgs, offsets)])


def _to_float(pixels: np.ndarray) -> np.ndarray:
  return pixels.astype(np.float32) / 127.5 - 1.0  # [0, 255] -> [-1, 1]


class _Op:
  """One entry of the preprocess section; subclasses declare their args and implement `apply`."""

  required: tuple[str, ...] = ()
  optional: Mapping[str, Any] = {}
  choices: Mapping[str, tuple] = {}  # args restricted to a few values

  def __init__(self, key: str, args: Mapping[str, Any], train: bool, tokenizer):
    args = dict(args)
    name = args.pop("op")
    missing = [a for a in ("from",) + self.required if a not in args]
    unknown = sorted(set(args) - {"from", "batched", *self.required, *self.optional})
    if missing or unknown:
      raise ValueError(
          f"preprocess[{key!r}] op {name!r}: missing args {missing}, unknown args "
          f"{unknown}; it takes 'from', {list(self.required)} and optionally "
          f"{list(self.optional)}")
    self.key, self.source, self.train, self.tokenizer = key, args.pop("from"), train, tokenizer
    self.batched = args.pop("batched", None)  # None: batched when the op can
    self.args = {**self.optional, **args}
    for arg, allowed in self.choices.items():
      if self.args[arg] not in allowed:
        raise ValueError(f"preprocess[{key!r}] op {name!r}: {arg}={self.args[arg]!r}; "
                         f"choices: {allowed}")
    why = self.cannot_batch()
    if self.batched and why:
      raise ValueError(f"preprocess[{key!r}] op {name!r}: batched=True, but it cannot run "
                       f"batched: {why}")
    self.batched = not why if self.batched is None else bool(self.batched)

  def _offsets(self, hw, size, n, rngs):
    rngs = rngs if (self.train and rngs is not None) else [None] * n
    return [_crop_offsets(hw, size, self.args["crop"], r) for r in rngs]

  def apply(self, value, rng) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def shape(self) -> tuple[int, ...] | None:
    """The per-example shape of the array under `self.key`, None where it varies."""
    return None

  def outputs(self) -> tuple[str, ...]:
    """The batch keys the op writes."""
    return (self.key,)

  # Whether `apply_batch` can run for these arguments; "" if so, else why not.
  def cannot_batch(self) -> str:
    return ""

  def apply_batch(self, column, rngs) -> dict[str, np.ndarray]:
    """`apply` over a column (list or stacked array) of source values; rngs: one per
    example (or None), each drawn from in the same order as by `apply`."""
    rows = [self.apply(v, None if rngs is None else r)
            for v, r in zip(column, rngs or [None] * len(column))]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class ImageOp(_Op):
  required = ("size",)
  optional = {"crop": "center"}
  choices = {"crop": ("center", "random")}  # random only when training

  def shape(self):
    return (self.args["size"], self.args["size"], 3)

  def apply(self, value, rng):
    size = self.args["size"]
    img = _resize_shorter(_to_uint8_hwc(value), size)
    y, x = _crop_offsets(img.shape[:2], size, self.args["crop"], rng if self.train else None)
    return {self.key: _to_float(img[y:y + size, x:x + size])}

  def apply_batch(self, column, rngs):
    imgs = _stacked_uint8(column)
    if imgs is None or imgs.ndim != 4:  # encoded or mixed: decode each, then batch if equal
      imgs = _stacked_uint8([_to_uint8_hwc(v) for v in column])
      if imgs is None:
        return super().apply_batch(column, rngs)
    size = self.args["size"]
    imgs = _resize_shorter_batch(imgs, size)
    offsets = self._offsets(imgs.shape[1:3], size, len(imgs), rngs)
    return {self.key: _to_float(_crop_batch(imgs, size, offsets))}


class VideoOp(_Op):
  required = ("size", "frames")
  optional = {"crop": "center"}
  choices = {"crop": ("center", "random")}

  def shape(self):
    return (self.args["frames"], self.args["size"], self.args["size"], 3)

  def apply(self, value, rng):
    size, frames = self.args["size"], self.args["frames"]
    clip = np.asarray(value)
    # Uniform temporal sampling; repeats frames when the clip is shorter.
    clip = clip[np.linspace(0, len(clip) - 1, frames).round().astype(int)]
    clip = np.stack([_resize_shorter(_to_uint8_hwc(f), size) for f in clip])
    y, x = _crop_offsets(clip.shape[1:3], size, self.args["crop"], rng if self.train else None)
    return {self.key: _to_float(clip[:, y:y + size, x:x + size])}

  def apply_batch(self, column, rngs):
    clips = _stacked_uint8(column)
    if clips is None or clips.ndim != 5:
      return super().apply_batch(column, rngs)
    size, frames = self.args["size"], self.args["frames"]
    clips = clips[:, np.linspace(0, clips.shape[1] - 1, frames).round().astype(int)]
    clips = _resize_shorter_batch(clips, size)
    offsets = self._offsets(clips.shape[2:4], size, len(clips), rngs)
    return {self.key: _to_float(_crop_batch(clips, size, offsets))}


class LogMelOp(_Op):
  required = ("sample_rate", "num_mels", "frame", "hop")
  optional = {"samples": 0}  # >0: pad/cut the waveform so batches stack

  def __init__(self, *a, **kw):
    super().__init__(*a, **kw)
    a = self.args
    self.mel_fb = audio.mel_filterbank(a["sample_rate"], a["frame"], a["num_mels"])

  def shape(self):
    samples = self.args["samples"]
    if not samples:  # each clip keeps its own length
      return None
    return (audio.num_frames(samples, self.args["frame"], self.args["hop"]),
            self.args["num_mels"])

  def apply(self, value, rng):
    wave = audio.to_float(np.asarray(value))
    if self.args["samples"]:
      wave = audio.fit_length(wave, self.args["samples"])
    mel = audio.log_mel(wave, self.mel_fb, self.args["frame"], self.args["hop"])
    return {self.key: mel}

  def cannot_batch(self):
    if not self.args["samples"]:
      return ("samples=0 keeps each clip's own length, and clips of different lengths do "
              "not stack; set samples to a fixed length")
    return ""

  def apply_batch(self, column, rngs):
    n = self.args["samples"]
    if isinstance(column, np.ndarray) and column.ndim == 2:
      waves = audio.to_float(column)[:, :n]  # fit_length for a whole batch: cut, then pad
      waves = np.pad(waves, ((0, 0), (0, n - waves.shape[1])))
    else:
      waves = np.stack([audio.fit_length(audio.to_float(np.asarray(v)), n) for v in column])
    return {self.key: audio.log_mel_batch(waves, self.mel_fb, self.args["frame"],
                                          self.args["hop"])}


class TokenizeOp(_Op):
  """Token ids under the key, `<key>_mask` (validity) and `<key>_words` (each token's word
  number, 0 for tokens in no word: the tokenizer's own word marks, for whole-word masking)."""
  required = ("max_len",)

  def shape(self):
    return (self.args["max_len"],)

  def outputs(self):
    return (self.key, f"{self.key}_mask", f"{self.key}_words")

  def _out(self, ids, mask):
    return {self.key: ids, f"{self.key}_mask": mask, f"{self.key}_words": self.tokenizer.words(ids)}

  def apply(self, value, rng):
    return self._out(*self.tokenizer.encode(value, self.args["max_len"]))

  def apply_batch(self, column, rngs):
    return self._out(*self.tokenizer.encode_batch(column, self.args["max_len"]))


class LabelOp(_Op):

  def apply(self, value, rng):
    return {self.key: np.asarray(value, np.int32)}

  def apply_batch(self, column, rngs):
    return {self.key: np.asarray(column, np.int32)}


OPS: dict[str, type[_Op]] = {
    "image": ImageOp, "video": VideoOp, "log_mel": LogMelOp,
    "tokenize": TokenizeOp, "label": LabelOp,
    # integer ids as they are stored, e.g. a pretokenized image's `image_tokens` [N]
    "ids": LabelOp,
}


class Preprocess:
  """Callable example -> model-ready dict; `features` (if given) is checked up front."""

  def __init__(self, section: Mapping[str, Mapping[str, Any]], *, tokenizer=None,
               train: bool = True, features: Sequence[str] | None = None):
    self.ops: list[_Op] = []
    self.train = train
    for key, args in section.items():
      name = args.get("op")
      if name not in OPS:
        raise ValueError(f"preprocess[{key!r}]: unknown op {name!r}; choices: {sorted(OPS)}")
      if name == "tokenize" and tokenizer is None:
        raise ValueError(f"preprocess[{key!r}]: op 'tokenize' needs a tokenizer")
      op = OPS[name](key, args, train, tokenizer)
      if features is not None and op.source not in features:
        self._missing(op, features)
      self.ops.append(op)

  @staticmethod
  def _missing(op: _Op, features) -> None:
    raise ValueError(
        f"preprocess[{op.key!r}] op {type(op).__name__}: source feature {op.source!r} "
        f"not in the dataset; available features: {sorted(features)}")

  def shapes(self) -> dict[str, tuple[int, ...] | None]:
    """{output key: per-example shape} of the arrays the ops make (None: varies), read
    from the section alone (config validation checks them against the model)."""
    return {op.key: op.shape() for op in self.ops}

  def output_keys(self) -> list[str]:
    """Every batch key the ops make (a tokenize op's mask and word marks included)."""
    return [k for op in self.ops for k in op.outputs()]

  @property
  def random(self) -> bool:
    """Whether any op draws from the per-example rng (then callers must make one)."""
    return self.train and any(op.args.get("crop") == "random" for op in self.ops)

  def batch(self, columns: Mapping[str, Any], rngs=None) -> dict[str, np.ndarray]:
    """Columns of a batch's source features -> model-ready [B, ...] arrays; equal to
    stacking `__call__` over its examples with the same rngs."""
    out = {}
    for op in self.ops:
      if op.source not in columns:
        self._missing(op, columns.keys())
      apply = op.apply_batch if op.batched else functools.partial(_Op.apply_batch, op)
      out.update(apply(columns[op.source], rngs))
    return out

  def __call__(self, example: Mapping[str, Any],
               rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    out = {}
    for op in self.ops:
      if op.source not in example:
        self._missing(op, example.keys())
      out.update(op.apply(example[op.source], rng))
    return out

