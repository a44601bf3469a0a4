"""Analytic parameter and FLOP counts (feeds MFU, `metrics.jsonl` and scaling sweeps).

Model FLOPs of one training step, the numerator of MFU. A multiply-add is 2 FLOPs;
d = width, m = mlp_dim, e = embed_dim, B = examples per step.

A *trunk pass* is one call of the trunk on the tokens of some modalities; each objective
names its passes (`objective.forward_passes()`): contrastive encodes a and b in two
passes, classification its inputs jointly in one, masked one modality. A pass over
modalities with N_1..N_k tokens per example (`ModalitySpec.num_tokens` of the batch's
shapes; text padding counts, as it is computed) has L = sum N_i tokens, and costs per
example, forward:

  patch embedding        sum over patch modalities 2 * N_i * patch_dim_i * d
  text embedding         0 (a table lookup)
The trunk runs, at each layer, one or more attention sequences (the trunk config's
`layer_sequences`): early fusion one of all L tokens; bottleneck fusion one per modality
stream, of N_i tokens plus the n_b bottleneck tokens from `fusion_layer` on; late fusion one
per modality of N_i tokens; late_decoder one of all L tokens (the decoder) plus one per
encoder modality (its encoder), and each encoder's final norm and connector (the trunk
config's `extra_flops`). For each sequence of S tokens, per layer:

  projections            S * 2 * 4 * d^2      q, k, v and output
  feed-forward           S * ffn(layer)       the ffn config's `flops_per_token`: dense
                         2 * 2 * d * m + 10 m (GELU ~9 per unit, bias 1); MoE the router
                         2 * d * E plus top_k (or, expert choice, top_k * capacity_factor)
                         experts' dense cost, plus a shared expert
  attention              4 * S^2 * d + 5 * h * S^2   Q K^T and A V, softmax per head
  elementwise            S * 20 * d           two layer norms (8 d each), biases, residuals
  final norm, per token  8 * d
and the heads of the objective:
  contrastive            2 * d * e per example and side (projections), 2 * B * e per
                         example for the B x B logits (per microbatch of B rows)
  classification         2 * d * classes per example
  masked decoder         2 * N * d * out per example (every token is decoded)
  next-token decoder     2 * N * d * vocab per example (every text token is decoded, the
                         last one too; a tied unembedding costs the same)

A packed row (mmjax/data/packing.py) is counted as what it is: one sequence of its
length. B is its rows, a packed image modality's N is its slots times an image's tokens,
and the text's N is the row's length; every token of the row counts once, whichever
example it belongs to (the examples of a step vary with packing; its tokens do not).
Attention is counted over the whole row, L^2, as it is computed: the segment mask, like
the causal one, removes nothing from the work.

Causal and prefix-LM attention are counted as full attention, S^2 per sequence: that is
what runs. The mask is data (TokenInfo) and jax.nn.dot_product_attention computes every
query-key score and then masks, so the masked half is computed work, as text padding is.
MaxText counts half of causal attention (since its PR #1988) because its flash/splash
kernels skip the masked blocks; a kernel here that skipped them would have to halve the
causal part of the count too. Counting what runs also keeps the count comparable with
XLA's count of the compiled step (tests/test_accounting.py checks causal trunks as well).

Training costs 3x the forward pass (the backward computes input and weight gradients),
except the patch embedding: its input is data, so its backward is the weight gradient
only (2x). The optimizer update is left out. The elementwise terms are ~2% of a step at
width 128 and <1% at 512; with them the count agrees with XLA's own count of a compiled
CPU step within 3% at width 128 (tests/test_accounting.py). XLA's count is no substitute
on GPU, where it misses the work inside library GEMM calls.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from mmjax.config.task_settings import kept_tokens


def attention_flops(length: int, width: int, num_heads: int) -> float:
  """Forward FLOPs per example of attention over one sequence of `length` tokens: scores
  and weighted values (matmuls) plus the softmax over each head's L x L scores."""
  return 2.0 * 2.0 * length * length * width + 5.0 * num_heads * length * length


# ------------------------------------------------------------------ a whole step

def pass_tokens(spec, modalities: Sequence[str], batch_shapes: Mapping[str, tuple],
                token_drop: Mapping[str, float] | None = None) -> dict:
  """{modality: tokens per example} of one trunk pass, from the batch's array shapes; a
  modality under token drop ({modality: rate}) counts the tokens it keeps."""
  token_drop = token_drop or {}
  out = {}
  for m in modalities:
    s, shape = spec.modalities[m], tuple(batch_shapes[m][1:])
    if len(shape) == len(s.shape) + 1:  # a packed row's image slots: [S, H, W, C]
      n = shape[0] * s.num_tokens(shape[1:])
    else:
      n = s.num_tokens(shape)
    out[m] = kept_tokens(n, token_drop[m]) if m in token_drop else n
  return out


