"""Objectives: each returns (loss, metrics) from (model, batch, rng).

`make_objectives` builds them from a task's config; `heads_for` tells the model which
heads the objectives need, so the model holds exactly the heads that are trained.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from mmjax.objectives.classification import Classification
from mmjax.objectives.contrastive import Contrastive
from mmjax.objectives.masked import Masked

TYPES = ("contrastive", "classification", "masked")


def make_objective(name: str, cfg: Mapping, modality_kinds: Mapping[str, str]):
  cfg = dict(cfg)
  kind = cfg.pop("type", None)
  if kind not in TYPES:
    raise ValueError(f"objective {name!r}: type={kind!r}; valid: {TYPES}")
  obj = {"contrastive": Contrastive, "classification": Classification, "masked": Masked}[kind]
  if kind == "masked":
    m = cfg.get("modality")
    if m not in modality_kinds:
      raise ValueError(f"objective {name!r}: modality={m!r}; valid: {sorted(modality_kinds)}")
    cfg["kind"] = modality_kinds[m]
  if kind == "classification" and "inputs" in cfg:
    cfg["inputs"] = tuple(cfg["inputs"])
  try:
    o = obj(name=name, **cfg)
  except TypeError as e:
    raise ValueError(f"objective {name!r} (type {kind!r}): {e}") from None
  for m in o.modalities:
    if m not in modality_kinds:
      raise ValueError(f"objective {name!r} uses modality {m!r}, which is not in "
                       f"model.modalities {sorted(modality_kinds)}")
  return o


def make_objectives(objectives_cfg: Mapping, modality_kinds: Mapping[str, str]) -> tuple:
  return tuple(make_objective(n, c, modality_kinds) for n, c in objectives_cfg.items())


def heads_for(objectives) -> dict:
  """Union of the heads the objectives need, as ModelSpec keyword arguments."""
  out = dict(class_heads={}, projections=(), contrastive_scales=(), decoders=())
  for o in objectives:
    for k, v in o.heads().items():
      if k == "class_heads":
        for head, n in v.items():
          if out[k].get(head, n) != n:
            raise ValueError(f"classification head {head!r} is used with {out[k][head]} and {n} classes")
          out[k][head] = n
      else:
        out[k] = tuple(dict.fromkeys(out[k] + tuple(v)))
  return out


def total_loss(objectives, model, batch, rng):
  """Weighted sum of the objectives' losses; metrics named '<objective>/<what>'."""
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for i, o in enumerate(objectives):
    loss, m = o(model, batch, jax.random.fold_in(rng, i))
    total = total + o.weight * loss
    metrics[f"{o.name}/loss"] = loss
    metrics.update({f"{o.name}/{k}": v for k, v in m.items()})
  metrics["loss"] = total
  return total, metrics
