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
    scores = np.array(
        [[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0, 0.2, 0.8], [0.55, 0, 0.45]]
    )
    rep = C.multiclass_report(labels, scores, ["x", "y", "z"], resamples=100, seed=0)
    pred = scores.argmax(1)
    assert rep["ACC"]["value"] == pytest.approx(4 / 6)
    assert rep["F1"]["value"] == pytest.approx(f1_score(labels, pred, average="macro"))
    assert rep["ACC"]["recall"] == {"x": 0.5, "y": 1.0, "z": 0.5}
    assert rep["AUC"]["value"] == pytest.approx(roc_auc_score(labels, scores, multi_class="ovr", average="macro"))


def test_generic_record_metrics():
    preds = [{"a": 0.9, "b": 0.2}, {"a": 0.1, "b": 0.7}, {"a": 0.6, "b": 0.4}, {"a": 0.3, "b": 0.9}]
    refs = [{"a": 1, "b": 0}, {"a": 0, "b": 1}, {"a": 0, "b": 0}, {"a": 1, "b": 1}]
    assert C.auc(preds, refs) == pytest.approx(
        np.mean([roc_auc_score([1, 0, 0, 1], [0.9, 0.1, 0.6, 0.3]), roc_auc_score([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9])])
    )
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


# --------------------------------------------------------------------------- threshold policies


