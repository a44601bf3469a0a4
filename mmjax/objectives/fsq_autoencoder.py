"""Training a learned image tokenizer: an FSQ autoencoder's reconstruction loss.

The tokenizer (mmjax/models/image_tokenizer.py) is a head of the model beside the trunk;
this objective trains it alone (the trunk makes no pass). FSQ needs no codebook or
commitment loss (mmjax/models/fsq.py says why), so the loss is the mean squared error of
the reconstruction, on the [-1, 1] pixels the image op makes. Its predict function
`tokenize/<name>` gives evaluators reconstruction errors and token ids, and `tokens/<name>`
the ids alone (what `python -m mmjax.pretokenize` stores).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from mmjax.models.aux_outputs import Aux
from mmjax.models.image_tokenizer import FsqSpec
from mmjax.models.spec import Heads
from mmjax.objectives import base

# PSNR's peak: the image op's pixels span [-1, 1], a range of 2 (PSNR on [0, 1] pixels).
PIXEL_RANGE = 2.0


def psnr(mse: jnp.ndarray) -> jnp.ndarray:
  return 10.0 * jnp.log10(PIXEL_RANGE ** 2 / jnp.maximum(mse, 1e-12))


def code_usage(ids: jnp.ndarray, codebook_size: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(perplexity, fraction of codes used) of the token ids' histogram."""
  counts = jnp.bincount(ids.reshape(-1), length=codebook_size).astype(jnp.float32)
  p = counts / jnp.maximum(counts.sum(), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.exp(entropy), jnp.mean(counts > 0)


@dataclasses.dataclass(frozen=True)
class FsqAutoencoderObjective:
  name: str
  modality: str = "image"
  levels: tuple[int, ...] = (8, 5, 5, 5)
  downsample: int = 4
  channels: tuple[int, ...] = (32, 64)
  weight: float = 1.0
  head: str = ""   # the tokenizer's name; "" = "fsq_<modality>"

  def __post_init__(self):
    self.spec  # FsqSpec's checks, reported under this objective's keys

  @property
  def spec(self) -> FsqSpec:
    return FsqSpec(modality=self.modality, levels=tuple(self.levels),
                   downsample=self.downsample, channels=tuple(self.channels))

  @property
  def modalities(self):
    return (self.modality,)

  @property
  def head_name(self) -> str:
    return self.head or f"fsq_{self.modality}"

  def check_model(self, spec) -> None:
    self.spec.check_shape(tuple(spec.modalities[self.modality].shape))

  def forward_passes(self):
    return ()  # no trunk pass: the tokenizer's FLOPs are its head's (perf/flops.py)

  def batch_keys(self):
    return [self.modality]

  def heads(self):
    return Heads(tokenizers={self.head_name: self.spec})

  def predict_fns(self):
    head, m, size = self.head_name, self.modality, self.spec.codebook_size

    def tokenize(model, batch):
      """Per example: token ids [N], the summed squared error and the pixel count of its
      reconstruction, and the codebook size (for usage)."""
      images = batch[m].astype(jnp.float32)
      recon, ids = model.tokenizers[head](images)
      b = images.shape[0]
      sq = jnp.sum(jnp.square(recon - images).reshape(b, -1), axis=1)
      return {"ids": ids, "sq_err": sq,
              "pixels": jnp.full((b,), images[0].size, jnp.float32),
              "codebook_size": jnp.full((b,), size, jnp.int32)}

    def tokens(model, batch):
      """Per example: the token ids [N] alone (no decoding): what pretokenize stores."""
      return {"ids": model.tokenizers[head].tokenize(batch[m].astype(jnp.float32))}
    return {f"tokenize/{self.name}": tokenize, f"tokens/{self.name}": tokens}

  def __call__(self, model, batch, rng, inputs=None):
    del rng
    x = base.inputs_for(batch, inputs, self.modalities)
    images = x.inputs[self.modality].astype(jnp.float32)
    recon, ids = model.tokenizers[self.head_name](images)
    mse = jnp.mean(jnp.square(recon - images))
    perplexity, used = code_usage(ids, self.spec.codebook_size)
    metrics = {"mse": mse, "psnr": psnr(mse), "perplexity": perplexity, "code_usage": used}
    return mse, metrics, Aux()  # no trunk pass: no auxiliary outputs
