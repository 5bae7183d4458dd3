"""Retrieval metrics: hand-worked ranks, chunking invariance, duplicate merging."""

from __future__ import annotations

import numpy as np

from bench.metrics import retrieval as R


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ranks_hand_worked():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    items = _unit(np.array([[1.0, 0.1], [0.9, 0.5], [0.0, 1.0]]))
    # query 0 sims: .995, .874, 0 → paired item 1 has one better item → rank 2
    # query 1 sims: .0995, .486, 1 → paired item 2 is best → rank 1
    assert R.ranks_of_positives(q, items, [[1], [2]]).tolist() == [2, 1]
    # several positives: the best one counts
    assert R.ranks_of_positives(q, items, [[1, 0], [0]]).tolist() == [1, 3]
    assert R.recall_at_k(np.array([1, 2, 3, 10]), 2) == 0.5


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(0)
    q = _unit(rng.normal(size=(57, 8))).astype(np.float32)
    it = _unit(rng.normal(size=(41, 8))).astype(np.float32)
    pos = [[i % 41] for i in range(57)]
    full = R.ranks_of_positives(q, it, pos)
    tiny = R.ranks_of_positives(q, it, pos, memory_bytes=41 * 4 * 3 * 2)  # 2 queries per chunk
    assert np.array_equal(full, tiny)
    sims = q @ it.T
    brute = [1 + int((sims[i] > sims[i, pos[i][0]]).sum()) for i in range(57)]
    assert full.tolist() == brute
    assert np.array_equal(R.topk_indices(q, it, 5), R.topk_indices(q, it, 5, memory_bytes=500))
    assert R.topk_indices(q, it, 5)[0].tolist() == np.argsort(-sims[0], kind="stable")[:5].tolist()


def test_merge_duplicates_and_class_precision():
    unique, mapping = R.merge_duplicates(["a", "b", "a", "c", "b"])
    assert unique == ["a", "b", "c"] and mapping.tolist() == [0, 1, 0, 2, 1]
    top = np.array([["x", "y", "x"], ["y", "y", "x"]])
    assert R.class_precision_at_k(top, np.array(["x", "y"]), 1).tolist() == [1.0, 1.0]
    assert R.class_precision_at_k(top, np.array(["x", "y"]), 3).tolist() == [2 / 3, 2 / 3]
