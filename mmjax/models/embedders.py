"""Per-modality embedders: raw arrays -> tokens [B, N, D] with positions and a type embedding.

Each embedder is configured by a `ModalitySpec` (plain numbers: the reference input size
and patch shape). Inputs of other sizes get their learned positions interpolated.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.config.registry import check
from mmjax.models import logical_axes as axes
from mmjax.models import patchify
from mmjax.models import vocab as vocab_lib

PATCH_KINDS = ("image", "video", "audio")
# Kinds whose inputs are ids [B, L] looked up in an embedding table: text has a table of its
# own; discrete modalities share the model's one extended-vocabulary table (vocab.py).
TOKEN_KINDS = ("text", "discrete")
KINDS = PATCH_KINDS + TOKEN_KINDS
# Per kind: the names of its shape dims and of its patch dims.
_LAYOUTS = {"image": (("H", "W", "C"), ("p",)), "video": (("T", "H", "W", "C"), ("t", "p")),
            "audio": (("T", "F"), ("pt", "pf")), "text": (("max_len",), ()),
            "discrete": (("max_len",), ())}


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
  """How one modality becomes tokens.

  kind: "image" [B,H,W,C] | "video" [B,T,H,W,C] | "audio" [B,T,F] log-mel | "text" [B,L] ids
    | "discrete" [B,L] ids in one segment of the model's extended vocabulary (vocab.py).
  shape: the reference input shape without batch (positions are learned for it).
  patch: patch/tubelet shape: image (p,), video (t, p), audio (pt, pf); unused for ids.
  vocab_size: text and discrete only: the rows of the embedding table.
  vocab, segment: discrete only: the vocabulary's (name, size) segments, in row order (the
    same for every discrete modality of a model), and the segment this modality's ids are in.
  """
  kind: str
  shape: tuple[int, ...]
  patch: tuple[int, ...] = ()
  vocab_size: int = 0
  vocab: tuple = ()
  segment: str = ""

  def __post_init__(self):
    check(self.kind in KINDS, "kind", f"valid: {', '.join(map(repr, KINDS))}")
    shape_dims, patch_dims = _LAYOUTS[self.kind]
    shape, patch = tuple(self.shape), tuple(self.patch)
    check(len(shape) == len(shape_dims), "shape",
          f"a {self.kind} shape is ({', '.join(shape_dims)})")
    check(len(patch) == len(patch_dims), "patch",
          f"a {self.kind} patch is ({', '.join(patch_dims)})")
    check(all(isinstance(x, int) and x > 0 for x in shape + patch), "shape",
          f"shape {shape} and patch {patch} must be positive integers")
    if self.kind == "image":
      for d, n in zip("HW", shape[:2]):
        check(n % patch[0] == 0, "shape", f"image {d}={n} is not divisible by patch "
              f"{patch[0]}; use a size that is a multiple of {patch[0]}")
    elif self.kind == "video":
      check(shape[0] % patch[0] == 0, "shape",
            f"{shape[0]} frames are not divisible by tubelet length {patch[0]}")
      for d, n in zip("HW", shape[1:3]):
        check(n % patch[1] == 0, "shape", f"video {d}={n} is not divisible by patch {patch[1]}")
    elif self.kind == "audio":
      for d, n, p in zip(("time", "mel"), shape, patch):
        check(n % p == 0, "shape", f"audio {d} size {n} is not divisible by patch {p}")
    elif self.kind == "discrete":
      vocab_lib.check_segments(self.vocab, self.segment, self.vocab_size)
    else:
      check(isinstance(self.vocab_size, int) and self.vocab_size > 0, "vocab_size",
            "a text modality needs a positive vocab_size")

  @property
  def offset(self) -> int:
    """A discrete modality's first row in the shared table (its id 0); 0 otherwise."""
    return vocab_lib.offsets(self.vocab)[self.segment] if self.kind == "discrete" else 0

  def grid(self, shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The token grid for an input of `shape` (default: the reference shape)."""
    s = tuple(shape or self.shape)
    if self.kind == "image":
      (p,) = self.patch
      return (s[0] // p, s[1] // p)
    if self.kind == "video":
      t, p = self.patch
      return (s[0] // t, s[1] // p, s[2] // p)
    if self.kind == "audio":
      pt, pf = self.patch
      return (s[0] // pt, s[1] // pf)
    if self.kind in TOKEN_KINDS:
      return (s[0],)
    raise ValueError(f"unknown modality kind {self.kind!r}; valid: {PATCH_KINDS + ('text',)}")

  def num_tokens(self, shape: tuple[int, ...] | None = None) -> int:
    n = 1
    for g in self.grid(shape):
      n *= g
    return n

  def patch_dim(self) -> int:
    """Length of one flattened patch (what a patch decoder reconstructs)."""
    s = self.shape
    if self.kind == "image":
      return self.patch[0] ** 2 * s[2]
    if self.kind == "video":
      return self.patch[0] * self.patch[1] ** 2 * s[3]
    if self.kind == "audio":
      return self.patch[0] * self.patch[1]
    raise ValueError(f"modality kind {self.kind!r} has no patches")

  def cut(self, x: jax.Array) -> jax.Array:
    """Raw input -> flattened patches [B, N, patch_dim]."""
    if self.kind == "image":
      return patchify.patchify(x, self.patch[0])
    if self.kind == "video":
      return patchify.tubelets(x, self.patch[0], self.patch[1])
    if self.kind == "audio":
      return patchify.spectrogram_patches(x, self.patch[0], self.patch[1])
    raise ValueError(f"modality kind {self.kind!r} has no patches")


def _per_token(table_nd: jax.Array, positions_bn: jax.Array, kind: str) -> jax.Array:
  """[B, N, D]: each token's row of the position table (the table covers the input's N)."""
  if kind not in TOKEN_KINDS:
    raise ValueError(f"per-token positions are for text; a {kind} modality takes its grid's")
  return jnp.take(table_nd, positions_bn, axis=0)


class Embedder(nnx.Module):
  """Tokens for one modality: linear patch projection (or token lookup) + positions + type."""

  def __init__(self, spec: ModalitySpec, width: int, *, posemb: str, posemb_std: float,
               param_dtype, dtype, rngs: nnx.Rngs, cls_token: bool = False,
               table: vocab_lib.VocabTable | None = None):
    """table: a discrete modality's shared extended-vocabulary table (the model's)."""
    self.spec = spec
    self.dtype = dtype
    self.posemb = posemb
    init_normal = jax.nn.initializers.normal
    if spec.kind == "text":
      self.embedding = axes.param(rngs, init_normal(1.0), (spec.vocab_size, width),
                                  ("vocab", "embed"), param_dtype)
    elif spec.kind == "discrete":
      if table is None:
        raise ValueError("a discrete modality embeds through its model's shared VocabTable")
      self.table = table  # shared: one parameter, however many modalities read it
    else:
      self.kernel = axes.param(rngs, jax.nn.initializers.lecun_normal(),
                               (spec.patch_dim(), width), (None, "embed"), param_dtype)
      self.bias = axes.param(rngs, jax.nn.initializers.zeros, (width,), ("embed",), param_dtype)
    n = spec.num_tokens()
    if posemb == "learn":
      # Large (std ~0.5) starting positions: with mean pooling the model must carry
      # location in token content; tiny initial positions were learned far too late.
      self.positions = axes.param(rngs, init_normal(posemb_std), (n, width),
                                  ("length", "embed"), param_dtype)
    elif posemb != "sincos":
      raise ValueError(f"model.posemb={posemb!r}; valid: 'learn', 'sincos'")
    self.type_embedding = axes.param(rngs, init_normal(0.02), (width,), ("embed",), param_dtype)
    self.mask_embedding = axes.param(rngs, init_normal(0.02), (width,), ("embed",), param_dtype)
    self.cls_token = cls_token
    if cls_token:  # prepended to the tokens; its output is the modality's pooled vector
      self.cls = axes.param(rngs, init_normal(0.02), (width,), ("embed",), param_dtype)

  def __call__(self, x: jax.Array, replace_mask_bn: jax.Array | None = None,
               positions_bn: jax.Array | None = None) -> jax.Array:
    """x: raw modality input -> tokens [B, N, D] in the compute dtype.

    replace_mask_bn: optional bool [B, N]; True tokens are replaced by a learned [MASK]
    embedding before positions are added (masked modelling).
    positions_bn: optional int32 [B, N], text only: the position each token takes (a packed
    row restarts them in every caption); default 0..N-1.
    """
    spec = self.spec
    if spec.kind in TOKEN_KINDS:
      tok = self.lookup(x)
    else:
      patches = spec.cut(x.astype(self.dtype))
      tok = patches @ self.kernel[...].astype(self.dtype) + self.bias[...].astype(self.dtype)
    if replace_mask_bn is not None:
      tok = jnp.where(replace_mask_bn[..., None], self.mask_embedding[...].astype(self.dtype), tok)
    if positions_bn is None:
      pos = self._position_table(spec.grid(tuple(x.shape[1:])), tok.shape[-1])[None]
    else:  # per-token positions index the table of the model's own max_len
      pos = _per_token(self._position_table(spec.grid(), tok.shape[-1]), positions_bn, spec.kind)
    tok = tok + pos.astype(self.dtype) + self.type_embedding[...].astype(self.dtype)
    if self.cls_token:
      cls = (self.cls[...] + self.type_embedding[...]).astype(self.dtype)
      tok = jnp.concatenate([jnp.broadcast_to(cls, (tok.shape[0], 1, tok.shape[-1])), tok], 1)
    return axes.constrain(tok, ("batch", "length", "embed"))

  def lookup(self, ids: jax.Array) -> jax.Array:
    """Table rows of ids [B, N] -> [B, N, D]: a discrete modality's ids shifted to its
    segment of the shared table, so different modalities never share a row."""
    if self.spec.kind == "discrete":
      rows = jnp.take(self.table.embedding[...], ids + self.spec.offset, axis=0)
      return rows.astype(self.dtype)
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

  def _position_table(self, grid: tuple[int, ...], width: int) -> jax.Array:
    """[N, D]: the positions of an input whose token grid is `grid`."""
    spec = self.spec
    if self.posemb != "learn":
      return jnp.asarray(patchify.sincos_table(grid, width))
    if spec.kind not in TOKEN_KINDS:
      return patchify.resize_positions(self.positions[...], spec.grid(), grid)
    if grid[0] > spec.shape[0]:
      raise ValueError(f"text length {grid[0]} exceeds the model's max_len {spec.shape[0]}")
    return self.positions[...][: grid[0]]

  def text_at(self, ids_bn: jax.Array, start: jax.Array) -> jax.Array:
    """Text tokens [B, N, D] of ids placed at positions start .. start+N-1 (`start` may be
    traced): what `__call__` gives those positions of a longer text, one step of cached
    decoding. Text without a CLS token only (generation refuses pool="cls")."""
    if self.spec.kind != "text" or self.cls_token:
      raise ValueError("text_at is for a text modality without a CLS token")
    tok = jnp.take(self.embedding[...], ids_bn, axis=0).astype(self.dtype)
    if self.posemb == "learn":
      table = self.positions[...]
    else:
      table = jnp.asarray(patchify.sincos_table(self.spec.grid(), tok.shape[-1]))
    pos = jax.lax.dynamic_slice_in_dim(table, start, ids_bn.shape[1], axis=0)
    tok = tok + pos.astype(self.dtype)[None] + self.type_embedding[...].astype(self.dtype)
    return axes.constrain(tok, ("batch", "length", "embed"))
