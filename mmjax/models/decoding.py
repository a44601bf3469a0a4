"""Autoregressive decoding of a next-token head, with a KV cache, on one device.

The sequence is the trunk's: the context modalities (a bidirectional prefix: the image's
tokens with early fusion, the encoders' projected outputs with `late_decoder`) and then the
text, causal. Only the blocks of the trunk's causal stack (`trunk.causal_stack()`) see the
text, so the cache holds their keys and values, [B, P + L, H, K] per layer (P prefix
tokens, L the model's text length), written once per position.

  prefill   one pass over the prefix and the whole text buffer (prompt, then padding):
            every layer's keys and values, and the logits at every text position. Text
            attends causally, so what sits after the prompt never reaches the prompt's
            outputs; its cache entries are overwritten as tokens are generated.
  step      one token at text position t: its q, k, v at every layer, k and v written at
            P + t, attention over the prefix and the text up to t.

All rows advance one position per step. Rows whose prompt is longer than the shortest are
teacher-forced (their next token is the prompt's) until their prompt ends, so a batch of
prompts of different lengths decodes in one loop. A row stops at its first EOS after BOS
(a prompt that holds one is complete: the rest of it is kept, nothing is generated after
it); the loop stops when every row has, or at the end of the text buffer.

`generate(..., cached=False)` recomputes the whole sequence through `model.encode` at
every step: the reference the cache is tested against, and the benchmark's baseline.

MoE: a dense feed-forward layer or dropless routing gives a token the same output whatever
else is in the pass, so cached decoding equals recompute. Capacity-limited routing drops
tokens by competition within a routing group, which differs between a one-token step and
a full pass: cached decoding then is not bit-equal to recompute.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx, struct

from mmjax.config.registry import check
from mmjax.models.model_inputs import ModelInputs
from mmjax.models.token_info import TokenInfo


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How each next token is chosen from the head's logits."""
  temperature: float = 0.0  # 0 = greedy (argmax); else softmax(logits / temperature)
  top_k: int = 0            # sample among the k likeliest tokens only; 0 = all of them

  def __post_init__(self):
    check(isinstance(self.temperature, (int, float)) and self.temperature >= 0.0,
          "temperature", f"got {self.temperature!r}; must be >= 0 (0 = greedy)")
    check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k",
          f"got {self.top_k!r}; must be an integer >= 0 (0 = no top-k cut)")
    check(not (self.top_k and self.temperature == 0.0), "top_k",
          f"top_k={self.top_k} has no effect with greedy decoding (temperature=0); set a "
          f"temperature > 0 or top_k=0")


def sample(logits_bv: jax.Array, rng: jax.Array, sampling: Sampling) -> jax.Array:
  """int32 [B]: argmax, or a draw from the temperature-scaled (and top-k cut) softmax."""
  if sampling.temperature == 0.0:
    return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
  scaled = logits_bv.astype(jnp.float32) / sampling.temperature
  if sampling.top_k and sampling.top_k < scaled.shape[-1]:
    kth = jax.lax.top_k(scaled, sampling.top_k)[0][:, -1:]
    scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
  return jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)


@struct.dataclass
class Generation:
  """ids: int32 [B, L], the prompt then the generated tokens, PAD after a row's EOS.
  logits: float32 [B, L, V]; logits[:, t] scored ids[:, t + 1] (zeros where not computed).
  length: int32 [B], tokens up to and including the row's first EOS after BOS (L if none)."""
  ids: jax.Array
  logits: jax.Array
  length: jax.Array


@struct.dataclass
class KVCache:
  # One [B, P + L, H, K] array per layer (not one stacked array: a step then updates each
  # layer's cache in place instead of copying the whole stack).
  k: tuple
  v: tuple
  prefix_valid: jax.Array  # bool [B, P]


