"""Token drop (IMP): train on a random subset of a large input's tokens.

For a task with `token_drop={modality: rate}`, every training step keeps, per example, a
uniformly random `kept_tokens(N, rate) = N - floor(rate * N)` of that modality's N tokens
(their positions already added), and only those enter the trunk. The count is fixed, so
shapes are static and one compiled step serves every batch; the subset is drawn from the
step's key (seed + the task's seed_offset, step), so a resumed run draws the same subsets.
The train step hands the objectives model inputs with the kept indices (ModelInputs.keep,
int32 [B, K], in increasing order); the batch itself is never written to. Evaluation never
drops: evaluators do not go through the train step.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from mmjax.config.task_settings import kept_tokens
from mmjax.models import logical_axes as axes
from mmjax.models.model_inputs import ModelInputs

_STREAM = 0x70D0  # folded into the step key: draws independent of the objectives' randomness


def keep_indices(rng, batch_size: int, num_tokens: int, rate: float) -> jax.Array:
  """int32 [B, K]: for each row, K = kept_tokens(N, rate) distinct token indices, sorted."""
  k = kept_tokens(num_tokens, rate)
  scores = axes.constrain(jax.random.uniform(rng, (batch_size, num_tokens)), ("batch", None))
  _, idx = jax.lax.top_k(scores, k)
  return jnp.sort(idx, axis=1).astype(jnp.int32)


def drop_tokens(inputs: ModelInputs, rates: Mapping[str, float], modalities,
                rng) -> ModelInputs:
  """`inputs` with kept-token indices for each of its modalities m with a rate > 0;
  `modalities` maps a modality to its ModalitySpec (to count its tokens at this input
  shape)."""
  keep = dict(inputs.keep)
  rng = jax.random.fold_in(rng, _STREAM)
  for i, (m, rate) in enumerate(sorted(rates.items())):
    if rate <= 0 or m not in inputs.inputs:
      continue
    x = inputs.inputs[m]
    n = modalities[m].num_tokens(tuple(x.shape[1:]))
    keep[m] = keep_indices(jax.random.fold_in(rng, i), x.shape[0], n, rate)
  return inputs.replace(keep=keep)
