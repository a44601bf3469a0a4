"""Captioning: a next_token objective's per-token loss and perplexity on a split, and the
captions it generates (greedy, cached decoding) from the context alone.

Metrics, `<task>/<name>/...`:
  loss, perplexity   the mean cross-entropy over every target token of the split, and its
                     exp (not a mean of per-batch perplexities)
  token_acc          the fraction of target tokens that are the argmax
  exact_match        the fraction of examples whose generated caption is the reference's
  field_acc/<field>  mm_world's shape, colour, size and position: the fraction of examples
                     whose generated caption names the reference's value (caption_fields.py;
                     over the examples whose reference names one)
  num_examples       how many examples were captioned
With `shuffle` (a control) the captions are scored against other examples' references.
It reads the model through two of the task's predict functions, `next_token/<objective>`
and `generate/<objective>` (mmjax/training/predict.py).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from mmjax.config.registry import check
from mmjax.data import text_tokenizer
from mmjax.errors import ConfigError
from mmjax.evaluators.caption_fields import FIELDS, caption_fields
from mmjax.evaluators.common import EvalContext, gather, strip_private
from mmjax.models.decoding import Sampling

GENERATE, SCORES = "generate/", "next_token/"


def generating_objectives(predict_names) -> list[str]:
  """The objectives of a task that generate (both predict functions present)."""
  names = set(predict_names)
  return [n[len(GENERATE):] for n in predict_names
          if n.startswith(GENERATE) and SCORES + n[len(GENERATE):] in names]


def tokenizer_of(data_cfg):
  """The task's tokenizer (data.tokenizer: kind and model_path)."""
  tok = data_cfg.get("tokenizer", {}) if hasattr(data_cfg, "get") else {}
  tok = tok.to_dict() if hasattr(tok, "to_dict") else dict(tok or {})
  return text_tokenizer.make_tokenizer(tok.get("kind", "byte"), tok.get("model_path", ""))


def decode_rows(tokenizer, ids_bl: np.ndarray, lengths_b: np.ndarray) -> list[str]:
  """Each row's text: its first lengths[b] ids (BOS, EOS and padding are no text)."""
  return [tokenizer.decode([i for i in row[:n] if i not in (tokenizer.eos_id,)])
          for row, n in zip(np.asarray(ids_bl), np.asarray(lengths_b))]


@dataclasses.dataclass(frozen=True)
class CaptioningConfig:
  task: str = "default"
  objective: str = ""     # which next_token objective of the task; "" = the only one
  split: str = ""         # "" = the task's data.eval_split
  every_steps: int = 1000
  prompt_tokens: int = 1  # reference tokens given as the prompt: 1 = BOS only
  max_examples: int = 0   # caption at most this many examples; 0 = the whole split
  # A control: each generated caption is compared with another example's reference (the
  # batch's kept rows rolled by one), as if the context were shuffled across examples.
  # The loss metrics stay those of the true pairs.
  shuffle: bool = False

  def __post_init__(self):
    check(self.every_steps > 0, "every_steps", "must be a positive integer")
    check(isinstance(self.prompt_tokens, int) and self.prompt_tokens >= 1, "prompt_tokens",
          f"got {self.prompt_tokens!r}; must be >= 1 (1 = BOS only)")
    check(isinstance(self.max_examples, int) and self.max_examples >= 0, "max_examples",
          f"got {self.max_examples!r}; must be >= 0 (0 = the whole split)")

  def check(self, predict_names, key: str) -> str:
    """The objective this evaluator captions with."""
    candidates = generating_objectives(predict_names)
    chosen = [o for o in candidates if not self.objective or o == self.objective]
    if len(chosen) != 1:
      raise ConfigError(f"config.{key}.objective={self.objective!r} must name one "
                        f"next_token objective of task {self.task!r}; valid: {candidates}")
    return chosen[0]

  def build(self, name: str, ctx: EvalContext) -> "Captioning":
    return Captioning(name, self, ctx)


class Captioning:

  def __init__(self, name: str, cfg: CaptioningConfig, ctx: EvalContext):
    self.name, self.cfg, self.ctx = name, cfg, ctx
    self.every_steps = cfg.every_steps
    objective = cfg.check(ctx.predict_names[cfg.task], f"evals.{name}")
    self.tokenizer = tokenizer_of(ctx.data[cfg.task])
    scores = ctx.predict(cfg.task, SCORES + objective)
    generate = ctx.predict(cfg.task, GENERATE + objective)
    key, eos = jax.random.key(0), self.tokenizer.eos_id
    self._scores = ctx.jit(scores)
    self._generate = ctx.jit(lambda model, batch: generate(
        model, batch, key, Sampling(), eos, cfg.prompt_tokens))

  def _captions(self, params, batch, keep):
    """(generated, reference) texts of the kept rows."""
    out = {k: gather(v) for k, v in self._generate(params, batch).items()}
    ref_len = out["reference_valid"].sum(1)
    made = decode_rows(self.tokenizer, out["ids"][keep], out["length"][keep])
    refs = decode_rows(self.tokenizer, out["reference"][keep], ref_len[keep])
    return made, (refs[1:] + refs[:1] if self.cfg.shuffle else refs)

  def run(self, params):
    sums = {"xent_sum": 0.0, "targets": 0.0, "correct": 0.0}
    exact, total = 0, 0
    field_hits = {f: [0, 0] for f in FIELDS}
    for batch in self.ctx.batches(self.cfg.task, self.cfg.split):
      keep = gather(batch["_valid"]).astype(bool)
      limit = self.cfg.max_examples
      if limit and total + keep.sum() > limit:
        keep &= np.cumsum(keep) <= limit - total
      device_batch = self.ctx.to_device(strip_private(batch))
      for k, v in self._scores(params, device_batch).items():
        sums[k] += float(np.sum(gather(v)[keep]))
      for made, ref in zip(*self._captions(params, device_batch, keep)):
        exact += made == ref
        want, got = caption_fields(ref), caption_fields(made)
        for f in FIELDS:
          if want[f] is not None:
            field_hits[f][0] += got[f] == want[f]
            field_hits[f][1] += 1
      total += int(keep.sum())
      if limit and total >= limit:
        break
    yield from self._metrics(sums, exact, total, field_hits)

  def _metrics(self, sums, exact, total, field_hits):
    prefix = f"{self.cfg.task}/{self.name}"
    loss = sums["xent_sum"] / max(sums["targets"], 1.0)
    yield f"{prefix}/loss", loss
    yield f"{prefix}/perplexity", math.exp(loss)
    yield f"{prefix}/token_acc", sums["correct"] / max(sums["targets"], 1.0)
    yield f"{prefix}/exact_match", exact / max(total, 1)
    for f, (hit, n) in field_hits.items():
      if n:
        yield f"{prefix}/field_acc/{f}", hit / n
    yield f"{prefix}/num_examples", float(total)
