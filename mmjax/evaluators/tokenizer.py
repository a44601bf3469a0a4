"""How good a learned image tokenizer is, on a held-out split: its `tokenize/<objective>`
predict function's reconstructions and token ids over every example.

Metrics: `mse` (per pixel, on the [-1, 1] pixels the image op makes), `psnr` (dB, peak 1 on
[0, 1] pixels: 10 log10(4 / mse)), `perplexity` (exp of the entropy of the split's code
histogram: the number of equally used codes it is worth), `code_usage` (the fraction of
the codebook used at least once), `tokens_per_image` and `codebook_size`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from mmjax.evaluators.common import EvalContext, ObjectiveEvalConfig, gather, strip_private


@dataclasses.dataclass(frozen=True)
class TokenizerEvalConfig(ObjectiveEvalConfig):
  prefix: ClassVar[str] = "tokenize/"
  kind: ClassVar[str] = "fsq_autoencoder"

  def build(self, name: str, ctx: EvalContext) -> "TokenizerQuality":
    return TokenizerQuality(name, self, ctx)


def usage_metrics(counts: np.ndarray) -> dict[str, float]:
  """Perplexity and fraction used of a code histogram."""
  p = counts / max(counts.sum(), 1)
  nz = p[p > 0]
  return {"perplexity": float(math.exp(-np.sum(nz * np.log(nz)))),
          "code_usage": float(np.mean(counts > 0))}


class TokenizerQuality:

  def __init__(self, name: str, cfg: TokenizerEvalConfig, ctx: EvalContext):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.every_steps = cfg.every_steps
    self._predict = ctx.jit(ctx.predict(cfg.task, cfg.check(ctx.predict_names[cfg.task],
                                                            f"evals.{name}")))

  def run(self, params):
    sq = pixels = 0.0
    counts, tokens, images = None, 0, 0
    for batch in self.ctx.batches(self.cfg.task, self.cfg.split):
      out = {k: gather(v) for k, v in
             self._predict(params, self.ctx.to_device(strip_private(batch))).items()}
      keep = gather(batch["_valid"]).astype(bool)
      if counts is None:
        counts = np.zeros(int(out["codebook_size"][0]), np.int64)
      ids = out["ids"][keep]
      counts += np.bincount(ids.reshape(-1), minlength=len(counts))
      sq += float(out["sq_err"][keep].sum())
      pixels += float(out["pixels"][keep].sum())
      tokens, images = ids.shape[1], images + int(keep.sum())
    mse = sq / max(pixels, 1.0)
    prefix = f"{self.cfg.task}/{self.name}"
    yield f"{prefix}/mse", mse
    yield f"{prefix}/psnr", 10.0 * math.log10(4.0 / max(mse, 1e-12))
    for k, v in usage_metrics(counts if counts is not None else np.zeros(1)).items():
      yield f"{prefix}/{k}", v
    yield f"{prefix}/tokens_per_image", float(tokens)
    yield f"{prefix}/codebook_size", float(0 if counts is None else len(counts))
    yield f"{prefix}/num_examples", float(images)
