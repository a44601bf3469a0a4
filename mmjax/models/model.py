"""The multimodal model: embedders -> fusion trunk -> pooled embeddings -> heads.

Input contract: every method takes a ModelInputs (model_inputs.py). Output contract:
`encode` returns `Encoded` (tokens, validity and pooled vectors per
modality, the joint pooled vector, and the trunk's auxiliary outputs). `embed_modality`
and `class_logits` are the one place where contrastive embeddings and class logits are
made: objectives and evaluators both call them.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx, struct

from mmjax.models import logical_axes as axes
from mmjax.models import packed_tokens
from mmjax.models.aux_outputs import Aux
from mmjax.models.embedders import Embedder
from mmjax.models.fusion_heads import build_fused_head
from mmjax.models.heads import ContrastiveScale, Linear
from mmjax.models.image_tokenizer import FsqAutoencoder
from mmjax.models.model_inputs import ModelInputs
from mmjax.models.query_decoder import QueryDecoder
from mmjax.models.spec import ModelSpec
from mmjax.models.token_info import TokenInfo
from mmjax.models.transformer import Block
from mmjax.models.vocab import VocabTable

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str):
  if name == "auto":  # bfloat16 on accelerators; float32 on CPU, where bf16 matmuls are slower
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in _DTYPES:
    raise ValueError(f"dtype {name!r} is not one of {sorted(_DTYPES)}")
  return _DTYPES[name]


@struct.dataclass
class Encoded:
  """Trunk outputs. tokens/valid per modality; pooled per modality; joint over all."""
  tokens: dict
  valid: dict
  pooled: dict
  joint: jax.Array
  aux: Aux


def masked_mean(x_bnd: jax.Array, valid_bn: jax.Array) -> jax.Array:
  w = valid_bn.astype(jnp.float32)[..., None]
  total = jnp.sum(x_bnd.astype(jnp.float32) * w, axis=1)
  return total / jnp.maximum(jnp.sum(w, axis=1), 1.0)  # no NaN for an all-missing row


def _keep_tokens(tok_bnd, valid_bn, keep_bk, cls: int):
  """The kept tokens [B, cls + K, D] (a CLS token stays first) and their validity [B, K]."""
  body = jnp.take_along_axis(tok_bnd[:, cls:], keep_bk[..., None], axis=1)
  tok = jnp.concatenate([tok_bnd[:, :cls], body], axis=1) if cls else body
  return (axes.constrain(tok, ("batch", "length", "embed")),
          jnp.take_along_axis(valid_bn, keep_bk, axis=1))


def l2_normalize(z_be: jax.Array) -> jax.Array:
  # The epsilon keeps an all-zero row (an absent modality) finite; such rows are masked
  # out of every loss and metric by the callers.
  return z_be * jax.lax.rsqrt(jnp.sum(z_be * z_be, axis=-1, keepdims=True) + 1e-12)


class MultimodalModel(nnx.Module):

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    self.spec = spec
    dt, pdt = dtype_from_name(spec.dtype), dtype_from_name(spec.param_dtype)
    kw = dict(param_dtype=pdt, dtype=dt, rngs=rngs)
    discrete = [s for s in spec.modalities.values() if s.kind == "discrete"]
    # One extended-vocabulary table for every discrete modality (models/vocab.py).
    self.vocab_table = (VocabTable(discrete[0].vocab_size, spec.width, param_dtype=pdt,
                                   rngs=rngs) if discrete else None)
    self.embedders = nnx.Dict({
        m: Embedder(s, spec.width, posemb=spec.posemb, posemb_std=spec.posemb_std,
                    cls_token=spec.pool == "cls", table=self.vocab_table, **kw)
        for m, s in spec.modalities.items()})

    def make_block(layer: int) -> Block:
      ffn = spec.ffn.build(layer, width=spec.width, mlp_dim=spec.mlp_dim,
                           num_modalities=len(spec.modalities), **kw)
      return Block(spec.width, spec.num_heads, ffn, **kw)

    self.trunk = spec.fusion.build(depth=spec.depth, width=spec.width, make_block=make_block,
                                   remat=spec.remat, modalities=tuple(spec.modalities), **kw)
    heads = spec.heads
    self.projections = nnx.Dict({
        m: Linear(spec.width, spec.embed_dim, ("embed", None), **kw) for m in heads.projections})
    self.scales = nnx.Dict({n: ContrastiveScale(rngs=rngs) for n in heads.contrastive_scales})
    self.classifiers = nnx.Dict({
        n: self._classifier(n, k, kw) for n, k in heads.class_heads.items()})
    # Keyed by head name: two objectives on one modality share a decoder only if they name
    # the same head (a masked objective's default head is its modality's name).
    self.decoders = nnx.Dict({h: self._decoder(m, kw) for h, m in heads.decoders.items()
                              if h not in heads.tied})
    self.query_decoders = nnx.Dict({
        n: QueryDecoder(depth, spec.width, spec.num_heads, spec.mlp_dim, **kw)
        for n, depth in heads.query_decoders.items()})
    self.tokenizers = nnx.Dict({
        n: FsqAutoencoder(s, spec.modalities[s.modality].shape[-1], **kw)
        for n, s in heads.tokenizers.items()})

  def _classifier(self, head: str, num_classes: int, kw):
    fused = self.spec.heads.fused_heads.get(head)
    if fused is not None:
      return build_fused_head(fused, self.spec.width, num_classes, **kw)
    return Linear(self.spec.width, num_classes, ("embed", None), zero_init=True, **kw)

  def _decoder(self, modality, kw):
    s = self.spec.modalities[modality]
    if s.kind == "text":
      return Linear(self.spec.width, s.vocab_size, ("embed", "vocab"), **kw)
    return Linear(self.spec.width, s.patch_dim(), ("embed", None), **kw)

  def trunk_inputs(self, x: ModelInputs, replace: Mapping[str, jax.Array]):
    """({modality: tokens [B,N,D]}, {modality: TokenInfo}) of the modalities in x, in the
    model's order, except that causal modalities come after all the bidirectional ones
    (those are then a prefix: a prefix-LM, whatever the order of model.modalities); a CLS
    token, where the model pools by CLS, comes first."""
    tokens, infos = {}, {}
    cls = int(self.spec.pool == "cls")
    ids = self.spec.modality_ids
    order = sorted((m for m in ids if m in x.inputs), key=lambda m: m in x.causal)  # stable
    for m in order:
      modality_id = ids[m]
      if packed_tokens.is_packed(x, m):
        tokens[m], infos[m] = packed_tokens.packed_tokens(self.embedders[m], x, m,
                                                          modality_id, replace.get(m))
        continue
      tok = self.embedders[m](x.inputs[m], replace.get(m))
      b, n = tok.shape[:2]
      v = x.valid.get(m, jnp.ones((b, n - cls), bool))
      if m in x.keep:
        tok, v = _keep_tokens(tok, v, x.keep[m], cls)
      if cls:
        v = jnp.concatenate([jnp.ones((b, 1), bool), v], axis=1)
      if m in x.present:
        v = v & x.present[m][:, None]
      tokens[m] = tok
      infos[m] = TokenInfo.for_modality(v, modality_id, causal=m in x.causal)
    return tokens, infos

  def encode(self, x: ModelInputs, *,
             replace: Mapping[str, jax.Array] | None = None) -> Encoded:
    """Runs the modalities of `x` jointly through the trunk.

    replace: optional {modality: bool [B,N]}; True tokens become [MASK] (masked modelling).
    A modality under token drop (x.keep) has K tokens in the outputs.
    """
    unknown = set(x.inputs) - set(self.spec.modalities)
    if unknown:
      raise ValueError(f"inputs {sorted(unknown)} are not model modalities "
                       f"{sorted(self.spec.modalities)}")
    tokens, infos = self.trunk_inputs(x, dict(replace or {}))
    if not tokens:
      raise ValueError("encode() needs at least one modality")
    out, aux = self.trunk(tokens, infos)
    masks = {m: infos[m].valid for m in out}
    if self.spec.pool == "cls":  # the CLS outputs are the pooled vectors; the joint one averages them
      pooled = {m: out[m][:, 0].astype(jnp.float32) for m in out}
      row_mb = jnp.stack([masks[m][:, 0] for m in out]).astype(jnp.float32)
      joint = jnp.einsum("mb,mbd->bd", row_mb, jnp.stack([pooled[m] for m in out]))
      joint = joint / jnp.maximum(row_mb.sum(0), 1.0)[:, None]
      out = {m: out[m][:, 1:] for m in out}
      masks = {m: masks[m][:, 1:] for m in masks}
    else:
      pooled = {m: masked_mean(out[m], masks[m]) for m in out}
      joint = masked_mean(jnp.concatenate([out[m] for m in out], axis=1),
                          jnp.concatenate([masks[m] for m in out], axis=1))
    return Encoded(tokens=out, valid=masks, pooled=pooled, joint=joint, aux=aux)

  def embed_modality(self, x: ModelInputs, modality: str) -> tuple[jax.Array, Aux]:
    """One modality encoded alone -> its contrastive embedding [B,E] (float32, unit norm)
    through its projection, or the normalised pooled vector where it has none."""
    enc = self.encode(x.select((modality,)))
    pooled = enc.pooled[modality]
    if modality in self.projections:
      pooled = self.projections[modality](pooled)
    return l2_normalize(pooled.astype(jnp.float32)), enc.aux

  def class_logits(self, x: ModelInputs, head: str,
                   per_modality: bool = False) -> tuple[jax.Array, Aux]:
    """The modalities of `x` encoded jointly -> logits [B,K] of classification head `head`:
    of the joint pooled vector, or (per_modality, as MBT) the mean of each present
    modality's logits; a fused head (Heads.fused_heads: LMF, concat + MLP) reads the
    pooled vector of each of its modalities."""
    enc = self.encode(x)
    fused = self.spec.heads.fused_heads.get(head)
    if fused is not None:
      pooled = [enc.pooled[m] for m in fused.modalities]
      return self.classifiers[head](pooled).astype(jnp.float32), enc.aux
    classify = lambda v: self.classifiers[head](v).astype(jnp.float32)
    if not per_modality:
      return classify(enc.joint), enc.aux
    row_mb = jnp.stack([enc.valid[m].any(axis=1) for m in enc.pooled]).astype(jnp.float32)
    logits_mbk = jnp.stack([classify(enc.pooled[m]) for m in enc.pooled])
    logits = jnp.einsum("mb,mbk->bk", row_mb, logits_mbk) / jnp.maximum(row_mb.sum(0), 1.0)[:, None]
    return logits, enc.aux

  def decode(self, tokens_bnd: jax.Array, head: str) -> jax.Array:
    """Per-token predictions of decoder head `head` (Heads.decoders names its modality).
    A tied head (Heads.tied) multiplies by its text modality's embedding table, scaled by
    width^-0.5 (T5's tied unembedding: the table's entries have std 1)."""
    if head in self.spec.heads.tied:
      table_vd = self.embedders[self.spec.heads.decoders[head]].embedding[...]
      logits = jnp.einsum("bnd,vd->bnv", tokens_bnd, table_vd.astype(tokens_bnd.dtype))
      return logits.astype(jnp.float32) * self.spec.width ** -0.5
    return self.decoders[head](tokens_bnd).astype(jnp.float32)

  def query_tokens(self, x: ModelInputs, modality: str, idx_bk: jax.Array) -> jax.Array:
    """[B, K, D]: the decoder queries for tokens idx_bk of `modality`: its [MASK]
    embedding plus each token's position and the modality's type embedding (no content)."""
    raw = x.inputs[modality]
    n = self.spec.modalities[modality].num_tokens(tuple(raw.shape[1:]))
    tok = self.embedders[modality](raw, jnp.ones((raw.shape[0], n), bool))
    tok = tok[:, tok.shape[1] - n:]  # without a CLS token
    return jnp.take_along_axis(tok, idx_bk[..., None], axis=1)

  def decode_queries(self, name: str, enc: Encoded, queries_bqd: jax.Array,
                     queries_valid_bq: jax.Array) -> jax.Array:
    """Query decoder `name` (Heads.query_decoders) over every encoded token: [B, Q, D]."""
    names = list(enc.tokens)
    context = jnp.concatenate([enc.tokens[m] for m in names], axis=1)
    valid = jnp.concatenate([enc.valid[m] for m in names], axis=1)
    return self.query_decoders[name](context, valid, queries_bqd, queries_valid_bq)

  def contrastive_scale(self, name: str):
    return self.scales[name]()


def build_model(spec: ModelSpec, seed: int) -> MultimodalModel:
  return MultimodalModel(spec, rngs=nnx.Rngs(params=seed))
