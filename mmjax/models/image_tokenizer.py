"""A learned image tokenizer: a convolutional FSQ autoencoder (fsq.py quantises).

image [B, H, W, C] in [-1, 1] -> encoder (one stride-2 conv per halving, then a 1x1 conv to
len(levels) channels) -> FSQ codes on an (H/s, W/s) grid -> decoder (the mirror image, with
nearest-neighbour upsampling) -> image. Each grid cell is one discrete token, an index in
[0, prod(levels)). It is a head of the multimodal model (Heads.tokenizers), so the trainer,
the optimizer and Orbax treat its parameters like any other.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax.config.registry import check
from mmjax.models import fsq
from mmjax.models import logical_axes as axes


@dataclasses.dataclass(frozen=True)
class FsqSpec:
  """modality: the image modality it tokenizes; levels: FSQ levels per latent channel;
  downsample: the grid's stride (a power of two: one stride-2 conv each); channels: the conv
  widths, one per halving, from the image side."""
  modality: str = "image"
  levels: tuple[int, ...] = (8, 5, 5, 5)
  downsample: int = 4
  channels: tuple[int, ...] = (32, 64)

  def __post_init__(self):
    check(len(self.levels) > 0 and all(isinstance(v, int) and v >= 2 for v in self.levels),
          "levels", f"{self.levels}: need one or more integers >= 2 (e.g. (8, 5, 5, 5))")
    d = self.downsample
    check(isinstance(d, int) and d >= 2 and d & (d - 1) == 0, "downsample",
          f"{d}: need a power of two >= 2 (one stride-2 conv per halving)")
    check(len(self.channels) == self.stages and all(c > 0 for c in self.channels), "channels",
          f"{self.channels}: downsample={d} needs {self.stages} positive widths, one per halving")

  def check_shape(self, shape) -> None:
    """Refuses an image (H, W, C) whose sides the downsampling does not divide."""
    check(len(shape) == 3, "modality", f"{self.modality!r} has shape {tuple(shape)}; an image "
          f"tokenizer needs an image modality (H, W, C)")
    for name, n in zip("HW", shape[:2]):
      check(n % self.downsample == 0, "downsample",
            f"image {name}={n} is not divisible by downsample={self.downsample}; use an "
            f"image size that is a multiple of {self.downsample}")

  @property
  def stages(self) -> int:
    return int(math.log2(self.downsample))

  @property
  def codebook_size(self) -> int:
    return fsq.codebook_size(self.levels)

  def grid(self, shape) -> tuple[int, int]:
    """The token grid (h, w) of an image of `shape` (H, W, C)."""
    return shape[0] // self.downsample, shape[1] // self.downsample

  def flops_per_example(self, shape) -> float:
    """Forward FLOPs of encoding and decoding one image of `shape` (MFU accounting)."""
    h, w, c = shape
    total, cin, cells = 0.0, c, h * w
    for cout in self.channels:  # a stride-2 4x4 conv, then a 3x3 conv
      cells /= 4
      total += 2.0 * cells * (16 * cin * cout + 9 * cout * cout)
      cin = cout
    total += 2.0 * cells * cin * len(self.levels)
    return 2.0 * total  # the decoder mirrors the encoder


class Conv(nnx.Module):
  """NHWC convolution with 'SAME' padding; parameters replicated (they are small)."""

  def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, param_dtype,
               dtype, rngs: nnx.Rngs):
    init = jax.nn.initializers.lecun_normal()
    self.kernel = axes.param(rngs, init, (kernel, kernel, cin, cout), (None,) * 4, param_dtype)
    self.bias = axes.param(rngs, jax.nn.initializers.zeros, (cout,), (None,), param_dtype)
    self.stride, self.dtype = stride, dtype

  def __call__(self, x):
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), self.kernel[...].astype(self.dtype), (self.stride,) * 2, "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.bias[...].astype(self.dtype)


def _upsample2(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class FsqAutoencoder(nnx.Module):

  def __init__(self, spec: FsqSpec, image_channels: int, *, param_dtype, dtype,
               rngs: nnx.Rngs):
    self.spec = spec
    kw = dict(param_dtype=param_dtype, dtype=dtype, rngs=rngs)
    widths = (image_channels,) + tuple(spec.channels)
    d = len(spec.levels)
    self.down = nnx.List([Conv(widths[i], widths[i + 1], 4, 2, **kw)
                          for i in range(spec.stages)])
    self.down_mix = nnx.List([Conv(c, c, 3, **kw) for c in spec.channels])
    self.to_latent = Conv(widths[-1], d, 1, **kw)
    self.from_latent = Conv(d, widths[-1], 1, **kw)
    self.up_mix = nnx.List([Conv(c, c, 3, **kw) for c in reversed(spec.channels)])
    self.up = nnx.List([Conv(widths[i + 1], widths[i] if i else widths[1], 3, **kw)
                        for i in reversed(range(spec.stages))])
    self.to_image = Conv(widths[1], widths[0], 3, **kw)

  def encode(self, images_bhwc: jax.Array) -> jax.Array:
    """Images -> FSQ codes [B, h, w, d] (straight-through: gradients reach the encoder)."""
    x = images_bhwc
    for down, mix in zip(self.down, self.down_mix):
      x = jax.nn.gelu(down(x))
      x = x + jax.nn.gelu(mix(x))
    return fsq.quantize(self.to_latent(x).astype(jnp.float32), self.spec.levels)

  def decode(self, codes_bhwd: jax.Array) -> jax.Array:
    """FSQ codes [B, h, w, d] -> images [B, H, W, C] (float32)."""
    x = jax.nn.gelu(self.from_latent(codes_bhwd))
    for mix, up in zip(self.up_mix, self.up):
      x = x + jax.nn.gelu(mix(x))
      x = jax.nn.gelu(up(_upsample2(x)))
    return self.to_image(x).astype(jnp.float32)

  def tokenize(self, images_bhwc: jax.Array) -> jax.Array:
    """Images -> int32 token ids [B, h * w] (row-major over the grid)."""
    idx = fsq.codes_to_indices(self.encode(images_bhwc), self.spec.levels)
    return idx.reshape(idx.shape[0], -1)

  def detokenize(self, ids_bn: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """int32 token ids [B, h * w] -> images [B, H, W, C]."""
    codes = fsq.indices_to_codes(ids_bn.reshape((ids_bn.shape[0],) + tuple(grid)),
                                 self.spec.levels)
    return self.decode(codes)

  def __call__(self, images_bhwc: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(reconstruction [B, H, W, C], token ids [B, h * w])."""
    codes = self.encode(images_bhwc)
    ids = fsq.codes_to_indices(codes, self.spec.levels)
    return self.decode(codes), ids.reshape(ids.shape[0], -1)
