"""The optimizer: AdamW with warmup + cosine decay and global-norm clipping."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def learning_rate_fn(optim_cfg, total_steps: int) -> optax.Schedule:
  """step -> learning rate (optax calls it a schedule; here "schedule" is the task schedule)."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.learning_rate,
      warmup_steps=optim_cfg.warmup_steps, decay_steps=total_steps,
      end_value=optim_cfg.learning_rate * optim_cfg.end_lr_fraction)


class HostLearningRate:
  """The learning rate read on the host, `chunk` steps computed at once.

  For logging while steps are in flight: on one device, even a scalar op waits for every
  step dispatched before it, so evaluating the schedule at a log step would stall the loop
  until the device ran dry. One computation per `chunk` steps costs that wait once.
  """

  def __init__(self, schedule: optax.Schedule, chunk: int = 4096):
    self._values = jax.jit(jax.vmap(schedule))
    self._chunk, self._start, self._cached = chunk, None, None

  def __call__(self, step: int) -> float:
    start = step - step % self._chunk
    if start != self._start:
      self._cached = jax.device_get(self._values(jnp.arange(start, start + self._chunk)))
      self._start = start
    return float(self._cached[step - start])


def _decay_mask(params):
  # Decay matrices only: biases, norms, scales and type embeddings keep their values.
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(optim_cfg.clip_norm),
      optax.adamw(learning_rate_fn(optim_cfg, total_steps), b1=optim_cfg.b1,
                  b2=optim_cfg.b2, weight_decay=optim_cfg.weight_decay, mask=_decay_mask))
