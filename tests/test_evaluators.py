"""Retrieval metrics and chance on hand-made similarity matrices; the evaluators' metrics
on hand-made batches with answers worked out by hand."""
import jax
import numpy as np
import pytest
from flax import nnx

from mmjax.errors import ConfigError
from mmjax.evaluators import classification, retrieval
from mmjax.evaluators.common import EvalContext
from mmjax.runtime.sharding import make_mesh


def test_recall_counts_the_paired_item_and_identical_content():
  sim = np.array([[0.9, 0.1, 0.0],
                  [0.8, 0.2, 0.1],   # query 1 ranks item 0 first
                  [0.0, 0.1, 0.9]])
  ids = np.arange(3)
  assert retrieval.recall_at_k(sim, ids, ids, 1) == pytest.approx(2 / 3)
  assert retrieval.recall_at_k(sim, ids, ids, 2) == pytest.approx(1.0)
  # Items 0 and 1 show the same content: retrieving 0 for query 1 is a hit.
  content = np.array([7, 7, 3])
  assert retrieval.recall_at_k(sim, content, content, 1) == pytest.approx(1.0)


def test_chance_level_with_duplicated_content():
  content = np.array([0, 0, 1, 2])
  # Queries 0,1 have 2 matching items of 4; queries 2,3 have 1.
  assert retrieval.chance_at_1(content, content) == pytest.approx((2 + 2 + 1 + 1) / 4 / 4)
  assert retrieval.chance_at_1(np.arange(100), np.arange(100)) == pytest.approx(0.01)


def test_random_embeddings_score_near_chance():
  rng = np.random.default_rng(0)
  n = 500
  sim = rng.normal(size=(n, n))
  content = rng.integers(0, 50, n)
  r1 = retrieval.recall_at_k(sim, content, content, 1)
  assert abs(r1 - retrieval.chance_at_1(content, content)) < 0.04


# ------------------------------------------------------------------ evaluators on known answers
# The evaluators run on hand-made batches through a context whose predict functions return
# what the batch holds, so every metric below has an answer worked out by hand.


class HandMadeContext(EvalContext):
  """An eval context whose task "t" yields the given host batches."""

  def batches(self, task, split):
    assert task == "t"
    yield from (dict(b) for b in self.data["t"])


def _context(batches, predict_fns):
  graphdef, params = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))  # the predict fns ignore it
  mesh = make_mesh({"data": 1}, jax.devices()[:1])
  ctx = HandMadeContext(graphdef=graphdef, mesh=mesh, data={"t": batches},
                        predict_fns={"t": predict_fns}, batch_size=len(batches[0]["_valid"]))
  return ctx, params


def _batch(valid, **arrays):
  return {"_valid": np.array(valid), **{k: np.asarray(v) for k, v in arrays.items()}}


def _as_predicted(model, batch):
  del model
  return {"logits": batch["logits"], "label": batch["label"], "usable": batch["usable"]}


def _accuracy(batches, objective=""):
  ctx, params = _context(batches, {"classify/head": _as_predicted, "loss": None})
  cfg = classification.ClassificationConfig(task="t", objective=objective)
  return dict(cfg.build("cls", ctx).run(params))


def test_classification_accuracy_counts_real_rows_only():
  one_hot = lambda ids: np.eye(3, dtype=np.float32)[ids]
  batches = [
      # argmax 0,1,2,0 against labels 0,1,1,0: 3 right
      _batch([True] * 4, logits=one_hot([0, 1, 2, 0]), label=[0, 1, 1, 0], usable=[True] * 4),
      # two real rows (1 right) and two padded rows that would be right: 1 of 2
      _batch([True, True, False, False], logits=one_hot([2, 2, 0, 1]), label=[2, 0, 0, 1],
             usable=[True] * 4),
  ]
  assert _accuracy(batches) == {"t/cls/accuracy": 4 / 6, "t/cls/num_examples": 6.0}


def test_classification_accuracy_of_a_one_logit_head_with_two_pairs_per_example():
  """A matching head: [B, 2, 1] logits (positive, negative pair), match iff logit > 0."""
  logits = np.array([[1.0, -1.0],    # both right
                     [2.0, 0.5],     # positive right, negative wrong
                     [-1.0, 3.0],    # positive wrong; its negative is unusable
                     [5.0, -5.0]],   # padding
                    np.float32)[..., None]
  usable = [[True, True], [True, True], [True, False], [True, True]]
  label = [[1, 0]] * 4
  batches = [_batch([True, True, True, False], logits=logits, label=label, usable=usable)]
  assert _accuracy(batches) == {"t/cls/accuracy": 3 / 5, "t/cls/num_examples": 5.0}


def test_classification_names_one_classify_predict_function():
  cfg = classification.ClassificationConfig(task="t")
  names = ("embed/text", "classify/label", "classify/match", "loss")
  with pytest.raises(ConfigError, match="must name one classification objective.*'label', 'match'"):
    cfg.check(names, "evals.cls")
  assert classification.ClassificationConfig(objective="match").check(names, "e") == "classify/match"
  assert cfg.check(("embed/text", "classify/label"), "e") == "classify/label"


