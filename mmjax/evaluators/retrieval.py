"""Cross-modal retrieval (R@1, R@5, both directions) between any two modalities."""
from __future__ import annotations

import dataclasses

import numpy as np

from mmjax.config.registry import check
from mmjax.evaluators.common import EvalContext, gather, strip_private
from mmjax.models.model_inputs import model_inputs


def recall_at_k(sim_qg: np.ndarray, query_content: np.ndarray, gallery_content: np.ndarray,
                k: int, seed: int = 0) -> float:
  """Fraction of queries whose top-k gallery items include a hit.

  A hit is the paired item (same index) or, with content ids, any item whose content
  equals the query's (examples with identical content are indistinguishable). Equal
  similarities are ordered at random (seeded), so a tie never favours the paired item or
  a low index.
  """
  n = sim_qg.shape[0]
  tie_break = np.random.default_rng(seed).random(sim_qg.shape)
  top = np.lexsort((tie_break, -sim_qg), axis=1)[:, :k]
  exact = (top == np.arange(n)[:, None]).any(1)
  same = (gallery_content[top] == query_content[:, None]).any(1)
  return float(np.mean(exact | same))


def chance_at_1(query_content: np.ndarray, gallery_content: np.ndarray) -> float:
  """Expected R@1 of a random ranking, counting identical-content items as hits."""
  counts = {c: n for c, n in zip(*np.unique(gallery_content, return_counts=True))}
  return float(np.mean([counts.get(c, 0) for c in query_content]) / len(gallery_content))


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
  """Embeds every example's `a` and `b` alone (the model's contrastive embedding) and ranks
  by cosine similarity. Examples missing `a` or `b` are left out of queries and gallery.

  shuffle: a control; permutes modality `b` across examples before embedding, so a
  model that really uses `b` scores at chance.
  """
  task: str = "default"
  a: str = "text"
  b: str = "image"
  split: str = ""       # "" = the task's data.eval_split
  content_key: str = "content_id"
  shuffle: bool = False
  every_steps: int = 1000
  seed: int = 0

  def __post_init__(self):
    check(self.every_steps > 0, "every_steps", "must be a positive integer")
    check(self.a != self.b, "b", f"a and b are both {self.a!r}; name two modalities")

  def check(self, objectives: tuple, key: str) -> None:
    del objectives, key  # needs nothing of the task's objectives

  def build(self, name: str, ctx: EvalContext) -> "Retrieval":
    return Retrieval(name, self, ctx)


class Retrieval:

  def __init__(self, name: str, cfg: RetrievalConfig, ctx: EvalContext):
    self.name, self.ctx = name, ctx
    self.task, self.a, self.b, self.split = cfg.task, cfg.a, cfg.b, cfg.split
    self.content_key, self.shuffle, self.seed = cfg.content_key, cfg.shuffle, cfg.seed
    self.every_steps = cfg.every_steps

    def embed(model, batch, m):
      return model.embed_modality(model_inputs(batch, (m,)), m)[0]  # eval never drops tokens
    self._embed = {m: ctx.jit(lambda model, batch, m=m: embed(model, batch, m))
                   for m in (self.a, self.b)}

  def _pairs(self):
    """(batch for side a, batch for side b): the same batch unless `shuffle`."""
    batches = self.ctx.batches(self.task, self.split)
    if not self.shuffle:
      for batch in batches:
        yield batch, batch
      return
    # Eval splits are small: gather side b of the whole split, permute, re-batch.
    batches = list(batches)
    pool = np.concatenate([b_[self.b][b_["_valid"]] for b_ in batches])
    pool = pool[np.random.default_rng(self.seed).permutation(len(pool))]
    start = 0
    for batch in batches:
      keep = batch["_valid"]
      shuffled = dict(batch)
      shuffled[self.b] = batch[self.b].copy()
      shuffled[self.b][keep] = pool[start:start + int(keep.sum())]
      start += int(keep.sum())
      yield batch, shuffled

  def _usable(self, batch) -> np.ndarray:
    """Host rows that are real (not padding) and have both modalities."""
    keep = batch["_valid"].copy()
    for m in (self.a, self.b):
      if f"{m}_present" in batch:
        keep &= batch[f"{m}_present"]
    return keep

  def _collect(self, params):
    za, zb, content = [], [], []
    for batch_a, batch_b in self._pairs():
      keep = gather(self._usable(batch_a))
      za.append(gather(self._embed[self.a](params, self.ctx.to_device(strip_private(batch_a))))[keep])
      zb.append(gather(self._embed[self.b](params, self.ctx.to_device(strip_private(batch_b))))[keep])
      if self.content_key in batch_a:
        content.append(gather(batch_a[self.content_key])[keep])
    za, zb = np.concatenate(za), np.concatenate(zb)
    content = np.concatenate(content) if content else np.arange(len(za))
    return za, zb, content

  def run(self, params):
    za, zb, content = self._collect(params)
    sim = za.astype(np.float64) @ zb.astype(np.float64).T
    prefix = f"{self.task}/{self.name}"
    ids = np.arange(len(za))
    for q, g, s in ((self.a, self.b, sim), (self.b, self.a, sim.T)):
      for k in (1, 5):
        yield f"{prefix}/{q}_to_{g}/r@{k}", recall_at_k(s, content, content, k, self.seed)
      yield f"{prefix}/{q}_to_{g}/r@1_exact_item", recall_at_k(s, ids, ids, 1, self.seed)
    yield f"{prefix}/chance@1", chance_at_1(content, content)
    yield f"{prefix}/num_examples", float(len(za))