def _real_sized(seed: int = 5, n: int = 20000, c: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """CheXpert-test-like size: 20,000 images × 14 findings, prevalences 1–40 %, ties from rounding."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.01, 0.4, c)
    y = (rng.random((n, c)) < prevalence).astype(int)
    s = np.round(1 / (1 + np.exp(-(1.5 * y + rng.normal(0, 1, (n, c)) - 1))), 3)
    return y, s


def test_real_sized_auc_f1_equal_sklearn():
    y, s = _real_sized()
    classes = [f"c{i}" for i in range(y.shape[1])]
    rep = C.multilabel_report(y, s, classes, 0.5, resamples=0, seed=0)
    assert rep["AUC"]["value"] == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert rep["F1"]["value"] == pytest.approx(f1_score(y, (s >= 0.5).astype(int), average="macro"), abs=1e-12)
    assert rep["F1"]["threshold"] == 0.5 and rep["F1"]["threshold_policy"] == "fixed"
    # per-class thresholds: sklearn on each class binarised at its own threshold
    thr = np.linspace(0.2, 0.6, y.shape[1])
    rep = C.multilabel_report(y, s, classes, thr, resamples=0, seed=0, threshold_policy="validation")
    expected = np.mean([f1_score(y[:, k], (s[:, k] >= thr[k]).astype(int)) for k in range(y.shape[1])])
    assert rep["F1"]["value"] == pytest.approx(expected, abs=1e-12)
    assert rep["F1"]["threshold"]["c3"] == pytest.approx(thr[3])
    assert rep["ACC"]["threshold_policy"] == "validation"
    # the generic scorer callables agree too
    preds = [dict(zip(classes, row, strict=True)) for row in s[:3000]]
    refs = [dict(zip(classes, row, strict=True)) for row in y[:3000].tolist()]
    assert C.auc(preds, refs) == pytest.approx(roc_auc_score(y[:3000], s[:3000], average="macro"), abs=1e-12)


def _brute_force_max_f1(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Every distinct score as threshold (positive ⇔ s ≥ t), lowest threshold among ties."""
    best_t, best_f1 = None, -1.0
    for t in np.unique(s):  # increasing
        value = f1_score(y, (s >= t).astype(int), zero_division=0)
        if value > best_f1 + 1e-15:
            best_t, best_f1 = float(t), float(value)
    return best_t, best_f1


def test_max_f1_threshold_equals_brute_force_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(15):
        y = rng.integers(0, 2, 80)
        s = rng.integers(0, 12, 80) / 11.0  # many ties
        if y.min() == y.max():
            continue
        t, f1_value = C.max_f1_threshold(y, s)
        bt, bf = _brute_force_max_f1(y, s)
        assert f1_value == pytest.approx(bf, abs=1e-12)
        assert t == pytest.approx(bt)
        assert C._fast_max_f1(y, s) == pytest.approx(bf, abs=1e-12)
    assert all(np.isnan(C.max_f1_threshold(np.zeros(5), np.arange(5.0))))


def test_validation_and_optimistic_thresholds_hand_worked():
    # validation: y = [0,0,1,1], s = [.1,.4,.35,.8]. F1 at t: .8 → tp1 fn1 → 2/3; .4 → tp1 fp1 fn1 → 1/2;
    # .35 → tp2 fp1 → 4/5; .1 → tp2 fp2 → 2/3. Max 0.8 at t = 0.35.
    thr = C.validation_thresholds(np.array([[0], [0], [1], [1]]), np.array([[0.1], [0.4], [0.35], [0.8]]))
    assert thr.tolist() == [0.35]
    # test: y = [1,0,1,0], s = [.5,.36,.3,.2]. At p ≥ .35: pred [1,1,0,0] → tp1 fp1 fn1 → F1 1/2; ACC 2/4.
    y_test, s_test = np.array([[1], [0], [1], [0]]), np.array([[0.5], [0.36], [0.3], [0.2]])
    rep = C.multilabel_report(y_test, s_test, ["a"], thr, resamples=0, seed=0, threshold_policy="validation")
    assert rep["F1"]["value"] == pytest.approx(0.5) and rep["ACC"]["value"] == pytest.approx(0.5)
    assert rep["F1"]["threshold"] == {"a": 0.35}
    # fixed 0.5: pred [1,0,0,0] → tp1 fn1 → F1 2/3; ACC 3/4.
    rep = C.multilabel_report(y_test, s_test, ["a"], 0.5, resamples=0, seed=0)
    assert rep["F1"]["value"] == pytest.approx(2 / 3) and rep["ACC"]["value"] == pytest.approx(0.75)
    # test-optimistic: on the test set t = .5 → 2/3; .36 → 1/2; .3 → tp2 fp1 → 4/5; .2 → 2/3. Max 0.8 at .3.
    # ACC at p > .3 (strict, MedKLIP): pred [1,1,0,0] → 2/4 (at p ≥ .3 it would be 3/4).
    opt = C.optimistic_report(y_test, s_test, ["a"], resamples=0, seed=0)
    assert opt["F1-optimistic"]["value"] == pytest.approx(0.8)
    assert opt["ACC-optimistic"]["value"] == pytest.approx(0.5)
    assert opt["F1-optimistic"]["threshold"] == {"a": 0.3}
    assert opt["F1-optimistic"]["threshold_policy"] == "test-optimistic"
    assert set(opt) == {"F1-optimistic", "ACC-optimistic"}  # never under the plain names


def test_validation_class_without_positives_is_undefined_not_guessed():
    y_val = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    s_val = np.array([[0.9, 0.2], [0.2, 0.6], [0.7, 0.1], [0.3, 0.4]])
    thr = C.choose_thresholds("validation", 2, y_val=y_val, scores_val=s_val)
    assert thr[0] == 0.7 and np.isnan(thr[1])
    y = np.array([[1, 1], [0, 0], [1, 0]])
    s = np.array([[0.8, 0.9], [0.1, 0.2], [0.75, 0.3]])
    rep = C.multilabel_report(y, s, ["a", "b"], thr, resamples=0, seed=0, threshold_policy="validation")
    assert rep["F1"]["value"] == 1.0  # class a only
    assert rep["F1"]["per_class"] == {"a": 1.0, "b": None}
    assert rep["F1"]["undefined_classes"] == ["b"] and rep["F1"]["threshold"] == {"a": 0.7, "b": None}
    with pytest.raises(Exception, match="validation split's labels"):
        C.choose_thresholds("validation", 2)
    with pytest.raises(Exception, match="unknown threshold policy"):
        C.choose_thresholds("best", 2)
    with pytest.raises(Exception, match="F1-optimistic"):  # never under the plain F1/ACC names
        C.multilabel_report(y, s, ["a", "b"], 0.5, resamples=0, seed=0, threshold_policy="test-optimistic")


def test_optimistic_report_intervals_rechoose_thresholds():
    y, s = _real_sized(seed=9, n=1500, c=3)
    opt = C.optimistic_report(y, s, ["a", "b", "c"], resamples=60, seed=0)
    expected = np.mean([C.max_f1_threshold(y[:, k], s[:, k])[1] for k in range(3)])  # = brute force (above)
    assert opt["F1-optimistic"]["value"] == pytest.approx(expected, abs=1e-12)
    for name in ("F1-optimistic", "ACC-optimistic"):
        low, high = opt[name]["ci95"]
        assert low < opt[name]["value"] < high
    # the optimistic F1 is never below F1 at any fixed threshold on the same set
    fixed = C.multilabel_report(y, s, ["a", "b", "c"], 0.5, resamples=0, seed=0)
    assert opt["F1-optimistic"]["value"] >= fixed["F1"]["value"]


def test_registered_threshold_metrics():
    from bench.interfaces import BenchError, resolve
    from bench.plugins import registry

    reg = registry()
    preds = [{"a": 0.5}, {"a": 0.36}, {"a": 0.3}, {"a": 0.2}]
    refs = [{"a": 1}, {"a": 0}, {"a": 1}, {"a": 0}]
    assert resolve(reg.get("metrics", "F1-optimistic").fn)(preds, refs) == pytest.approx(0.8)
    assert resolve(reg.get("metrics", "ACC-optimistic").fn)(preds, refs) == pytest.approx(0.5)
    val_p = [{"a": 0.1}, {"a": 0.4}, {"a": 0.35}, {"a": 0.8}]
    val_r = [{"a": 0}, {"a": 0}, {"a": 1}, {"a": 1}]
    f1_val = resolve(reg.get("metrics", "F1-val-threshold").fn)
    acc_val = resolve(reg.get("metrics", "ACC-val-threshold").fn)
    assert f1_val(preds, refs, val_predictions=val_p, val_references=val_r) == pytest.approx(0.5)
    assert acc_val(preds, refs, val_predictions=val_p, val_references=val_r) == pytest.approx(0.5)
    with pytest.raises(BenchError, match="validation split"):
        f1_val(preds, refs)
    for name in ("F1-optimistic", "ACC-optimistic"):
        assert "optimistic" in reg.get("metrics", name).description


def test_single_class_f1_is_the_positive_class_f1():
    # y = [0,1,0,0,0], p ≥ .5 → [0,1,1,0,0]: tp 1, fp 1, fn 0 → F1 = 2/3. (A one-column indicator
    # once gave the mean of the negative-class F1 6/7 and this, 0.762.)
    y, s = [0, 1, 0, 0, 0], [0.2, 0.8, 0.6, 0.1, 0.1]
    assert C.f1(s, y) == pytest.approx(2 / 3)
    rep = C.multilabel_report(np.array(y)[:, None], np.array(s)[:, None], ["a"], 0.5, resamples=0, seed=0)
    assert rep["F1"]["value"] == pytest.approx(2 / 3)
    assert C.macro_f1(np.array(y), np.array([0, 1, 1, 0, 0]))[0] == pytest.approx(f1_score(y, [0, 1, 1, 0, 0]))


def test_vectorised_bootstrap_auc_equals_rank_auc_on_each_resample():
    from bench.metrics.classification import bootstrap_macro_auc, rank_auc, weighted_auc
    from bench.metrics.stats import bootstrap_indices, bootstrap_weights

    rng = np.random.default_rng(3)
    n = 60
    y = (rng.random((n, 3)) < [0.1, 0.4, 0.7]).astype(int)
    s = np.round(rng.random((n, 3)), 1)  # many tied scores
    idx = bootstrap_indices(n, 50, seed=11)
    w = bootstrap_weights(n, 50, seed=11)
    for c in range(3):
        fast = weighted_auc(y[:, c], s[:, c], w)
        slow = np.array([rank_auc(y[i, c], s[i, c]) for i in idx])
        assert np.allclose(fast, slow, equal_nan=True)
        assert weighted_auc(y[:, c], s[:, c], np.ones((1, n)))[0] == pytest.approx(roc_auc_score(y[:, c], s[:, c]))
    macro = bootstrap_macro_auc(y, s, 50, seed=11)
    expected = [np.nanmean([rank_auc(y[i, c], s[i, c]) for c in range(3)]) for i in idx]
    assert np.allclose(macro, expected)
    # a resample without positives of the rare class leaves it out of that resample's mean
    assert np.isnan(weighted_auc(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]), np.array([[1.0, 2.0, 0.0]])))[0]


