"""Output heads on top of the trunk: contrastive projections, classifiers, decoders."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.models import logical_axes as axes


class Linear(nnx.Module):
  """y = x W + b with named axes; computes in `dtype`."""

  def __init__(self, din: int, dout: int, names: tuple, *, param_dtype, dtype, rngs: nnx.Rngs,
               zero_init: bool = False):
    init = jax.nn.initializers.zeros if zero_init else jax.nn.initializers.lecun_normal()
    self.kernel = axes.param(rngs, init, (din, dout), names, param_dtype)
    self.bias = axes.param(rngs, jax.nn.initializers.zeros, (dout,), names[1:], param_dtype)
    self.dtype = dtype

  def __call__(self, x):
    return x @ self.kernel[...].astype(self.dtype) + self.bias[...].astype(self.dtype)


# CLIP's ceiling on the learned logit scale: beyond it a diverging temperature blows up
# the logits. It bounds the parameter's value (see constraints.py), not the forward pass,
# so the gradient never vanishes and a saturated scale can come back down.
MAX_LOG_SCALE = math.log(100.0)


class ContrastiveScale(nnx.Module):
  """Learned temperature (log scale) and bias for one contrastive objective.

  Starts at scale 10 and bias -10: the SigLIP paper's start, which also works for
  softmax InfoNCE (the bias cancels there).
  """

  def __init__(self, *, rngs: nnx.Rngs):
    del rngs
    self.log_scale = nnx.Param(jnp.asarray(math.log(10.0), jnp.float32), logical_axes=(),
                               clamp=(None, MAX_LOG_SCALE))
    self.bias = nnx.Param(jnp.asarray(-10.0, jnp.float32), logical_axes=())

  def __call__(self):
    return jnp.exp(self.log_scale[...]), self.bias[...]
