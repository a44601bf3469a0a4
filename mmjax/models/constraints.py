"""Bounds on parameter values, applied after every optimizer update.

A parameter declares its bounds as metadata (`nnx.Param(..., clamp=(lo, hi))`, None for
no bound); `clamp_params` projects a params tree back into them. Clamping the value (as
CLIP does for its logit scale) rather than clipping inside the forward pass keeps the
gradient alive at the bound.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def clamp_params(params):
  def clamp(v):
    if isinstance(v, nnx.Variable):
      bounds = v.get_metadata().get("clamp")
      if bounds is not None:
        return v.replace(value=jnp.clip(v.get_value(), *bounds))
    return v
  return jax.tree.map(clamp, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