def test_vectorised_decision_and_optimistic_resamples_equal_the_definitions():
    """Each resample of the vectorised F1/ACC functions equals the metric recomputed on the materialised
    resample (scikit-learn's threshold curve for the optimistic ones), ties and rare classes included."""
    rng = np.random.default_rng(5)
    n = 70
    y = (rng.random((n, 3)) < [0.08, 0.4, 0.6]).astype(int)
    s = np.round(rng.random((n, 3)) * 8) / 8 + 0.2 * y  # heavy ties
    decisions = s >= 0.5
    f1_d, acc_d = C.bootstrap_decision_f1_acc(y, decisions, 80, seed=4)
    f1_o, acc_o = C.bootstrap_optimistic_f1_acc(y, s, 80, seed=4)
    for r, idx in enumerate(bootstrap_indices(n, 80, seed=4)):
        yi, si = y[idx], s[idx]
        assert f1_d[r] == pytest.approx(f1_score(yi, decisions[idx].astype(int), average="macro", zero_division=0))
        assert acc_d[r] == pytest.approx((yi == decisions[idx]).mean())
        thr, f1s = C.max_f1_thresholds(yi, si)
        ok = np.isfinite(thr)
        assert f1_o[r] == pytest.approx(np.nanmean(f1s), abs=1e-12)
        assert acc_o[r] == pytest.approx(((si[:, ok] > thr[ok]) == yi[:, ok].astype(bool)).mean(axis=0).mean())
    # a resample where a class has one label value leaves it out; none defined → NaN
    one_class = C.bootstrap_optimistic_f1_acc(np.zeros((5, 1), int), rng.random((5, 1)), 3, seed=0)
    assert np.isnan(one_class[0]).all() and np.isnan(one_class[1]).all()
