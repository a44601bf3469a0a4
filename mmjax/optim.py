"""The optimizer: AdamW with warmup + cosine decay and global-norm clipping."""
from __future__ import annotations

import jax
import optax


def learning_rate_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.learning_rate,
      warmup_steps=optim_cfg.warmup_steps, decay_steps=total_steps,
      end_value=optim_cfg.learning_rate * optim_cfg.end_lr_fraction)


def _decay_mask(params):
  # Decay matrices only: biases, norms, scales and type embeddings keep their values.
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(optim_cfg.clip_norm),
      optax.adamw(learning_rate_schedule(optim_cfg, total_steps), b1=optim_cfg.b1,
                  b2=optim_cfg.b2, weight_decay=optim_cfg.weight_decay, mask=_decay_mask))
