"""Objectives, selected by `tasks.<task>.objectives.<name>.type`.

An objective is a frozen dataclass: its fields are its config (defaults + checks in
`__post_init__`), and calling it gives `(loss, metrics, aux)` from (model, batch, rng,
inputs) -- `inputs` is the step's ModelInputs (mmjax.models.model_inputs) --
where `aux` combines the auxiliary outputs of every forward pass it made. It also says
which batch keys it reads (`batch_keys`), which heads it trains (`heads`) and which trunk
passes it makes (`forward_passes`, for FLOP accounting) and which predict functions it
offers evaluators (`predict_fns`: {name: fn}; mmjax/training/predict.py); one whose passes
attend causally names those modalities in `causal_modalities` (next_token). To add one: a
new file with the dataclass, and one line in OBJECTIVES.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from mmjax.config.registry import Registry
from mmjax.errors import ConfigError
from mmjax.models.model_inputs import ModelInputs, model_inputs
from mmjax.models.spec import Heads
from mmjax.objectives.classification import Classification
from mmjax.objectives.contrastive import Contrastive
from mmjax.objectives.fsq_autoencoder import FsqAutoencoderObjective
from mmjax.objectives.gram import Gram
from mmjax.objectives.masked import Masked
from mmjax.objectives.matching import Matching
from mmjax.objectives.multimodal_masked import MultimodalMasked
from mmjax.objectives.next_token import NextToken

OBJECTIVES = Registry("objective", {
    "contrastive": Contrastive, "classification": Classification, "masked": Masked,
    "matching": Matching, "next_token": NextToken, "gram": Gram,
    "multimodal_masked": MultimodalMasked, "fsq_autoencoder": FsqAutoencoderObjective})


def causal_modalities(objective) -> tuple[str, ...]:
  """The modalities an objective's passes run causally: its `causal_modalities`, an
  optional part of the protocol (absent: none, every pass bidirectional)."""
  return tuple(getattr(objective, "causal_modalities", ()))


def make_objective(name: str, cfg: Mapping, modality_kinds: Mapping[str, str],
                   key: str | None = None):
  """The objective `name` of a task; `key` is its config path for messages."""
  key = key or f"objective {name}"
  o = OBJECTIVES.parse(cfg, key, name=name)
  for m in o.modalities:
    if m not in modality_kinds:
      raise ConfigError(f"config.{key}: objective {name!r} uses modality {m!r}, which is not "
                        f"in model.modalities {sorted(modality_kinds)}")
  return o


def make_objectives(objectives_cfg: Mapping, modality_kinds: Mapping[str, str],
                    key: str = "objectives") -> tuple:
  return tuple(make_objective(n, c, modality_kinds, f"{key}.{n}")
               for n, c in objectives_cfg.items())


def _merged(into: dict, new: Mapping, message: str) -> None:
  """Adds new's heads to `into`; a head name met twice must mean the same thing."""
  for head, v in new.items():
    if into.get(head, v) != v:
      raise ConfigError(message.format(head=head, old=into[head], new=v))
    into[head] = v


def heads_for(objectives) -> Heads:
  """Union of the heads the objectives need. Objectives that name the same head share it."""
  class_heads, fused, decoders, projections, scales, queries = {}, {}, {}, (), (), {}
  tokenizers = {}
  tied, untied, linear = {}, set(), {}
  for o in objectives:
    h = o.heads()
    tied.update((head, o.name) for head in h.tied)
    untied.update((head, o.name) for head in h.decoders if head not in h.tied)
    _merged(class_heads, h.class_heads, "classification head {head!r} is used with {old} and "
            "{new} classes; give one of the objectives its own `head` name")
    _merged(fused, h.fused_heads, "classification head {head!r} is used as {old} and {new}; "
            "give one of the objectives its own `head` name")
    linear.update((head, o.name) for head in h.class_heads if head not in h.fused_heads)
    _merged(decoders, h.decoders, "decoder head {head!r} would predict both {old!r} and "
            "{new!r}; give one of the objectives its own `head` name")
    _merged(queries, h.query_decoders, "query decoder {head!r} is used with depth {old} and "
            "{new}; give one of the objectives its own `decoder` name")
    _merged(tokenizers, h.tokenizers, "tokenizer {head!r} is configured as {old} and {new}; "
            "give one of the objectives its own `head` name")
    projections += h.projections
    scales += h.contrastive_scales
  for head, name in sorted(untied):
    if head in tied:
      raise ConfigError(f"decoder head {head!r} is tied to the embedding table for objective "
                        f"{tied[head]!r} but has its own weights for {name!r}; give one of "
                        f"the objectives its own `head` name")
  for head, name in sorted(linear.items()):
    if head in fused:
      raise ConfigError(f"classification head {head!r} is linear for objective {name!r} but "
                        f"a fused {fused[head].kind!r} head elsewhere; give one of the "
                        f"objectives its own `head` name")
  unique = lambda t: tuple(dict.fromkeys(t))
  return Heads(class_heads=class_heads, fused_heads=fused, projections=unique(projections),
               contrastive_scales=unique(scales), decoders=decoders, tied=tuple(sorted(tied)),
               query_decoders=queries, tokenizers=tokenizers)


def input_modalities(objectives) -> tuple[str, ...]:
  """Every modality the objectives read, in the order they first name them."""
  return tuple(dict.fromkeys(m for o in objectives for m in o.modalities))


def total_loss(objectives, model, batch, rng, inputs: ModelInputs | None = None):
  """Weighted sum of the objectives' losses plus each forward pass's auxiliary losses
  (added once, unweighted: their weights are the layers' own). Metrics are named
  '<objective>/<what>'; 'loss' is the total. `inputs`: the step's model inputs (with token
  drop's kept tokens); None reads them from the batch."""
  if inputs is None:
    inputs = model_inputs(batch, input_modalities(objectives))
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for i, o in enumerate(objectives):
    loss, m, aux = o(model, batch, jax.random.fold_in(rng, i), inputs)
    total = total + o.weight * loss + aux.total_loss()
    metrics[f"{o.name}/loss"] = loss
    metrics.update({f"{o.name}/{k}": v for k, v in m.items()})
    metrics.update({f"{o.name}/{k}": v for k, v in aux.metrics().items()})
  metrics["loss"] = total
  return total, metrics
