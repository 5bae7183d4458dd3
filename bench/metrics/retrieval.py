"""Retrieval metrics over embedding similarities, computed in query chunks.

- Instance-level (LLaVA-Rad, MIMIC-CXR test): the rank of a query's paired item(s) among all
  items; Recall@K = share of queries ranked ≤ K; mean and median rank. A query may have several
  positives (duplicate texts are merged first, so a merged text is paired with every image that
  had it): its rank is that of its best-scoring positive. Rank = 1 + number of items scoring
  strictly higher (ties resolved in the query's favour, as in the usual ``argsort`` rank when the
  paired item's score is unique).
- Category-level (LGDEA / MedCLIP, MIMIC-5×200): Prec@K = mean over queries of the share of the
  top-K items that carry the query's class.

Similarities are cosine (inputs are L2-normalised). Work is split into query chunks so that no
more than ``memory_bytes`` of similarities exist at once (default 1 GiB): 100,000 × 100,000
retrieval runs in bounded memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_MEMORY_BYTES = 1 << 30


def _chunk_rows(n_items: int, memory_bytes: int) -> int:
    # float32 similarities + a boolean mask of the same shape, with head-room for temporaries
    return max(1, int(memory_bytes // max(1, n_items * 4 * 3)))


def merge_duplicates(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Unique texts (first-seen order) and, for each input, the index of its unique text."""
    index: dict[str, int] = {}
    mapping = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        mapping[i] = index.setdefault(t, len(index))
    return list(index), mapping


def ranks_of_positives(
    queries: np.ndarray,
    items: np.ndarray,
    positives: Sequence[Sequence[int]],
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> np.ndarray:
    """1-based rank of each query's best positive item, computed chunk by chunk."""
    q = np.asarray(queries, dtype=np.float32)
    it = np.asarray(items, dtype=np.float32)
    if len(positives) != q.shape[0]:
        raise ValueError(f"{q.shape[0]} queries but {len(positives)} positive sets")
    ranks = np.empty(q.shape[0], dtype=np.int64)
    step = _chunk_rows(it.shape[0], memory_bytes)
    for start in range(0, q.shape[0], step):
        sims = q[start : start + step] @ it.T
        for row in range(sims.shape[0]):
            pos = positives[start + row]
            if len(pos) == 0:
                raise ValueError(f"query {start + row} has no positive item")
            best = sims[row, list(pos)].max()
            ranks[start + row] = 1 + int((sims[row] > best).sum())
    return ranks


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    return float((np.asarray(ranks) <= k).mean())


def topk_indices(
    queries: np.ndarray, items: np.ndarray, k: int, memory_bytes: int = DEFAULT_MEMORY_BYTES
) -> np.ndarray:
    """[Q, k] indices of the k most similar items per query, best first (ties: lower index)."""
    q = np.asarray(queries, dtype=np.float32)
    it = np.asarray(items, dtype=np.float32)
    k = min(k, it.shape[0])
    out = np.empty((q.shape[0], k), dtype=np.int64)
    step = _chunk_rows(it.shape[0], memory_bytes)
    for start in range(0, q.shape[0], step):
        sims = q[start : start + step] @ it.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        out[start : start + sims.shape[0]] = order
    return out


def class_precision_at_k(top_classes: np.ndarray, query_classes: np.ndarray, k: int) -> np.ndarray:
    """Per-query share of the top-k retrieved items whose class is the query's class."""
    top = np.asarray(top_classes)[:, :k]
    return (top == np.asarray(query_classes)[:, None]).mean(axis=1)


# --------------------------------------------------------------------------- from ranked lists
#
# ``bench score --metrics`` form: each prediction is the query's ranked candidate list (ids for
# instance retrieval, class labels for Prec@K); each reference is the paired id (or a list of
# ids) for Recall@K / ranks, and the query's class for Prec@K.


def _positives(reference: object) -> set:
    if isinstance(reference, list | tuple | set):
        return {str(r) for r in reference}
    return {str(reference)}


def _ranked(prediction: object, i: int) -> list[str]:
    if not isinstance(prediction, list | tuple):
        raise ValueError(f"sample {i}: the prediction must be the ranked list of candidates, got {prediction!r}")
    return [str(p) for p in prediction]


def ranks_from_lists(predictions: Sequence[object], references: Sequence[object]) -> np.ndarray:
    """1-based rank of the best-ranked positive in each ranked list (inf if it is not listed)."""
    ranks = np.full(len(predictions), np.inf)
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        pos = _positives(ref)
        for r, cand in enumerate(_ranked(pred, i), start=1):
            if cand in pos:
                ranks[i] = r
                break
    return ranks


def _recall_from_lists(k: int):
    def metric(predictions: Sequence[object], references: Sequence[object]) -> float:
        return recall_at_k(ranks_from_lists(predictions, references), k)

    metric.__name__ = f"recall_at_{k}"
    metric.__doc__ = f"Share of queries whose paired item is among the first {k} of its ranked list."
    return metric


def _rank_stat(predictions: Sequence[object], references: Sequence[object], fn) -> float:
    ranks = ranks_from_lists(predictions, references)
    if not np.isfinite(ranks).all():
        raise ValueError("mean/median rank needs every query's full ranked list (a paired item is not listed)")
    return float(fn(ranks))


def mean_rank(predictions: Sequence[object], references: Sequence[object]) -> float:
    """Mean 1-based rank of the paired item (lower is better)."""
    return _rank_stat(predictions, references, np.mean)


def median_rank(predictions: Sequence[object], references: Sequence[object]) -> float:
    """Median 1-based rank of the paired item (lower is better)."""
    return _rank_stat(predictions, references, np.median)


def _precision_from_lists(k: int):
    def metric(predictions: Sequence[object], references: Sequence[object]) -> float:
        rows = []
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
            ranked = _ranked(pred, i)
            if len(ranked) < k:
                raise ValueError(f"sample {i}: Prec@{k} needs at least {k} ranked classes, got {len(ranked)}")
            rows.append(sum(c == str(ref) for c in ranked[:k]) / k)
        return float(np.mean(rows)) if rows else float("nan")

    metric.__name__ = f"precision_at_{k}"
    metric.__doc__ = f"Mean share of the first {k} ranked items that carry the query's class."
    return metric


recall_at_1, recall_at_5, recall_at_10 = (_recall_from_lists(k) for k in (1, 5, 10))
precision_at_1, precision_at_2, precision_at_5, precision_at_10 = (_precision_from_lists(k) for k in (1, 2, 5, 10))
