"""Classification metrics for zero-shot and fine-tuned classifiers.

Point estimates come from scikit-learn (``roc_auc_score``, ``f1_score``). Bootstrap
resamples use a rank-based AUC (Mann–Whitney U with average ranks for ties), which equals
scikit-learn's value and is fast enough for thousands of resamples.

Conventions (METRICS.md): AUC is the macro mean over classes of ROC-AUC (multi-label: per
class; multi-class: one-vs-rest). F1 and ACC are macro means over classes. The threshold for
binary decisions is part of the protocol and is returned in the metric's metadata.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import f1_score, roc_auc_score

from bench.metrics.stats import bootstrap_ci

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
    threshold: float,
    resamples: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """AUC / F1 / ACC (macro) with bootstrap intervals and per-class values.

    ``y_true`` is 0/1 [N, C]; ``probs`` [N, C]; F1/ACC binarise at ``threshold``.
    """
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(probs, dtype=np.float64)
    pred = (s >= threshold).astype(int)
    auc, auc_c = macro_auc(y, s)
    f1, f1_c = macro_f1(y, pred)
    acc, acc_c = macro_accuracy(y, pred)
    yb, pb = y.astype(bool), pred.astype(bool)
    n = y.shape[0]
    undefined = [c for c, v in zip(classes, auc_c, strict=True) if not np.isfinite(v)]

    def boot_auc(idx: np.ndarray) -> float:
        return _nanmean(_per_class_auc(y[idx], s[idx], fast=True))

    def boot_f1(idx: np.ndarray) -> float:
        return float(_f1_counts(yb[idx], pb[idx]).mean())

    def boot_acc(idx: np.ndarray) -> float:
        return float((yb[idx] == pb[idx]).mean(axis=0).mean())

    meta = {"threshold": threshold, "average": "macro"}
    out = {
        "AUC": _bundle(auc, boot_auc, n, resamples, seed, classes, auc_c, {"average": "macro"}),
        "F1": _bundle(f1, boot_f1, n, resamples, seed, classes, f1_c, meta),
        "ACC": _bundle(acc, boot_acc, n, resamples, seed, classes, acc_c, meta),
    }
    if undefined:
        out["AUC"]["undefined_classes"] = undefined
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

    def boot_auc(idx: np.ndarray) -> float:
        return _nanmean(_per_class_auc(onehot[idx], scores[idx], fast=True))

    return {
        "ACC": _bundle(acc, boot_acc, n, resamples, seed, classes, acc_c, {"average": "micro (accuracy)"},
                       per_class_name="recall"),
        "F1": _bundle(f1, boot_f1, n, resamples, seed, classes, f1_c, {"average": "macro"}),
        "AUC": _bundle(auc, boot_auc, n, resamples, seed, classes, auc_c, {"average": "macro one-vs-rest"}),
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
    low, high = bootstrap_ci(boot, n, resamples, seed)
    return {
        "value": None if not np.isfinite(value) else float(value),
        "ci95": [low, high],
        "n": int(n),
        per_class_name: {c: (float(v) if np.isfinite(v) else None) for c, v in zip(classes, per_class, strict=True)},
        **meta,
    }


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
