"""Cross-modal retrieval (R@1, R@5, both directions) between any two modalities, or between
one modality and a set of others ranked by the volume they span (GRAM)."""
from __future__ import annotations

import dataclasses

import numpy as np

from mmjax.config.registry import check
from mmjax.evaluators.common import EvalContext, gather, strip_private
from mmjax.models.volume import volume_matrix

RANKINGS = ("cosine", "volume")


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
  """Embeds every example's `a` and `b` alone (the `embed/<m>` predict functions) and ranks
  by cosine similarity. Examples missing `a` or `b` are left out of queries and gallery.

  rank_by: "cosine", or "volume": the gallery item is the set (b, *b_with) of an example,
  scored against query a by minus the volume of a with the set's embeddings
  (mmjax/models/volume.py; for n = 2, sqrt(1 - cos^2)). Metrics name the gallery side
  "b+c+..." when b_with is set.

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
  rank_by: str = "cosine"
  b_with: tuple[str, ...] = ()  # more gallery modalities, with b (volume only)

  def __post_init__(self):
    check(self.every_steps > 0, "every_steps", "must be a positive integer")
    check(self.a != self.b, "b", f"a and b are both {self.a!r}; name two modalities")
    check(self.rank_by in RANKINGS, "rank_by", f"valid: {', '.join(map(repr, RANKINGS))}")
    check(not self.b_with or self.rank_by == "volume", "b_with",
          f"rank_by={self.rank_by!r} compares two modalities; set rank_by='volume' "
          f"or b_with=()")
    gallery = (self.b,) + tuple(self.b_with)
    check(self.a not in gallery and len(set(gallery)) == len(gallery), "b_with",
          f"gallery {gallery!r} must name distinct modalities other than a={self.a!r}")

  @property
  def gallery(self) -> tuple[str, ...]:
    return (self.b,) + tuple(self.b_with)

  def check(self, predict_names, key: str) -> None:
    del predict_names, key  # every task has `embed/<m>` for each modality of the model

  def build(self, name: str, ctx: EvalContext) -> "Retrieval":
    return Retrieval(name, self, ctx)


class Retrieval:

  def __init__(self, name: str, cfg: RetrievalConfig, ctx: EvalContext):
    self.name, self.ctx = name, ctx
    self.task, self.a, self.b, self.split = cfg.task, cfg.a, cfg.b, cfg.split
    self.content_key, self.shuffle, self.seed = cfg.content_key, cfg.shuffle, cfg.seed
    self.every_steps, self.rank_by, self.gallery = cfg.every_steps, cfg.rank_by, cfg.gallery
    self._embed = {m: ctx.jit(ctx.predict(self.task, f"embed/{m}"))
                   for m in (self.a,) + self.gallery}

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
    for m in (self.a,) + self.gallery:
      if f"{m}_present" in batch:
        keep &= batch[f"{m}_present"]
    return keep

  def _collect(self, params):
    """({modality: embeddings [N,E]} of a and the gallery modalities, content ids [N])."""
    z, content = {m: [] for m in self._embed}, []
    for batch_a, batch_b in self._pairs():
      keep = gather(self._usable(batch_a))
      for m in z:
        batch = batch_b if m == self.b else batch_a
        z[m].append(gather(self._embed[m](params, self.ctx.to_device(strip_private(batch))))[keep])
      if self.content_key in batch_a:
        content.append(gather(batch_a[self.content_key])[keep])
    z = {m: np.concatenate(v) for m, v in z.items()}
    content = np.concatenate(content) if content else np.arange(len(z[self.a]))
    return z, content

  def _similarity(self, z) -> np.ndarray:
    """[N_a, N_gallery]: higher is closer."""
    if self.rank_by == "volume":
      others = np.stack([z[m] for m in self.gallery])
      return -np.asarray(volume_matrix(z[self.a], others), np.float64)
    return z[self.a].astype(np.float64) @ z[self.b].astype(np.float64).T

  def run(self, params):
    z, content = self._collect(params)
    za, sim = z[self.a], self._similarity(z)
    prefix = f"{self.task}/{self.name}"
    ids = np.arange(len(za))
    gallery = "+".join(self.gallery)
    for q, g, s in ((self.a, gallery, sim), (gallery, self.a, sim.T)):
      for k in (1, 5):
        yield f"{prefix}/{q}_to_{g}/r@{k}", recall_at_k(s, content, content, k, self.seed)
      yield f"{prefix}/{q}_to_{g}/r@1_exact_item", recall_at_k(s, ids, ids, 1, self.seed)
    yield f"{prefix}/chance@1", chance_at_1(content, content)
    yield f"{prefix}/num_examples", float(len(za))
