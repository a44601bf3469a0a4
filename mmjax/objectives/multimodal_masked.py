"""4M-style multimodal masked modelling (Mizrahi et al., 2023, "4M: Massively Multimodal
Masked Modeling").

Per example, `input_budget` tokens of all `modalities` together are the encoder's input and
another `target_budget` tokens, none of them an input, are the targets; each budget is split
across the modalities by its own Dirichlet draw (`input_alpha`, `target_alpha`), as 4M does
(token_budgets.py). The encoder sees only its input tokens: each modality enters the trunk
as min(input_budget, N_m) kept slots (ModelInputs.keep, token drop's mechanism) of which the
example's own input tokens are valid, so no other token is attended to. A query decoder
(models/query_decoder.py, `decoder_depth` blocks) reads the encoder's outputs and predicts
each target from its position and modality alone: patch regression for image, video and
audio (per-patch normalised, MAE's target), token ids for text, through each modality's
decoder head (shared with a `masked` objective on that modality, as heads of one name are).
The loss is the mean over the modalities with targets in the batch of each one's mean
per-token loss (4M's per-modality averaging), so a modality with many tokens (text) does
not drown the others.
Token drop is refused for these modalities (every token may be a target); the budgets are
checked against the model's token counts when the recipe is parsed (`check_model`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.config.registry import check
from mmjax.models.spec import Heads
from mmjax.objectives import base
from mmjax.objectives import token_budgets as tb
from mmjax.objectives.masked import reconstruction_loss, token_targets, token_validity


def _alphas(alpha: tuple, field: str, modalities: tuple) -> None:
  check(len(alpha) in (1, len(modalities)), field,
        f"{alpha}: give one value for every modality or one per modality "
        f"({len(modalities)}: {', '.join(modalities)})")
  check(all(isinstance(a, (int, float)) and a > 0 for a in alpha), field,
        f"{alpha}: Dirichlet concentrations must be > 0 (1.0 = uniform over the splits)")


@dataclasses.dataclass(frozen=True)
class MultimodalMasked:
  name: str
  modalities: tuple[str, ...] = ("image", "audio", "text")
  input_budget: int = 16        # tokens per example the encoder sees, all modalities together
  target_budget: int = 16       # tokens per example the decoder predicts
  input_alpha: tuple[float, ...] = (1.0,)   # Dirichlet concentration(s) of the input split
  target_alpha: tuple[float, ...] = (1.0,)  # ... and of the target split
  decoder_depth: int = 1
  decoder: str = "fourm"        # the query decoder's name (objectives of one name share it)
  weight: float = 1.0

  def __post_init__(self):
    check(len(self.modalities) >= 2 and len(set(self.modalities)) == len(self.modalities),
          "modalities", f"{self.modalities}: name two or more distinct modalities")
    for f in ("input_budget", "target_budget", "decoder_depth"):
      v = getattr(self, f)
      check(isinstance(v, int) and not isinstance(v, bool) and v > 0, f,
            f"{v!r}: must be a positive integer")
    _alphas(self.input_alpha, "input_alpha", self.modalities)
    _alphas(self.target_alpha, "target_alpha", self.modalities)

  def check_model(self, spec) -> None:
    """The budgets against the model's tokens (reference shapes): raises FieldError."""
    n = sum(spec.modalities[m].num_tokens() for m in self.modalities)
    check(self.input_budget + self.target_budget <= n, "input_budget",
          f"input_budget={self.input_budget} + target_budget={self.target_budget} is more "
          f"than the {n} tokens of {', '.join(self.modalities)}; the two sets are disjoint, "
          f"so their sum must be at most {n}")

  def alpha(self, which: str) -> tuple[float, ...]:
    a = getattr(self, which + "_alpha")
    return tuple(a) * len(self.modalities) if len(a) == 1 else tuple(a)

  def forward_passes(self):
    return (self.modalities,)

  def batch_keys(self):
    return base.needed_keys(self.modalities)

  def heads(self):
    return Heads(decoders={m: m for m in self.modalities},
                 query_decoders={self.decoder: self.decoder_depth})

  def predict_fns(self):
    return {}

  def split(self, rng, x, sizes: dict):
    """Per modality, bool [B, N_m] each: the input tokens and the target tokens."""
    valid = [token_validity(x, m, sizes[m]) for m in self.modalities]
    b = valid[0].shape[0]
    r_in, r_tgt, q_in, q_tgt = jax.random.split(rng, 4)
    quotas = tb.dirichlet_quotas(q_in, self.alpha("input"), b, self.input_budget)
    is_in = tb.choose_tokens(r_in, quotas, valid, self.input_budget)
    left = [v & ~i for v, i in zip(valid, is_in)]
    quotas = tb.dirichlet_quotas(q_tgt, self.alpha("target"), b, self.target_budget)
    is_tgt = tb.choose_tokens(r_tgt, quotas, left, self.target_budget)
    return dict(zip(self.modalities, is_in)), dict(zip(self.modalities, is_tgt))

  def __call__(self, model, batch, rng, inputs=None):
    out, idx, q_valid, aux = self.decoded(model, batch, rng, inputs)
    return self._loss(model, batch, out, idx, q_valid, aux)

  def decoded(self, model, batch, rng, inputs=None):
    """The decoder's outputs [B, Q, D] for every modality's target slots (in the order of
    `modalities`), each modality's target indices [B, K_m] and their validity, and the
    encoder's auxiliary outputs."""
    x = base.inputs_for(batch, inputs, self.modalities)
    specs = model.spec.modalities
    sizes = {m: (batch[m].shape[0], specs[m].num_tokens(tuple(batch[m].shape[1:])))
             for m in self.modalities}
    is_in, is_tgt = self.split(rng, x, sizes)
    keep = {m: tb.slots(is_in[m], min(self.input_budget, sizes[m][1]))[0]
            for m in self.modalities}
    enc = model.encode(x.replace(valid=is_in, keep=keep))
    queries, q_valid, idx = [], [], {}
    for m in self.modalities:
      idx[m], v = tb.slots(is_tgt[m], min(self.target_budget, sizes[m][1]))
      queries.append(model.query_tokens(x, m, idx[m]))
      q_valid.append(v)
    out = model.decode_queries(self.decoder, enc, jnp.concatenate(queries, axis=1),
                               jnp.concatenate(q_valid, axis=1))
    return out, idx, q_valid, enc.aux

  def _loss(self, model, batch, out_bqd, idx, q_valid, aux):
    losses, present, metrics, start = [], [], {}, 0
    for m, w in zip(self.modalities, q_valid):
      spec, k = model.spec.modalities[m], w.shape[1]
      pred = model.decode(out_bqd[:, start:start + k], m)
      start += k
      target = token_targets(spec, batch[m])
      target = jnp.take_along_axis(target, idx[m].reshape(idx[m].shape + (1,) * (target.ndim - 2)),
                                   axis=1)
      per_tok, correct = reconstruction_loss(spec, pred, target)
      w = w.astype(jnp.float32)
      count = jnp.maximum(w.sum(), 1.0)
      losses.append(jnp.sum(per_tok * w) / count)
      present.append((w.sum() > 0).astype(jnp.float32))
      metrics[f"{m}/loss"] = losses[-1]
      metrics[f"{m}/target_tokens"] = w.sum() / w.shape[0]
      if correct is not None:
        metrics[f"{m}/token_acc"] = jnp.sum(correct * w) / count
    present = jnp.stack(present)
    loss = jnp.sum(jnp.stack(losses) * present) / jnp.maximum(present.sum(), 1.0)
    return loss, metrics, aux
