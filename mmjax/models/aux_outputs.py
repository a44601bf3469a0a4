"""Auxiliary outputs that travel with the forward pass: extra losses and statistics.

A block (e.g. an MoE feed-forward layer) returns its tokens plus an `Aux`; trunks merge
their blocks' `Aux` (losses summed, statistics kept per layer) and `encode` hands it up
with the tokens. The objective that ran the forward pass adds `total_loss()` to its loss
once, so an auxiliary loss is counted exactly once per forward pass, and the statistics
reach the metrics without the trainer knowing which layers produced them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Aux:
  losses: dict = struct.field(default_factory=dict)  # name -> scalar, already weighted
  stats: dict = struct.field(default_factory=dict)   # name -> scalar or small vector

  def merge(self, other: "Aux", prefix: str = "") -> "Aux":
    """Losses of the same name add up; `other`'s statistics are filed under `prefix`."""
    losses = dict(self.losses)
    for k, v in other.losses.items():
      losses[k] = losses[k] + v if k in losses else v
    stats = dict(self.stats)
    stats.update({prefix + k: v for k, v in other.stats.items()})
    return Aux(losses=losses, stats=stats)

  def total_loss(self) -> jax.Array:
    return sum(self.losses.values(), jnp.zeros((), jnp.float32))

  def metrics(self) -> dict:
    """Flat scalar metrics: 'aux_loss/<name>' and each statistic (vectors per element)."""
    out = {f"aux_loss/{k}": v for k, v in self.losses.items()}
    for k, v in self.stats.items():
      if jnp.ndim(v) == 0:
        out[k] = v
      else:
        for i in range(v.shape[0]):
          out[f"{k}/{i}"] = v[i]
    return out


def combine(auxes) -> Aux:
  """Several forward passes' Aux as one: losses summed; statistics of the same name averaged."""
  losses, sums, counts = {}, {}, {}
  for a in auxes:
    for k, v in a.losses.items():
      losses[k] = losses[k] + v if k in losses else v
    for k, v in a.stats.items():
      sums[k] = sums[k] + v if k in sums else v
      counts[k] = counts.get(k, 0) + 1
  return Aux(losses=losses, stats={k: sums[k] / counts[k] for k in sums})
