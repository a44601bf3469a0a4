"""Finite scalar quantisation (FSQ, Mentzer et al. 2023) as pure functions.

Each of the d latent channels is squashed into a bounded range and rounded to one of
`levels[i]` integers; a code is the tuple of d integers and its index the mixed-radix number
they spell, so the codebook is the grid of size prod(levels) and needs no parameters. Why
FSQ and not a VQ codebook: a grid cannot collapse (every code stays reachable, whatever the
encoder has learned so far), so it needs none of VQ's auxiliary machinery (commitment loss,
EMA codebook updates, dead-code restarts) -- the reconstruction loss is the whole objective.

Shapes: z [..., d] float; codes [..., d] float on the grid, scaled into [-1, 1]; indices [...]
int32. Everything here is jittable and has no state.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Keeps tanh's bound just inside the outermost half-levels, so rounding never reaches a
# level outside the grid (the paper's eps).
_EPS = 1e-3


def codebook_size(levels: Sequence[int]) -> int:
  return math.prod(levels)


def _half(levels: Sequence[int]) -> np.ndarray:
  """Per channel: the integer grid's half width, L // 2 (the divisor that scales codes)."""
  return np.asarray(levels, np.float32) // 2


def bound(z: jax.Array, levels: Sequence[int]) -> jax.Array:
  """z squashed so that rounding gives exactly L integers per channel: for odd L the range
  is (-(L-1)/2, (L-1)/2); for even L it is shifted by half a level, so the grid is
  {-L/2, ..., L/2 - 1} (an even count of integers is not symmetric around 0)."""
  lv = np.asarray(levels, np.float32)
  half_l = (lv - 1.0) * (1.0 + _EPS) / 2.0
  offset = np.where(lv % 2 == 0, 0.5, 0.0).astype(np.float32)
  shift = np.arctanh(offset / half_l).astype(np.float32)
  return jnp.tanh(z + shift) * half_l - offset


def round_ste(x: jax.Array) -> jax.Array:
  """Rounds in the forward pass; its gradient is the identity (straight-through)."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def quantize(z: jax.Array, levels: Sequence[int]) -> jax.Array:
  """z [..., d] -> codes [..., d]: bounded, rounded (straight-through), scaled into [-1, 1]."""
  if z.shape[-1] != len(levels):
    raise ValueError(f"FSQ latents have {z.shape[-1]} channels; levels {tuple(levels)} "
                     f"need {len(levels)}")
  return round_ste(bound(z, levels)) / _half(levels)


def _bases(levels: Sequence[int]) -> np.ndarray:
  """Mixed-radix place values: channel 0 is the least significant digit."""
  return np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)


def codes_to_indices(codes: jax.Array, levels: Sequence[int]) -> jax.Array:
  """codes [..., d] (on the grid) -> int32 indices [...] in [0, prod(levels))."""
  half = _half(levels)
  digits = jnp.round(codes * half + half).astype(jnp.int32)  # each in [0, L)
  return jnp.sum(digits * _bases(levels), axis=-1).astype(jnp.int32)


def indices_to_codes(indices: jax.Array, levels: Sequence[int]) -> jax.Array:
  """int32 indices [...] -> codes [..., d]: the inverse of codes_to_indices."""
  half = _half(levels)
  digits = (indices[..., None] // _bases(levels)) % np.asarray(levels, np.int32)
  return (digits.astype(jnp.float32) - half) / half
