"""Classification metrics for zero-shot and fine-tuned classifiers.

Point estimates come from scikit-learn (``roc_auc_score``, ``f1_score``). Bootstrap
resamples use a rank-based AUC (Mann–Whitney U with average ranks for ties), which equals
scikit-learn's value and is fast enough for thousands of resamples.

Conventions (METRICS.md): AUC is the macro mean over classes of ROC-AUC (multi-label: per
class; multi-class: one-vs-rest). F1 and ACC are macro means over classes. The threshold for
binary decisions is part of the protocol and is returned in the metric's metadata.

Threshold policies (``THRESHOLD_POLICIES``), always recorded with the F1/ACC they produce:

- ``fixed``: one threshold (0.5 by default) on the probabilities; positive ⇔ p ≥ t.
- ``validation``: per class, the threshold that maximises F1 on the *validation* split's scores
  (:func:`validation_thresholds`), then applied to the test scores (positive ⇔ p ≥ t).
- ``test-optimistic``: MAVL/MedKLIP — per class, the max-F1 threshold chosen on the *test* set
  itself; F1 is that maximum and ACC is computed at p > t (strictly greater, as their code
  does). It overstates performance and is offered only under names containing "optimistic"
  (:func:`optimistic_report`, ``F1-optimistic``, ``ACC-optimistic``).

Max-F1 threshold rule (both ``validation`` and ``test-optimistic``): the candidates are the
distinct scores (scikit-learn's ``precision_recall_curve``); F1 at t uses p ≥ t; among tied
maxima the lowest threshold wins (``np.argmax`` over increasing thresholds, as MedKLIP). A class
whose labels are all equal has no max-F1 threshold: its threshold, F1 and ACC are undefined
(None, listed under ``undefined_classes``) and left out of the macro mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

from bench.interfaces import BenchError
from bench.metrics.stats import bootstrap_ci, iter_bootstrap_weights, percentile_interval

THRESHOLD_POLICIES = ("fixed", "validation", "test-optimistic")

# --------------------------------------------------------------------------- score helpers


def chexzero_probability(sim_pos: np.ndarray, sim_neg: np.ndarray) -> np.ndarray:
    """CheXzero: p = e^{s+} / (e^{s+} + e^{s-}) with raw cosine similarities."""
    sim_pos = np.asarray(sim_pos, dtype=np.float64)
    sim_neg = np.asarray(sim_neg, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(sim_neg - sim_pos))


def zscore_columns(scores: np.ndarray) -> np.ndarray:
    """GLoRIA: standardise each class column across images before the argmax."""
    scores = np.asarray(scores, dtype=np.float64)
    mean = scores.mean(axis=0, keepdims=True)
    std = scores.std(axis=0, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


# --------------------------------------------------------------------------- labels

UNCERTAIN_VALUE = {"positive": 1.0, "negative": 0.0, "exclude": np.nan}


def binary_label_matrix(
    references: Sequence[Mapping[str, Any]], classes: Sequence[str], uncertain: str, missing: str
) -> np.ndarray:
    """``[N, C]`` 0/1 labels from ``{class: 1 | 0 | -1 | None}`` references; uncertain (-1) becomes
    1, 0 or NaN (excluded) by ``uncertain``; not mentioned (None) becomes 0 or NaN by ``missing``."""
    unmentioned = 0.0 if missing == "negative" else np.nan
    y = np.empty((len(references), len(classes)))
    for i, ref in enumerate(references):
        for j, c in enumerate(classes):
            v = ref.get(c)
            if v is None:
                y[i, j] = unmentioned
            elif v == -1:
                y[i, j] = UNCERTAIN_VALUE[uncertain]
            else:
                y[i, j] = float(v == 1)
    return y


# --------------------------------------------------------------------------- AUC


def rank_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC-AUC via Mann–Whitney U; NaN when only one class is present."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def weighted_auc(y_true: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of one class under each row of sample multiplicities ``weights`` ``[R, N]``.

    A bootstrap resample is the data with each sample repeated ``weights[r, i]`` times, so its
    Mann–Whitney AUC is Σ_pos w_i · (weight of negatives scoring lower + ½ weight of tied
    negatives) / (W_pos · W_neg). Scores are sorted once; every resample is a weighted pass over
    the tie groups (``[R]`` values, NaN where a resample lacks positives or negatives). Equal to
    :func:`rank_auc` on the materialised resample.
    """
    y = np.asarray(y_true).astype(bool)
    order = np.argsort(np.asarray(score, dtype=np.float64), kind="mergesort")
    ss = np.asarray(score, dtype=np.float64)[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    w = np.asarray(weights, dtype=np.float64)[:, order]
    yy = y[order]
    pos = np.add.reduceat(w * yy, starts, axis=1)
    neg = np.add.reduceat(w * ~yy, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    p_tot, n_tot = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((p_tot > 0) & (n_tot > 0), num / (p_tot * n_tot), np.nan)


def bootstrap_macro_auc(y_true: np.ndarray, scores: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Macro AUC on each bootstrap resample of :func:`bench.metrics.stats.bootstrap_indices`
    (same resamples), vectorised with :func:`weighted_auc`; classes undefined on a resample are
    left out of its mean, as in :func:`macro_auc`."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    out = []
    for w in iter_bootstrap_weights(y.shape[0], resamples, seed):
        per_class = np.stack([weighted_auc(y[:, c], s[:, c], w) for c in range(y.shape[1])], axis=1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out.append(np.nanmean(per_class, axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def _per_class_auc(y: np.ndarray, s: np.ndarray, fast: bool) -> np.ndarray:
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        yc = y[:, c]
        if yc.min() == yc.max():
            continue
        out[c] = rank_auc(yc, s[:, c]) if fast else roc_auc_score(yc, s[:, c])
    return out


def _nanmean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def macro_auc(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """Multi-label macro AUC: (macro, per-class). Classes with one label value are NaN and
    left out of the mean (the caller reports them)."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    per_class = _per_class_auc(y, s, fast=False)
    return _nanmean(per_class), per_class


def multiclass_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """One-vs-rest macro AUC for single-label multi-class data."""
    labels = np.asarray(labels, dtype=int)
    onehot = np.eye(scores.shape[1], dtype=int)[labels]
    return macro_auc(onehot, scores)


# --------------------------------------------------------------------------- F1 / ACC


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, np.ndarray]:
    """Multi-label macro F1 over classes (binary per class), zero_division=0."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    if y.shape[1] == 1:
        # scikit-learn reads a one-column indicator as a binary target and, with average=None,
        # returns the F1 of both the negative and the positive class: score the positive class only.
        per_class = np.array([f1_score(y[:, 0], p[:, 0], average="binary", zero_division=0)])
    else:
        per_class = f1_score(y, p, average=None, zero_division=0)
    return float(per_class.mean()), np.asarray(per_class, dtype=float)


def macro_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, np.ndarray]:
    """Multi-label macro accuracy: mean over classes of the per-class accuracy."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    per_class = (y == p).mean(axis=0)
    return float(per_class.mean()), per_class.astype(float)


def _f1_counts(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    tp = (y & p).sum(axis=0)
    fp = (~y & p).sum(axis=0)
    fn = (y & ~p).sum(axis=0)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


# --------------------------------------------------------------------------- bundles with CIs


def multilabel_report(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    threshold: float | Sequence[float] | np.ndarray,
    resamples: int,
    seed: int,
    threshold_policy: str = "fixed",
) -> dict[str, dict[str, Any]]:
    """AUC / F1 / ACC (macro) with bootstrap intervals and per-class values.

    ``y_true`` is 0/1 [N, C]; ``probs`` [N, C]; F1/ACC binarise at p ≥ ``threshold`` — one number,
    or one per class (e.g. from :func:`validation_thresholds`; a NaN threshold makes that class's
    F1/ACC undefined). ``threshold_policy`` names where the threshold came from and is recorded.
    """
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(probs, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    _check_policy(threshold_policy)
    if threshold_policy == "test-optimistic":
        raise BenchError(
            "test-set thresholds are reported only as F1-optimistic/ACC-optimistic: use optimistic_report()"
        )
    thr = _class_thresholds(threshold, y.shape[1])
    usable = np.isfinite(thr)
    pred = s >= np.where(usable, thr, np.inf)[None, :]
    auc, auc_c = macro_auc(y, s)
    f1_c = np.full(y.shape[1], np.nan)
    acc_c = np.full(y.shape[1], np.nan)
    if usable.any():
        f1_c[usable] = macro_f1(y[:, usable], pred[:, usable].astype(int))[1]
        acc_c[usable] = macro_accuracy(y[:, usable], pred[:, usable].astype(int))[1]
    yb, pb = y[:, usable].astype(bool), pred[:, usable]
    n = y.shape[0]
    undefined = [c for c, v in zip(classes, auc_c, strict=True) if not np.isfinite(v)]

    def boot_f1(idx: np.ndarray) -> float:
        return float(_f1_counts(yb[idx], pb[idx]).mean()) if pb.shape[1] else float("nan")

    def boot_acc(idx: np.ndarray) -> float:
        return float((yb[idx] == pb[idx]).mean(axis=0).mean()) if pb.shape[1] else float("nan")

    meta: dict[str, Any] = {
        "threshold": _threshold_record(threshold, thr, classes),
        "threshold_policy": threshold_policy,
        "average": "macro",
    }
    out = {
        "AUC": _bundle(
            auc, bootstrap_macro_auc(y, s, resamples, seed), n, resamples, seed, classes, auc_c, {"average": "macro"}
        ),
        "F1": _bundle(_nanmean(f1_c), boot_f1, n, resamples, seed, classes, f1_c, meta),
        "ACC": _bundle(_nanmean(acc_c), boot_acc, n, resamples, seed, classes, acc_c, meta),
    }
    if undefined:
        out["AUC"]["undefined_classes"] = undefined
    no_threshold = [c for c, ok in zip(classes, usable, strict=True) if not ok]
    if no_threshold:
        out["F1"]["undefined_classes"] = no_threshold
        out["ACC"]["undefined_classes"] = list(no_threshold)
    return out


def multiclass_report(
    labels: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    resamples: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """ACC (accuracy of the argmax), macro F1 and one-vs-rest macro AUC, with intervals."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    k = scores.shape[1]
    pred = scores.argmax(axis=1)
    onehot = np.eye(k, dtype=int)[labels]
    acc = float((pred == labels).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1_c = f1_score(labels, pred, labels=list(range(k)), average=None, zero_division=0)
    f1 = float(np.mean(f1_c))
    auc, auc_c = macro_auc(onehot, scores)
    pred_onehot = np.eye(k, dtype=bool)[pred]
    n = labels.size
    acc_c = np.array([(pred[labels == c] == c).mean() if (labels == c).any() else np.nan for c in range(k)])

    def boot_acc(idx: np.ndarray) -> float:
        return float((pred[idx] == labels[idx]).mean())

    def boot_f1(idx: np.ndarray) -> float:
        return float(_f1_counts(onehot[idx].astype(bool), pred_onehot[idx]).mean())

    return {
        "ACC": _bundle(
            acc, boot_acc, n, resamples, seed, classes, acc_c, {"average": "micro (accuracy)"}, per_class_name="recall"
        ),
        "F1": _bundle(f1, boot_f1, n, resamples, seed, classes, f1_c, {"average": "macro"}),
        "AUC": _bundle(
            auc,
            bootstrap_macro_auc(onehot, scores, resamples, seed),
            n,
            resamples,
            seed,
            classes,
            auc_c,
            {"average": "macro one-vs-rest"},
        ),
    }


def _bundle(
    value: float,
    boot: Any,
    n: int,
    resamples: int,
    seed: int,
    classes: Sequence[str],
    per_class: np.ndarray,
    meta: Mapping[str, Any],
    per_class_name: str = "per_class",
) -> dict[str, Any]:
    if callable(boot):
        low, high = bootstrap_ci(boot, n, resamples, seed)
    elif resamples <= 0 or n == 0:
        low, high = None, None
    else:  # the statistic's values on the resamples, computed vectorised by the caller
        low, high = percentile_interval(np.asarray(boot, dtype=float), resamples)
    return {
        "value": None if not np.isfinite(value) else float(value),
        "ci95": [low, high],
        "n": int(n),
        per_class_name: {c: (float(v) if np.isfinite(v) else None) for c, v in zip(classes, per_class, strict=True)},
        **meta,
    }


# --------------------------------------------------------------------------- threshold policies


def _check_policy(policy: str) -> None:
    if policy not in THRESHOLD_POLICIES:
        raise BenchError(f"unknown threshold policy {policy!r}; expected one of {', '.join(THRESHOLD_POLICIES)}")


def _class_thresholds(threshold: float | Sequence[float] | np.ndarray, n_classes: int) -> np.ndarray:
    thr = np.asarray(threshold, dtype=np.float64)
    if thr.ndim == 0:
        if not np.isfinite(thr):
            raise BenchError(f"threshold {float(thr)} is not a finite number")
        return np.full(n_classes, float(thr))
    if thr.shape != (n_classes,):
        raise BenchError(f"{thr.size} thresholds for {n_classes} classes; expected one per class or one in all")
    return thr


def _threshold_record(
    threshold: float | Sequence[float] | np.ndarray, thr: np.ndarray, classes: Sequence[str]
) -> float | dict[str, float | None]:
    if np.ndim(threshold) == 0:
        return float(thr[0]) if thr.size else float(np.asarray(threshold))
    return {c: (float(t) if np.isfinite(t) else None) for c, t in zip(classes, thr, strict=True)}


def max_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the max-F1 threshold for one class (positive ⇔ score ≥ threshold).

    MedKLIP/MAVL's rule on scikit-learn's ``precision_recall_curve``: F1 = 2PR/(P+R) (0 where
    P+R = 0), the first maximum over increasing thresholds. (NaN, NaN) when the labels are all
    equal, where the threshold is not defined.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if y.size == 0 or y.min() == y.max():
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(y, s)
    denom = precision + recall
    f1s = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom != 0)
    best = int(np.argmax(f1s))
    return float(thresholds[best]), float(f1s[best])


def max_f1_thresholds(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class [C]: max-F1 thresholds and the F1 they reach (NaN for one-label classes)."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    pairs = [max_f1_threshold(y[:, c], s[:, c]) for c in range(y.shape[1])]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def validation_thresholds(y_val: np.ndarray, scores_val: np.ndarray) -> np.ndarray:
    """Per-class thresholds chosen on the validation split (max F1 there), to apply to the test split."""
    return max_f1_thresholds(y_val, scores_val)[0]


def choose_thresholds(
    policy: str,
    n_classes: int,
    fixed: float = 0.5,
    y_val: np.ndarray | None = None,
    scores_val: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class thresholds for the ``fixed`` or ``validation`` policy (``test-optimistic`` picks
    its thresholds on the test set: use :func:`optimistic_report`)."""
    _check_policy(policy)
    if policy == "fixed":
        return np.full(n_classes, float(fixed))
    if policy == "validation":
        if y_val is None or scores_val is None:
            raise BenchError("threshold policy 'validation' needs the validation split's labels and scores")
        thr = validation_thresholds(y_val, scores_val)
        if thr.shape != (n_classes,):
            raise BenchError(f"validation scores have {thr.size} classes; expected {n_classes}")
        return thr
    raise BenchError("threshold policy 'test-optimistic' chooses thresholds on the test set: use optimistic_report()")


def _fast_max_f1(y: np.ndarray, s: np.ndarray) -> float:
    """Max over thresholds of F1 for one class (same value as :func:`max_f1_threshold`), by sorting."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # last index of each distinct score
    tp = np.cumsum(y_sorted)[last]
    predicted = (np.arange(y.size) + 1)[last]
    return float((2 * tp / (predicted + n_pos)).max())


def _acc_above(y: np.ndarray, s: np.ndarray, thr: np.ndarray) -> np.ndarray:
    return ((s > thr[None, :]) == y.astype(bool)).mean(axis=0)


def optimistic_report(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], resamples: int, seed: int
) -> dict[str, dict[str, Any]]:
    """MAVL/MedKLIP's test-set max-F1 protocol, under names that say so: ``F1-optimistic`` (macro
    of the per-class maximum F1 over thresholds on this set) and ``ACC-optimistic`` (macro
    accuracy at p > that threshold). The thresholds are recorded. Each bootstrap resample
    re-chooses its thresholds, as the protocol would on that sample."""
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(probs, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    thr, f1_c = max_f1_thresholds(y, s)
    ok = np.isfinite(thr)
    acc_c = np.full(y.shape[1], np.nan)
    acc_c[ok] = _acc_above(y[:, ok], s[:, ok], thr[ok])
    n = y.shape[0]

    def boot_f1(idx: np.ndarray) -> float:
        return _nanmean(np.array([_fast_max_f1(y[idx, c], s[idx, c]) for c in range(y.shape[1])]))

    def boot_acc(idx: np.ndarray) -> float:
        t, _ = max_f1_thresholds(y[idx], s[idx])
        good = np.isfinite(t)
        return float(_acc_above(y[idx][:, good], s[idx][:, good], t[good]).mean()) if good.any() else float("nan")

    meta: dict[str, Any] = {
        "threshold": {c: (float(t) if np.isfinite(t) else None) for c, t in zip(classes, thr, strict=True)},
        "threshold_policy": "test-optimistic",
        "average": "macro",
        "note": "thresholds chosen on the evaluated set itself (MAVL/MedKLIP); optimistic",
    }
    out = {
        "F1-optimistic": _bundle(_nanmean(f1_c), boot_f1, n, resamples, seed, classes, f1_c, meta),
        "ACC-optimistic": _bundle(
            _nanmean(acc_c), boot_acc, n, resamples, seed, classes, acc_c, {**meta, "decision": "p > threshold"}
        ),
    }
    undefined = [c for c, good in zip(classes, ok, strict=True) if not good]
    if undefined:
        for bundle in out.values():
            bundle["undefined_classes"] = list(undefined)
    return out


# --------------------------------------------------------------------------- vectorised resamples


def bootstrap_decision_f1_acc(
    y_true: np.ndarray, y_pred: np.ndarray, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Macro F1 and macro accuracy of fixed 0/1 decisions ``y_pred`` ``[N, C]`` on each resample of
    :func:`bench.metrics.stats.bootstrap_indices` (``[resamples]`` each): the statistics of
    :func:`multilabel_report`'s F1/ACC intervals, from weighted confusion counts instead of one call per
    resample."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    n = y.shape[0]
    if resamples <= 0 or n == 0 or y.shape[1] == 0:
        return np.full(max(resamples, 0), np.nan), np.full(max(resamples, 0), np.nan)
    cells = np.concatenate([y & p, ~y & p, y & ~p, y == p], axis=1).astype(np.float64)
    f1s, accs = [], []
    for w in iter_bootstrap_weights(n, resamples, seed):
        tp, fp, fn, same = np.split(w @ cells, 4, axis=1)
        denom = 2 * tp + fp + fn
        f1s.append(np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0).mean(axis=1))
        accs.append((same / n).mean(axis=1))
    return np.concatenate(f1s), np.concatenate(accs)


def _weighted_max_f1(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For one class and resample multiplicities ``w`` ``[r, N]``: the max-F1 over thresholds and the
    accuracy at p > the max-F1 threshold (lowest threshold among tied maxima), each ``[r]``, NaN where a
    resample has one label value. Same arithmetic as :func:`max_f1_threshold` on the materialised resample
    (precision = TP/PP, recall = TP/P, F1 = 2PR/(P+R)); thresholds no drawn sample holds are skipped."""
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    wo = w[:, order]
    g_all = np.add.reduceat(wo, starts, axis=1)  # drawn samples per distinct score, descending
    g_pos = np.add.reduceat(wo * yy, starts, axis=1)
    tp, pp = np.cumsum(g_pos, axis=1), np.cumsum(g_all, axis=1)
    pos, total = tp[:, -1:], pp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pp > 0, tp / pp, 0.0)
        recall = tp / pos
        denom = precision + recall
        f1 = np.where(denom != 0, 2 * precision * recall / denom, 0.0)
    f1 = np.where(g_all > 0, f1, -np.inf)
    best = f1.max(axis=1)
    # the lowest threshold among the maxima = the last maximum in descending order
    k = f1.shape[1] - 1 - np.argmax((f1 == best[:, None])[:, ::-1], axis=1)
    rows = np.arange(f1.shape[0])
    tp_above = tp[rows, k] - g_pos[rows, k]  # p > t: the groups before the chosen one
    pp_above = pp[rows, k] - g_all[rows, k]
    neg = total[:, 0] - pos[:, 0]
    acc = (tp_above + neg - (pp_above - tp_above)) / total[:, 0]
    defined = (pos[:, 0] > 0) & (neg > 0)
    return np.where(defined, best, np.nan), np.where(defined, acc, np.nan)


def bootstrap_optimistic_f1_acc(
    y_true: np.ndarray, scores: np.ndarray, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``F1-optimistic`` and ``ACC-optimistic`` (:func:`optimistic_report`) on each resample of
    :func:`bench.metrics.stats.bootstrap_indices`, each resample choosing its own thresholds as the
    protocol would; classes undefined on a resample are left out of its macro mean."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    n = y.shape[0]
    if resamples <= 0 or n == 0:
        return np.full(max(resamples, 0), np.nan), np.full(max(resamples, 0), np.nan)
    f1s, accs = [], []
    for w in iter_bootstrap_weights(n, resamples, seed):
        pairs = [_weighted_max_f1(y[:, c], s[:, c], w) for c in range(y.shape[1])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            f1s.append(np.nanmean(np.stack([f for f, _ in pairs], axis=1), axis=1))
            accs.append(np.nanmean(np.stack([a for _, a in pairs], axis=1), axis=1))
    return np.concatenate(f1s), np.concatenate(accs)


# --------------------------------------------------------------------------- generic records


def _matrices(predictions: Sequence[Any], references: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Records whose prediction/reference are scalars or {class: value} dicts → matrices.

    References must be 0/1 (a missing class is NaN and left out). Other values, such as -1 for
    uncertain, need a policy that only a task knows: they are refused, never guessed.
    """
    if predictions and isinstance(predictions[0], Mapping):
        classes = sorted({c for ref in references for c in ref})
        y = np.array([[ref.get(c) for c in classes] for ref in references], dtype=float)
        s = np.array([[float(pred.get(c, np.nan)) for c in classes] for pred in predictions], dtype=float)
    else:
        classes = ["positive"]
        y = np.asarray(references, dtype=float)[:, None]
        s = np.asarray(predictions, dtype=float)[:, None]
    bad = sorted({float(v) for v in y[np.isfinite(y)]} - {0.0, 1.0})
    if bad:
        raise ValueError(
            f"reference labels must be 0 or 1, found {bad}; uncertain labels (-1) need a task's policy: "
            "score with --task instead"
        )
    return y, s, classes


def auc(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Macro ROC-AUC from per-sample scores (scalar or {class: score})."""
    y, s, _ = _matrices(predictions, references)
    per_class = []
    for c in range(y.shape[1]):
        ok = np.isfinite(y[:, c]) & np.isfinite(s[:, c])
        if ok.any() and len(set(y[ok, c])) == 2:
            per_class.append(roc_auc_score(y[ok, c], s[ok, c]))
    return float(np.mean(per_class)) if per_class else float("nan")


def f1(predictions: Sequence[Any], references: Sequence[Any], threshold: float = 0.5) -> float:
    """Macro F1 after binarising scores at ``threshold``."""
    y, s, _ = _matrices(predictions, references)
    ok = np.isfinite(y).all(axis=1)
    return macro_f1(y[ok].astype(int), (s[ok] >= threshold).astype(int))[0]


def accuracy(predictions: Sequence[Any], references: Sequence[Any], threshold: float = 0.5) -> float:
    """Macro accuracy after binarising scores at ``threshold``."""
    y, s, _ = _matrices(predictions, references)
    ok = np.isfinite(y).all(axis=1)
    return macro_accuracy(y[ok].astype(int), (s[ok] >= threshold).astype(int))[0]


def _per_class_columns(predictions: Sequence[Any], references: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, scores) per class, rows with a missing label or score left out."""
    if len(predictions) != len(references):
        raise BenchError(f"{len(predictions)} predictions but {len(references)} references; expected one each")
    y, s, _ = _matrices(predictions, references)
    cols = []
    for c in range(y.shape[1]):
        ok = np.isfinite(y[:, c]) & np.isfinite(s[:, c])
        cols.append((y[ok, c].astype(int), s[ok, c]))
    return cols


def f1_optimistic(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Macro over classes of the maximum F1 over thresholds chosen on this same set (MAVL/MedKLIP)."""
    return _nanmean(np.array([max_f1_threshold(y, s)[1] for y, s in _per_class_columns(predictions, references)]))


def accuracy_optimistic(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Macro accuracy at p > the max-F1 threshold chosen on this same set (MAVL/MedKLIP)."""
    accs = []
    for y, s in _per_class_columns(predictions, references):
        t = max_f1_threshold(y, s)[0]
        accs.append(float(((s > t) == y.astype(bool)).mean()) if np.isfinite(t) else float("nan"))
    return _nanmean(np.array(accs))


def _validation_columns(
    predictions: Sequence[Any],
    references: Sequence[Any],
    val_predictions: Sequence[Any] | None,
    val_references: Sequence[Any] | None,
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    if val_predictions is None or val_references is None:
        raise BenchError(
            "this metric chooses its thresholds on the validation split: pass val_predictions and "
            "val_references (or score with --task, whose protocol has them)"
        )
    _, _, classes = _matrices(predictions, references)
    _, _, val_classes = _matrices(val_predictions, val_references)
    if classes != val_classes:
        raise BenchError(f"validation classes {val_classes} differ from test classes {classes}")
    test = _per_class_columns(predictions, references)
    val = _per_class_columns(val_predictions, val_references)
    return [(y, s, max_f1_threshold(yv, sv)[0]) for (y, s), (yv, sv) in zip(test, val, strict=True)]


def f1_validation_threshold(
    predictions: Sequence[Any],
    references: Sequence[Any],
    val_predictions: Sequence[Any] | None = None,
    val_references: Sequence[Any] | None = None,
) -> float:
    """Macro F1 on the test set at per-class thresholds that maximise F1 on the validation set."""
    cols = _validation_columns(predictions, references, val_predictions, val_references)
    values = [
        float(f1_score(y, (s >= t).astype(int), zero_division=0)) if np.isfinite(t) else float("nan")
        for y, s, t in cols
    ]
    return _nanmean(np.array(values))


def accuracy_validation_threshold(
    predictions: Sequence[Any],
    references: Sequence[Any],
    val_predictions: Sequence[Any] | None = None,
    val_references: Sequence[Any] | None = None,
) -> float:
    """Macro accuracy on the test set at per-class thresholds that maximise F1 on the validation set."""
    cols = _validation_columns(predictions, references, val_predictions, val_references)
    values = [float(((s >= t) == y.astype(bool)).mean()) if np.isfinite(t) else float("nan") for y, s, t in cols]
    return _nanmean(np.array(values))
