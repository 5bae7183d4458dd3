"""Classification metrics against scikit-learn and hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from bench.metrics import classification as C
from bench.metrics.stats import bootstrap_ci, bootstrap_indices


def test_rank_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        s = rng.integers(0, 5, 60).astype(float)  # many ties
        if y.min() == y.max():
            continue
        assert C.rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_rank_auc_hand_value_and_single_class():
    # positives score 0.8, 0.4; negatives 0.5, 0.1 → pairs won: (0.8>0.5),(0.8>0.1),(0.4>0.1) = 3/4
    assert C.rank_auc(np.array([1, 1, 0, 0]), np.array([0.8, 0.4, 0.5, 0.1])) == 0.75
    assert np.isnan(C.rank_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_chexzero_probability_formula():
    p = C.chexzero_probability(np.array([0.3, 0.1]), np.array([0.1, 0.3]))
    assert p[0] == pytest.approx(np.exp(0.3) / (np.exp(0.3) + np.exp(0.1)))
    assert p[0] + p[1] == pytest.approx(1.0)


def test_zscore_columns():
    z = C.zscore_columns(np.array([[1.0, 10.0], [3.0, 10.0]]))
    assert z[:, 0].tolist() == [-1.0, 1.0]
    assert z[:, 1].tolist() == [0.0, 0.0]  # constant column stays finite


def test_multilabel_report_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (200, 3))
    s = np.clip(y * 0.3 + rng.random((200, 3)) * 0.7, 0, 1)
    rep = C.multilabel_report(y, s, ["a", "b", "c"], 0.5, resamples=200, seed=0)
    expected_auc = np.mean([roc_auc_score(y[:, c], s[:, c]) for c in range(3)])
    pred = (s >= 0.5).astype(int)
    assert rep["AUC"]["value"] == pytest.approx(expected_auc)
    assert rep["F1"]["value"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert rep["ACC"]["value"] == pytest.approx(np.mean((y == pred).mean(axis=0)))
    assert rep["AUC"]["per_class"]["b"] == pytest.approx(roc_auc_score(y[:, 1], s[:, 1]))
    low, high = rep["AUC"]["ci95"]
    assert low < rep["AUC"]["value"] < high
    assert rep["F1"]["threshold"] == 0.5


def test_multilabel_class_without_positives_is_reported_not_averaged():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s = np.array([[0.9, 0.1], [0.2, 0.5], [0.8, 0.3], [0.1, 0.2]])
    rep = C.multilabel_report(y, s, ["a", "b"], 0.5, resamples=0, seed=0)
    assert rep["AUC"]["value"] == 1.0
    assert rep["AUC"]["undefined_classes"] == ["b"]
    assert rep["AUC"]["ci95"] == [None, None]


def test_multiclass_report():
    labels = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
                       [0.1, 0.6, 0.3], [0, 0.2, 0.8], [0.55, 0, 0.45]])
    rep = C.multiclass_report(labels, scores, ["x", "y", "z"], resamples=100, seed=0)
    pred = scores.argmax(1)
    assert rep["ACC"]["value"] == pytest.approx(4 / 6)
    assert rep["F1"]["value"] == pytest.approx(f1_score(labels, pred, average="macro"))
    assert rep["ACC"]["recall"] == {"x": 0.5, "y": 1.0, "z": 0.5}
    assert rep["AUC"]["value"] == pytest.approx(roc_auc_score(labels, scores, multi_class="ovr", average="macro"))


def test_generic_record_metrics():
    preds = [{"a": 0.9, "b": 0.2}, {"a": 0.1, "b": 0.7}, {"a": 0.6, "b": 0.4}, {"a": 0.3, "b": 0.9}]
    refs = [{"a": 1, "b": 0}, {"a": 0, "b": 1}, {"a": 0, "b": 0}, {"a": 1, "b": 1}]
    assert C.auc(preds, refs) == pytest.approx(np.mean([roc_auc_score([1, 0, 0, 1], [0.9, 0.1, 0.6, 0.3]),
                                                        roc_auc_score([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9])]))
    assert C.accuracy(preds, refs) == pytest.approx(np.mean([0.5, 1.0]))
    assert C.auc([0.2, 0.8, 0.6], [0, 1, 0]) == 1.0


def test_bootstrap_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(3).normal(5.0, 1.0, 500)
    a = bootstrap_ci(lambda idx: float(x[idx].mean()), x.size, 300, seed=7)
    b = bootstrap_ci(lambda idx: float(x[idx].mean()), x.size, 300, seed=7)
    assert a == b
    assert a[0] < x.mean() < a[1]
    assert (a[1] - a[0]) == pytest.approx(2 * 1.96 / np.sqrt(500), rel=0.25)
    assert bootstrap_indices(10, 3, 0).shape == (3, 10)
    assert bootstrap_ci(lambda idx: 0.0, 10, 0, 0) == (None, None)