def _check_model(model, modality: str) -> None:
  if model.spec.pool == "cls":
    raise ValueError('generation needs model.pool="mean": a CLS token before the text '
                     "would sit among the causal tokens")
  if not hasattr(model.trunk, "causal_stack"):
    raise ValueError(f"trunk {type(model.trunk).__name__} has no causal stack to decode "
                     "with; use model.fusion.type early or late_decoder")
  if model.spec.modalities[modality].kind != "text":
    raise ValueError(f"generation decodes a text modality; {modality!r} is not text")


def prefill(model, x: ModelInputs, modality: str, head: str) -> tuple[jax.Array, KVCache]:
  """(logits [B, L, V] at every text position, the cache). x: the context modalities and
  the text buffer [B, L] (every position taken as valid), with `modality` causal."""
  tokens, infos = model.trunk_inputs(x, {})
  tokens, infos, _ = model.trunk.prefix(tokens, infos)
  stack = model.trunk.causal_stack()
  names = list(tokens)
  x_bld = jnp.concatenate([tokens[m] for m in names], axis=1)
  info = TokenInfo.concat([infos[m] for m in names])
  mask = info.attention_mask()
  ks, vs = [], []
  for block in stack.blocks:  # Block.__call__'s arithmetic, keeping k and v
    q, k, v = block.attn.project(block.ln1(x_bld))
    x_bld = x_bld + block.attn.attend(q, k, v, mask)
    y_bld, _ = block.mlp(block.ln2(x_bld), info)
    x_bld = x_bld + y_bld
    ks.append(k)
    vs.append(v)
  n_text = tokens[modality].shape[1]
  text_out = stack.final_ln(x_bld)[:, -n_text:]  # the causal modality comes last
  cache = KVCache(k=tuple(ks), v=tuple(vs), prefix_valid=info.valid[:, :-n_text])
  return model.decode(text_out, head), cache


def step(model, cache: KVCache, ids_b: jax.Array, t: jax.Array, modality: str,
         head: str) -> tuple[jax.Array, KVCache]:
  """(logits [B, V] at text position t, the cache with position t written)."""
  b = ids_b.shape[0]
  n_prefix = cache.prefix_valid.shape[1]
  n_text = cache.k[0].shape[1] - n_prefix
  x_bld = model.embedders[modality].text_at(ids_b[:, None], t)
  info = TokenInfo.for_modality(jnp.ones((b, 1), bool), model.spec.modality_ids[modality],
                                causal=True)
  keys_valid = jnp.concatenate(
      [cache.prefix_valid, jnp.broadcast_to(jnp.arange(n_text) <= t, (b, n_text))], axis=1)
  mask = keys_valid[:, None, None, :]
  ks, vs = [], []
  for i, block in enumerate(model.trunk.causal_stack().blocks):
    q, k, v = block.attn.project(block.ln1(x_bld))
    k_all = jax.lax.dynamic_update_slice_in_dim(cache.k[i], k, n_prefix + t, axis=1)
    v_all = jax.lax.dynamic_update_slice_in_dim(cache.v[i], v, n_prefix + t, axis=1)
    x_bld = x_bld + block.attn.attend(q, k_all, v_all, mask)
    y_bld, _ = block.mlp(block.ln2(x_bld), info)
    x_bld = x_bld + y_bld
    ks.append(k_all)
    vs.append(v_all)
  out = model.trunk.causal_stack().final_ln(x_bld)
  logits = model.decode(out, head)[:, 0]
  return logits, cache.replace(k=tuple(ks), v=tuple(vs))


def _full_logits(model, x: ModelInputs, modality: str, head: str) -> jax.Array:
  """Logits [B, L, V] of the whole text buffer by the model's ordinary forward pass."""
  return model.decode(model.encode(x).tokens[modality], head)


def _buffer_inputs(context: ModelInputs, ids_bl: jax.Array, modality: str) -> ModelInputs:
  inputs = dict(context.inputs, **{modality: ids_bl})
  valid = dict(context.valid, **{modality: jnp.ones(ids_bl.shape, bool)})
  return context.replace(inputs=inputs, valid=valid, causal=(modality,))


