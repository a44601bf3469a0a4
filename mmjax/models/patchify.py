"""Pure functions that cut raw modality arrays into token vectors, and position tables.

No parameters here: embedders (embedders.py) project these vectors to the model width.
"""
from __future__ import annotations

import jax
import numpy as np


def patchify(image_bhwc: jax.Array, patch: int) -> jax.Array:
  """[B,H,W,C] -> [B, (H/p)*(W/p), p*p*C], row-major over the patch grid."""
  b, h, w, c = image_bhwc.shape
  if h % patch or w % patch:
    raise ValueError(f"image size {h}x{w} is not divisible by patch size {patch}")
  x = image_bhwc.reshape(b, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def tubelets(video_bthwc: jax.Array, frames: int, patch: int) -> jax.Array:
  """[B,T,H,W,C] -> [B, (T/t)*(H/p)*(W/p), t*p*p*C] (ViViT-style tubelets)."""
  b, t, h, w, c = video_bthwc.shape
  if t % frames or h % patch or w % patch:
    raise ValueError(f"video {t}x{h}x{w} is not divisible by tubelet {frames}x{patch}x{patch}")
  x = video_bthwc.reshape(b, t // frames, frames, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, (t // frames) * (h // patch) * (w // patch), frames * patch * patch * c)


def spectrogram_patches(spec_btf: jax.Array, time_patch: int, freq_patch: int) -> jax.Array:
  """[B,T,F] log-mel -> [B, (T/pt)*(F/pf), pt*pf] (AST-style patches)."""
  b, t, f = spec_btf.shape
  if t % time_patch or f % freq_patch:
    raise ValueError(f"spectrogram {t}x{f} is not divisible by patch {time_patch}x{freq_patch}")
  x = spec_btf.reshape(b, t // time_patch, time_patch, f // freq_patch, freq_patch)
  x = x.transpose(0, 1, 3, 2, 4)
  return x.reshape(b, (t // time_patch) * (f // freq_patch), time_patch * freq_patch)


def sincos_table(grid: tuple[int, ...], dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed sin-cos positions for an N-d grid, flattened row-major: [prod(grid), dim].

  The width is split evenly over the grid axes (each axis gets sin and cos halves);
  leftover channels stay zero.
  """
  per_axis = (dim // (2 * len(grid))) * 2
  if per_axis == 0:
    raise ValueError(f"width {dim} too small for a {len(grid)}-d sin-cos table")
  coords = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid], indexing="ij")
  freqs = 1.0 / temperature ** (np.arange(per_axis // 2) / (per_axis // 2))
  parts = []
  for c in coords:
    angles = c.reshape(-1, 1) * freqs[None, :]
    parts += [np.sin(angles), np.cos(angles)]
  table = np.concatenate(parts, axis=1)
  out = np.zeros((table.shape[0], dim), np.float32)
  out[:, :table.shape[1]] = table
  return out


def resize_positions(table_nd: jax.Array, grid_from: tuple[int, ...],
                     grid_to: tuple[int, ...]) -> jax.Array:
  """Interpolates a learned [prod(grid_from), D] table to another grid (other input sizes)."""
  if tuple(grid_from) == tuple(grid_to):
    return table_nd
  d = table_nd.shape[-1]
  x = table_nd.reshape(*grid_from, d)
  x = jax.image.resize(x, (*grid_to, d), method="linear")
  return x.reshape(-1, d)