def _embed(modality):
  return lambda model, batch: batch[modality]


def _retrieval(batches, **kw):
  ctx, params = _context(batches, {"embed/text": _embed("text"), "embed/image": _embed("image")})
  cfg = retrieval.RetrievalConfig(task="t", a="text", b="image", **kw)
  return dict(cfg.build("ret", ctx).run(params))


def _unit(rows):
  rows = np.asarray(rows, np.float32)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_retrieval_recall_on_a_known_ranking():
  # Images are the basis vectors e_0..e_5; text i scores image j by W[i, j] (then normalised).
  w = [[1.0, 0.5, 0, 0, 0, 0],            # image 0 first: a hit
       [0.9, 0.8, 0, 0, 0, 0],            # image 0 first: a hit by content (0 and 1 share id 7)
       [0, 0, 0.6, 0.9, 0, 0],            # image 3, then its own image 2: R@1 miss, R@5 hit
       [0, 0, 0, 1.0, 0, 0],              # hit
       [0.6, 0.5, 0.4, 0.3, 0.1, 0.2],    # its own image 4 is last of six: miss at 1 and 5
       [0, 0, 0, 0, 0, 1.0]]              # hit
  e0 = [[1, 0, 0, 0, 0, 0]]
  text = np.concatenate([_unit(w), _unit(e0), np.zeros((1, 6))]).astype(np.float32)
  image = np.concatenate([np.eye(6), _unit(e0), np.zeros((1, 6))]).astype(np.float32)
  content = [7, 7, 2, 3, 4, 5, 9, 0]
  # Row 6 has no image (it would otherwise top image 0's ranking); row 7 is padding.
  present = [True] * 6 + [False, True]
  valid = [True] * 7 + [False]
  batches = [_batch(valid[i:i + 4], text=text[i:i + 4], image=image[i:i + 4],
                    content_id=np.asarray(content[i:i + 4], np.int32),
                    image_present=np.asarray(present[i:i + 4])) for i in (0, 4)]
  r = _retrieval(batches)
  assert r["t/ret/num_examples"] == 6.0
  assert r["t/ret/text_to_image/r@1"] == pytest.approx(4 / 6)
  assert r["t/ret/text_to_image/r@5"] == pytest.approx(5 / 6)
  assert r["t/ret/text_to_image/r@1_exact_item"] == pytest.approx(3 / 6)
  # Column by column (normalised W): each image's best text is its own.
  for k in ("r@1", "r@5", "r@1_exact_item"):
    assert r[f"t/ret/image_to_text/{k}"] == 1.0
  assert r["t/ret/chance@1"] == pytest.approx((2 + 2 + 1 + 1 + 1 + 1) / 6 / 6)


def test_shuffled_images_score_chance_where_paired_ones_score_one():
  n, batch_size = 60, 16
  z = _unit(np.random.default_rng(1).normal(size=(n, 16)))
  pad = lambda x: np.concatenate([x, np.zeros((64 - n,) + x.shape[1:], x.dtype)])
  text, image, ids = pad(z), pad(z.copy()), pad(np.arange(n, dtype=np.int32))
  valid = np.arange(64) < n
  batches = [_batch(valid[i:i + batch_size], text=text[i:i + batch_size],
                    image=image[i:i + batch_size], content_id=ids[i:i + batch_size])
             for i in range(0, 64, batch_size)]
  paired = _retrieval(batches)
  for d in ("text_to_image", "image_to_text"):
    assert paired[f"t/ret/{d}/r@1"] == paired[f"t/ret/{d}/r@1_exact_item"] == 1.0
  shuffled = _retrieval(batches, shuffle=True, seed=0)
  # Every image is moved to a random row: text i still finds its own image first, so a hit
  # is exactly a row the permutation left in place.
  perm = np.random.default_rng(0).permutation(n)
  fixed = float(np.mean(perm == np.arange(n)))
  assert shuffled["t/ret/chance@1"] == pytest.approx(1 / n)
  for d in ("text_to_image", "image_to_text"):
    assert shuffled[f"t/ret/{d}/r@1"] == pytest.approx(fixed)
    assert shuffled[f"t/ret/{d}/r@1"] <= 3 / n
    assert shuffled[f"t/ret/{d}/r@5"] < 0.25
  assert shuffled["t/ret/num_examples"] == n


def test_an_evaluator_that_needs_a_missing_predict_function_is_told_what_there_is():
  ctx, _ = _context([_batch([True])], {"embed/text": _embed("text"), "embed/image": _embed("image")})
  cfg = retrieval.RetrievalConfig(task="t", a="smell", b="image")
  with pytest.raises(ConfigError, match=r"no predict function 'embed/smell'.*\['embed/image', "):
    cfg.build("ret", ctx)