def _advance_fn(graphdef, state, context: ModelInputs, modality: str, head: str,
                cached: bool) -> Callable:
  """advance(ids, t, cache) -> (logits [B, V] at position t, cache): a cached step, or the
  whole sequence recomputed. The model is merged inside (fresh per trace: MoE layers sow)."""
  def advance(ids_bl, t, cache):
    model = nnx.merge(graphdef, state)
    if cached:
      return step(model, cache, ids_bl[:, t], t, modality, head)
    logits = _full_logits(model, _buffer_inputs(context, ids_bl, modality), modality, head)
    return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), cache
  return advance


def generate(model, context: ModelInputs, prompt_ids: jax.Array, prompt_len: jax.Array, *,
             modality: str, head: str, eos_id: int, pad_id: int = 0,
             sampling: Sampling = Sampling(), rng: jax.Array | None = None,
             cached: bool = True) -> Generation:
  """Decodes `modality` after each row's prompt (prompt_ids [B, L], the first
  prompt_len[b] >= 1 of row b; L the model's text length) given the context modalities
  (a ModelInputs of the prefix, e.g. the image). Jit the caller; `sampling` is static."""
  _check_model(model, modality)
  b, n = prompt_ids.shape
  rng = jax.random.key(0) if rng is None else rng
  graphdef, state = nnx.split(model)
  pos_bl = jnp.arange(n)[None]
  ids = jnp.where(pos_bl < prompt_len[:, None], prompt_ids, pad_id).astype(jnp.int32)
  buffer = _buffer_inputs(context, ids, modality)
  if cached:
    logits_blv, cache = prefill(model, buffer, modality, head)
  else:
    logits_blv, cache = _full_logits(model, buffer, modality, head), None
  t0 = jnp.min(prompt_len) - 1
  first = jax.lax.dynamic_index_in_dim(logits_blv, t0, axis=1, keepdims=False)
  known = (pos_bl <= t0)[..., None]  # positions whose logits the first pass already gave
  all_logits = jnp.where(known, logits_blv, 0.0)
  advance = _advance_fn(graphdef, state, context, modality, head, cached)

  def body(carry):
    t, logits_bv, ids, done, cache, all_logits = carry
    nxt = sample(logits_bv, jax.random.fold_in(rng, t), sampling)
    in_prompt = t + 1 < prompt_len
    forced = jax.lax.dynamic_index_in_dim(ids, t + 1, axis=1, keepdims=False)
    nxt = jnp.where(in_prompt, forced, jnp.where(done, pad_id, nxt))
    ids = jax.lax.dynamic_update_slice_in_dim(ids, nxt[:, None], t + 1, axis=1)
    done = done | (nxt == eos_id)
    logits_bv, cache = advance(ids, t + 1, cache)
    all_logits = jax.lax.dynamic_update_slice_in_dim(all_logits, logits_bv[:, None], t + 1,
                                                     axis=1)
    return t + 1, logits_bv, ids, done, cache, all_logits

  def cond(carry):
    t, done = carry[0], carry[3]
    return (t < n - 1) & ~jnp.all(done)

  # A row whose prompt already holds EOS (after BOS, by t0) is complete.
  done = jnp.any((ids == eos_id) & (pos_bl >= 1) & (pos_bl <= t0), axis=1)
  carry = (t0, first, ids, done, cache, all_logits)
  _, _, ids, _, _, all_logits = jax.lax.while_loop(cond, body, carry)
  is_eos = (ids == eos_id) & (pos_bl >= 1)
  length = jnp.where(is_eos.any(1), jnp.argmax(is_eos, axis=1) + 1, n).astype(jnp.int32)
  return Generation(ids=ids, logits=all_logits, length=length)
