"""The multimodal model: embedders -> fusion trunk -> pooled embeddings -> heads."""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx, struct

from mmjax.models.embedders import Embedder, ModalitySpec
from mmjax.models.heads import ContrastiveScale, Linear
from mmjax.models.trunks import make_trunk

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str):
  if name not in _DTYPES:
    raise ValueError(f"dtype {name!r} is not one of {sorted(_DTYPES)}")
  return _DTYPES[name]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Everything needed to build the model: plain numbers, no data or mesh."""
  modalities: Mapping[str, ModalitySpec]
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  fusion: str = "early"
  embed_dim: int = 128
  posemb: str = "learn"
  posemb_std: float = 0.5
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"  # per block: none | full | save_matmuls
  # Heads are derived from the objectives that use them (see mmjax.objectives.heads_for).
  class_heads: Mapping[str, int] = dataclasses.field(default_factory=dict)
  projections: tuple[str, ...] = ()
  contrastive_scales: tuple[str, ...] = ()
  decoders: tuple[str, ...] = ()


@struct.dataclass
class Encoded:
  """Trunk outputs. tokens/valid per modality; pooled per modality; joint over all."""
  tokens: dict
  valid: dict
  pooled: dict
  joint: jax.Array


def masked_mean(x_bnd: jax.Array, valid_bn: jax.Array) -> jax.Array:
  w = valid_bn.astype(jnp.float32)[..., None]
  total = jnp.sum(x_bnd.astype(jnp.float32) * w, axis=1)
  return total / jnp.maximum(jnp.sum(w, axis=1), 1.0)  # no NaN for an all-missing row


class MultimodalModel(nnx.Module):

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    self.spec = spec
    dt, pdt = dtype_from_name(spec.dtype), dtype_from_name(spec.param_dtype)
    kw = dict(param_dtype=pdt, dtype=dt, rngs=rngs)
    self.embedders = nnx.Dict({
        m: Embedder(s, spec.width, posemb=spec.posemb, posemb_std=spec.posemb_std, **kw)
        for m, s in spec.modalities.items()})
    self.trunk = make_trunk(spec.fusion, width=spec.width, depth=spec.depth,
                            num_heads=spec.num_heads, mlp_dim=spec.mlp_dim, remat=spec.remat,
                            **kw)
    self.projections = nnx.Dict({
        m: Linear(spec.width, spec.embed_dim, ("embed", None), **kw) for m in spec.projections})
    self.scales = nnx.Dict({n: ContrastiveScale(rngs=rngs) for n in spec.contrastive_scales})
    self.classifiers = nnx.Dict({
        n: Linear(spec.width, k, ("embed", None), zero_init=True, **kw)
        for n, k in spec.class_heads.items()})
    self.decoders = nnx.Dict({m: self._decoder(m, kw) for m in spec.decoders})

  def _decoder(self, modality, kw):
    s = self.spec.modalities[modality]
    if s.kind == "text":
      return Linear(self.spec.width, s.vocab_size, ("embed", "vocab"), **kw)
    return Linear(self.spec.width, s.patch_dim(), ("embed", None), **kw)

  def encode(self, inputs: Mapping[str, jax.Array], *,
             valid: Mapping[str, jax.Array] | None = None,
             present: Mapping[str, jax.Array] | None = None,
             replace: Mapping[str, jax.Array] | None = None) -> Encoded:
    """Runs the given modalities jointly through the trunk.

    inputs: {modality: raw array}; the order of the config's modalities is used.
    valid: optional {modality: bool [B,N]} token validity (e.g. text padding).
    present: optional {modality: bool [B]}; False drops that modality for that example.
    replace: optional {modality: bool [B,N]}; True tokens become [MASK] (masked modelling).
    """
    valid, present, replace = dict(valid or {}), dict(present or {}), dict(replace or {})
    unknown = set(inputs) - set(self.spec.modalities)
    if unknown:
      raise ValueError(f"inputs {sorted(unknown)} are not model modalities "
                       f"{sorted(self.spec.modalities)}")
    tokens, masks = {}, {}
    for m in self.spec.modalities:
      if m not in inputs:
        continue
      tok = self.embedders[m](inputs[m], replace.get(m))
      b, n = tok.shape[:2]
      v = valid.get(m, jnp.ones((b, n), bool))
      if m in present:
        v = v & present[m][:, None]
      tokens[m], masks[m] = tok, v
    if not tokens:
      raise ValueError("encode() needs at least one modality")
    out = self.trunk(tokens, masks)
    pooled = {m: masked_mean(out[m], masks[m]) for m in out}
    all_tok = jnp.concatenate([out[m] for m in out], axis=1)
    all_valid = jnp.concatenate([masks[m] for m in out], axis=1)
    return Encoded(tokens=out, valid=masks, pooled=pooled, joint=masked_mean(all_tok, all_valid))

  def embed(self, pooled_bd: jax.Array, modality: str) -> jax.Array:
    """Contrastive embedding: per-modality projection, L2-normalised, float32."""
    z = self.projections[modality](pooled_bd).astype(jnp.float32)
    return z * jax.lax.rsqrt(jnp.sum(z * z, axis=-1, keepdims=True) + 1e-12)

  def classify(self, pooled_bd: jax.Array, head: str) -> jax.Array:
    return self.classifiers[head](pooled_bd).astype(jnp.float32)

  def decode(self, tokens_bnd: jax.Array, modality: str) -> jax.Array:
    return self.decoders[modality](tokens_bnd).astype(jnp.float32)

  def contrastive_scale(self, name: str):
    return self.scales[name]()


def build_model(spec: ModelSpec, seed: int) -> MultimodalModel:
  return MultimodalModel(spec, rngs=nnx.Rngs(params=seed))
