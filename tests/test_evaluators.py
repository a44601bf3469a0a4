"""Retrieval metrics and chance on hand-made similarity matrices."""
import numpy as np
import pytest

from mmjax.evaluators import retrieval


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