def trunk_pass_flops(spec, tokens: Mapping[str, int]) -> tuple[float, float]:
  """(patch embedding, blocks) forward FLOPs per example of one trunk pass, over the
  attention sequences the trunk really runs at each layer (its `layer_sequences`)."""
  d = spec.width
  embed = sum(2.0 * n * spec.modalities[m].patch_dim() * d
              for m, n in tokens.items() if spec.modalities[m].kind not in ("text", "discrete"))
  blocks = 0.0
  for layer, lengths in enumerate(spec.fusion.layer_sequences(tokens, spec.depth)):
    ffn = spec.ffn.flops_per_token(layer, width=d, mlp_dim=spec.mlp_dim)
    for n in lengths:
      blocks += n * (2.0 * 4 * d * d + 20.0 * d + ffn)
      blocks += attention_flops(n, d, spec.num_heads)
  return embed, blocks + sum(tokens.values()) * 8.0 * d + spec.fusion.extra_flops(tokens, d)


def _class_head_flops(d: int, fused, k: int) -> float:
  """Of one class head: linear on the joint vector, or a fused head over M modalities
  (LMF: M rank-r factor maps of [z;1] and the product; concat + MLP: M*d -> d -> k)."""
  if fused is None:
    return 2.0 * d * k
  m = len(fused.modalities)
  if fused.kind == "lmf":
    return 2.0 * fused.rank * m * (d + 1) * k + 2.0 * fused.rank * k
  return 2.0 * m * d * d + 2.0 * d * k


def head_flops(spec, heads, tokens: Mapping[str, int], rows: int) -> float:
  """Forward FLOPs per example of an objective's heads (`objective.heads()`); `rows` is
  the number of examples scored against each other (a microbatch) for contrastive logits."""
  d, flops = spec.width, 0.0
  flops += sum(2.0 * d * spec.embed_dim for _ in heads.projections)
  flops += sum(2.0 * rows * spec.embed_dim for _ in heads.contrastive_scales)
  flops += sum(_class_head_flops(d, heads.fused_heads.get(n), k)
               for n, k in heads.class_heads.items())
  for m in heads.decoders.values():  # head name -> the modality it predicts
    s = spec.modalities[m]
    out = s.vocab_size if s.kind == "text" else s.patch_dim()
    flops += 2.0 * tokens.get(m, s.num_tokens()) * d * out
  for t in heads.tokenizers.values():  # image tokenizers (FSQ autoencoders), at their shapes
    flops += t.flops_per_example(tuple(spec.modalities[t.modality].shape))
  return flops


def decode_step_flops(spec, prefix_tokens: int, text_len: int, modality: str = "text") -> float:
  """Forward FLOPs per example of one cached decoding step (mmjax/models/decoding.py): one
  text token through the causal stack's `depth` blocks, attending to the whole cache of
  prefix_tokens + text_len keys (masked keys are computed, as in a full pass: what runs),
  the final norm and the unembedding. The token's embedding is a lookup (no FLOPs)."""
  d, keys = spec.width, prefix_tokens + text_len
  vocab = spec.modalities[modality].vocab_size
  per_layer = [2.0 * 4 * d * d + 20.0 * d
               + spec.ffn.flops_per_token(layer, width=d, mlp_dim=spec.mlp_dim)
               + 2.0 * 2.0 * keys * d + 5.0 * spec.num_heads * keys
               for layer in range(spec.depth)]
  return sum(per_layer) + 8.0 * d + 2.0 * d * vocab


def train_step_flops(spec, objectives, batch_shapes: Mapping[str, tuple],
                     microbatches: int = 1, token_drop: Mapping[str, float] | None = None
                     ) -> float:
  """Model FLOPs of one training step of a task: every trunk pass of every objective,
  forward and backward, with the token counts of this batch's shapes (less the dropped
  tokens of a task with token drop: only kept tokens are embedded into the trunk's
  sequence; the patch embedding of the dropped ones is counted too, as it is computed)."""
  batch = next(iter(batch_shapes.values()))[0]
  total = 0.0
  for o in objectives:
    tokens_all: dict = {}
    for group in o.forward_passes():
      tokens = pass_tokens(spec, group, batch_shapes, token_drop)
      tokens_all.update(tokens)
      _, blocks = trunk_pass_flops(spec, tokens)
      embed, _ = trunk_pass_flops(spec, pass_tokens(spec, group, batch_shapes))
      total += batch * (2.0 * embed + 3.0 * blocks)
    total += 3.0 * batch * head_flops(spec, o.heads(), tokens_all, batch // microbatches)
  return total


def tokens_per_step(spec, objectives, batch_shapes: Mapping[str, tuple],
                    token_drop: Mapping[str, float] | None = None) -> int:
  """Input tokens of one step that enter the trunk: every modality the task's objectives
  read, counted once (the kept ones, under token drop)."""
  used = dict.fromkeys(m for o in objectives for g in o.forward_passes() for m in g)
  batch = next(iter(batch_shapes.values()))[0]
  return batch * sum(pass_tokens(spec, tuple(used), batch_shapes, token_drop).values())


def param_count(abstract_params) -> int:
  """Every parameter of the model (embeddings and heads included)."""
  import jax
  return sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params))


def active_param_count(spec, total: int) -> int:
  """Parameters one token uses: `total` less the feed-forward parameters it does not reach
  (the experts it is not routed to, for MoE). With separate towers (late or bottleneck
  fusion with share_weights=False) a token also uses only its own modality's tower; that
  is not subtracted here (the count is per model, as the NMM paper reports late fusion)."""
  ffn = spec.ffn.param_counts(width=spec.width, mlp_dim=spec.mlp_dim, depth=spec.depth,
                              num_modalities=len(spec.modalities))
  return total - ffn["total"] + ffn["active"]
