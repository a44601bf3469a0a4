"""Output heads on top of the trunk: contrastive projections, classifiers, decoders."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.models import axes


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


class ContrastiveScale(nnx.Module):
  """Learned temperature (log scale) and bias for one contrastive objective.

  Starts at scale 10 and bias -10: the SigLIP paper's start, which also works for
  softmax InfoNCE (the bias cancels there).
  """

  def __init__(self, *, rngs: nnx.Rngs):
    del rngs
    self.log_scale = nnx.Param(jnp.asarray(math.log(10.0), jnp.float32), logical_axes=())
    self.bias = nnx.Param(jnp.asarray(-10.0, jnp.float32), logical_axes=())

  def __call__(self):
    # Clip keeps a diverging temperature from blowing up the logits (CLIP clips at 100).
    return jnp.exp(jnp.minimum(self.log_scale[...], math.log(100.0))), self.bias[...]
