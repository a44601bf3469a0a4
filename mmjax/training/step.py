"""The train state and the pure update step (one task, one optimizer update)."""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from mmjax import objectives as objectives_lib
from mmjax.models import logical_axes as axes
from mmjax.models.constraints import clamp_params
from mmjax.models.model import build_model
from mmjax.models.model_inputs import ModelInputs, model_inputs
from mmjax.training.token_drop import drop_tokens


@struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: updates applied or skipped so far
  params: nnx.State
  opt_state: optax.OptState
  first_bad_step: jax.Array  # int32 scalar: first step with a non-finite loss/grad, or -1
  skipped_steps: jax.Array   # int32 scalar: steps whose update was not applied


def init_state(graphdef_params_fn, optimizer) -> TrainState:
  params = graphdef_params_fn()
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params),
                    first_bad_step=jnp.full((), -1, jnp.int32),
                    skipped_steps=jnp.zeros((), jnp.int32))


def step_rng(seed: int, step) -> jax.Array:
  """The step's randomness is a function of (seed, step) alone, so a resumed run replays it."""
  return jax.random.fold_in(jax.random.key(seed), step)


def split_microbatches(batch, k: int):
  """[B, ...] -> [k, B/k, ...] with microbatch i = rows i, i+k, i+2k, ...

  Strided rather than contiguous: the batch is split over devices in contiguous
  blocks, so strided microbatches keep every device busy in every microbatch.
  """
  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {k} microbatches")
    y = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    return axes.constrain(y, (None, "batch") + (None,) * (x.ndim - 1))
  return jax.tree.map(split, batch)


def loss_and_grads(graphdef, objectives, params, batch, rng, microbatches: int,
                   inputs: ModelInputs | None = None):
  """Mean loss, metrics and gradients over the batch, optionally accumulated over
  microbatches (same result as one pass for per-example losses; in-batch contrastive
  negatives then come from each microbatch only). `inputs`: the batch's ModelInputs
  (None: read from the batch); its kept-token indices are split with the batch."""
  if inputs is None:
    inputs = model_inputs(batch, objectives_lib.input_modalities(objectives))
  modalities = inputs.modalities

  def one(params, mb, rng):
    batch_mb, keep_mb = mb
    inputs_mb = model_inputs(batch_mb, modalities).replace(keep=keep_mb)

    def loss_fn(p):
      return objectives_lib.total_loss(objectives, nnx.merge(graphdef, p), batch_mb, rng,
                                       inputs_mb)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  batch = (batch, dict(inputs.keep))
  if microbatches == 1:
    (loss, metrics), grads = one(params, batch, rng)
    return loss, metrics, grads

  def body(carry, xs):
    i, mb = xs
    (loss, metrics), grads = one(params, mb, jax.random.fold_in(rng, i))
    acc = jax.tree.map(jnp.add, carry, (loss, metrics, grads))
    return acc, None

  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: one(
      params, jax.tree.map(lambda x: x[0], split_microbatches(batch, microbatches)), rng)))
  (loss, metrics), grads = zeros
  total, _ = jax.lax.scan(body, (loss, metrics, grads),
                          (jnp.arange(microbatches), split_microbatches(batch, microbatches)))
  return jax.tree.map(lambda x: x / microbatches, total)


def make_train_step(graphdef, objectives, optimizer, seed: int, microbatches: int = 1,
                    freeze_after_nonfinite: bool = False, *, lr_multiplier: float = 1.0,
                    token_drop: Mapping[str, float] | None = None,
                    modalities: Mapping | None = None):
  """(state, batch) -> (state, metrics). A non-finite loss or gradient never updates state:

  the update is dropped, `first_bad_step` remembers where it happened, and the host
  decides (config.nan_policy) whether to halt or carry on. The host looks only every few
  steps (no per-step sync); with `freeze_after_nonfinite` (nan_policy=halt) no update is
  applied after the first bad step either, so until the host notices, the state stays
  the one of the last good step.

  seed: the task's seed (config.seed + its seed_offset): its step randomness.
  lr_multiplier: the task's scale of the update the optimizer computes (AdamW's step,
    weight decay included, after clipping); the moments are shared and see the raw
    gradients. 1.0 leaves the update as it is.
  token_drop: {modality: rate}; `modalities` ({modality: ModalitySpec}) counts the tokens
    (mmjax/training/token_drop.py). The kept tokens travel in the objectives' ModelInputs.
  """
  if not lr_multiplier > 0:
    raise ValueError(f"lr_multiplier={lr_multiplier}: must be > 0")
  rates = {m: r for m, r in (token_drop or {}).items() if r > 0}

  def train_step(state: TrainState, batch):
    rng = step_rng(seed, state.step)
    inputs = model_inputs(batch, objectives_lib.input_modalities(objectives))
    if rates:
      inputs = drop_tokens(inputs, rates, modalities, rng)
    loss, metrics, grads = loss_and_grads(graphdef, objectives, state.params, batch, rng,
                                          microbatches, inputs)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    if lr_multiplier != 1.0:
      updates = jax.tree.map(lambda u: u * jnp.asarray(lr_multiplier, u.dtype), updates)
    params = clamp_params(optax.apply_updates(state.params, updates))
    apply = finite & (state.first_bad_step < 0) if freeze_after_nonfinite else finite
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        first_bad_step=jnp.where(~finite & (state.first_bad_step < 0), state.step,
                                 state.first_bad_step),
        skipped_steps=state.skipped_steps + (~apply).astype(jnp.int32))
    metrics = dict(metrics, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
    return new_state, metrics

  return train_step


def abstract_train_state(spec, seed: int, optimizer):
  """(graphdef, init function, abstract TrainState) without allocating anything."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(spec, seed)))

  def init():
    return init_state(lambda: nnx.split(build_model(spec, seed), nnx.Param)[1], optimizer)

  return graphdef, init, jax.eval_shape(init)


def with_shardings(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)
