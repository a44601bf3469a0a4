"""Pillow's bilinear resize of uint8 images, for a whole batch at once, bit for bit.

The per-example ops resize with `PIL.Image.resize(..., BILINEAR)`: one Python call and
one C call per frame. This computes the same thing for [..., H, W, C] arrays: Pillow's
two separable passes (horizontal, then vertical), each a weighted sum with its
fixed-point coefficients (22 fraction bits, rounded, clipped to uint8 between the
passes). The sums are exact integers below 2**53, so a float64 matmul computes them
exactly, and the result equals Pillow's (tests/test_batched_input.py checks it over
up- and down-scales).
"""
from __future__ import annotations

import functools
import math

import numpy as np

_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2


def _triangle(x: float) -> float:
  x = abs(x)
  return 1.0 - x if x < 1.0 else 0.0


@functools.lru_cache(maxsize=64)
def _weights(in_size: int, out_size: int) -> np.ndarray:
  """[in_size, out_size] fixed-point coefficients, as Pillow's precompute_coeffs."""
  scale = in_size / out_size
  filterscale = max(scale, 1.0)
  support = 1.0 * filterscale  # bilinear support is 1, widened when downscaling
  ss = 1.0 / filterscale  # multiplied, not divided: the same rounding as Pillow
  w = np.zeros((in_size, out_size), np.float64)
  for xx in range(out_size):
    center = (xx + 0.5) * scale
    xmin = max(int(center - support + 0.5), 0)
    xmax = min(int(center + support + 0.5), in_size)
    k = [_triangle((x + xmin - center + 0.5) * ss) for x in range(xmax - xmin)]
    total = sum(k)
    for x, kx in enumerate(k):
      kx = kx / total if total != 0.0 else kx
      w[xmin + x, xx] = math.trunc((-0.5 if kx < 0 else 0.5) + kx * (1 << _BITS))
  return w


def _fixed_to_uint8(acc: np.ndarray) -> np.ndarray:
  """Pillow's clip8, (sum + half) >> 22: bilinear weights are >= 0 and sum to ~1, so the
  scaled sum lies in [0, 256) and the float -> uint8 cast (truncation) is the floor."""
  acc += 1 << (_BITS - 1)
  acc *= 1.0 / (1 << _BITS)  # a power of two: exact
  return acc.astype(np.uint8)


def _pass(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
  """One separable pass of a planar uint8 [N, H, C, W] along H (axis 1) or W (axis 3)."""
  n, h, c, w = x.shape
  if axis == 3:  # one small product per image: BLAS keeps each on one thread
    acc = x.reshape(n, h * c, w).astype(np.float64) @ _weights(w, out_size)
    return _fixed_to_uint8(acc).reshape(n, h, c, out_size)
  acc = _weights(h, out_size).T @ x.reshape(n, h, c * w).astype(np.float64)
  return _fixed_to_uint8(acc).reshape(n, out_size, c, w)


def _pillow(image: np.ndarray, height: int, width: int) -> np.ndarray:
  from PIL import Image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


@functools.lru_cache(maxsize=256)
def _order(h: int, w: int, height: int, width: int) -> str | None:
  """Which pass Pillow runs first for this size change: "hv", "vh", or None if neither
  reproduces it. Pillow picks the order from the sizes alone (its C core has changed
  how between versions), so one random probe image per size pair settles it exactly."""
  probe = np.random.default_rng([h, w, height, width]).integers(0, 256, (h, w, 3), np.uint8)
  want = _pillow(probe, height, width)
  probe = probe.transpose(2, 0, 1)[None, :, :, :].transpose(0, 2, 1, 3)  # planar [1, H, C, W]
  planar = lambda x: x[0].transpose(0, 2, 1)
  hv = planar(_pass(_pass(probe, 3, width), 1, height))
  if np.array_equal(hv, want):
    return "hv"
  vh = planar(_pass(_pass(probe, 1, height), 3, width))
  return "vh" if np.array_equal(vh, want) else None


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [..., H, W, 3] -> uint8 [..., height, width, 3], equal to Pillow's BILINEAR."""
  h, w = images.shape[-3:-1]
  order = _order(h, w, height, width) if images.shape[-1] == 3 else None
  if order is None:  # not RGB, or a Pillow this module does not reproduce: call it per image
    flat = images.reshape(-1, h, w, images.shape[-1])
    out = np.stack([_pillow(im, height, width) for im in flat])
    return out.reshape(*images.shape[:-3], height, width, images.shape[-1])
  lead, c = images.shape[:-3], images.shape[-1]
  # Planar [N, H, C, W] while resizing: both passes are then plain matmuls.
  flat = images.reshape(-1, h, w, c).transpose(0, 1, 3, 2)
  for p in order:
    axis, size = (3, width) if p == "h" else (1, height)
    if flat.shape[axis] != size:
      flat = _pass(flat, axis, size)
  return flat.transpose(0, 1, 3, 2).reshape(*lead, height, width, c)
