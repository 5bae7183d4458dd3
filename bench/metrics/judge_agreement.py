"""Agreement of an LLM judge's error counts with radiologists' (ReXVal), LLaVA-Rad's validation of CheXprompt.

``predictions``: the judge's counts of each pair, ``{"significant": [A..F], "insignificant": [A..F]}``;
``references``: the raters' counts of the same pair, ``{"significant_errors": {rater: n}, "total_errors":
{rater: n}}`` (what :mod:`bench.data.rexval` reads; every pair has the same raters). Pairs the judge failed on are
dropped by the caller (and counted there).

- ``kendall_tau_b_total`` / ``kendall_tau_b_significant``: Kendall's τ-b (``scipy.stats.kendalltau``, variant b,
  ties handled) between the judge's total (significant) errors and the mean over the raters;
- leave-one-rater-out (LLaVA-Rad Fig. 4A): for each rater r, the mean of the other raters m₋ᵣ per pair;
  ``mad_rater_vs_raters`` averages over raters the mean |countᵣ − m₋ᵣ|, ``mad_judge_vs_raters`` the mean
  |judge − m₋ᵣ| (total errors). :func:`leave_one_rater_out` gives each rater's pair of values and the paired
  t-test between them (``scipy.stats.ttest_rel``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

KINDS = {"total": "total_errors", "significant": "significant_errors"}


def judge_counts(predictions: Sequence[Any], kind: str = "total") -> np.ndarray:
    """The judge's total (or significant) error count of each pair."""
    out = []
    for i, p in enumerate(predictions):
        if not isinstance(p, Mapping) or "significant" not in p or "insignificant" not in p:
            raise ValueError(f"prediction {i + 1} is not the judge's counts (significant, insignificant)")
        sig = sum(int(x) for x in p["significant"])
        out.append(sig if kind == "significant" else sig + sum(int(x) for x in p["insignificant"]))
    return np.asarray(out, dtype=np.float64)


def rater_counts(references: Sequence[Any], kind: str = "total") -> tuple[list[str], np.ndarray]:
    """(raters, ``[pairs, raters]`` total or significant error counts)."""
    field = KINDS[kind]
    raters: list[str] | None = None
    rows = []
    for i, ref in enumerate(references):
        counts = ref.get(field) if isinstance(ref, Mapping) else None
        if not isinstance(counts, Mapping) or not counts:
            raise ValueError(f"reference {i + 1} has no per-rater {field!r} (expected ReXVal rater counts)")
        names = sorted(counts, key=str)
        if raters is None:
            raters = names
        elif names != raters:
            raise ValueError(f"reference {i + 1} has raters {names}, the first has {raters}")
        rows.append([float(counts[r]) for r in names])
    return raters or [], np.asarray(rows, dtype=np.float64).reshape(len(rows), len(raters or []))


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if len(x) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns nan
        return float(kendalltau(x, y, variant="b").statistic)


def kendall_tau_b_total(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    _, raters = rater_counts(references, "total")
    return kendall_tau_b(judge_counts(predictions, "total"), raters.mean(axis=1))


def kendall_tau_b_significant(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    _, raters = rater_counts(references, "significant")
    return kendall_tau_b(judge_counts(predictions, "significant"), raters.mean(axis=1))


def _differences(predictions: Sequence[Any], references: Sequence[Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(raters, |left-out rater − left-in mean| and |judge − left-in mean|, both ``[raters, pairs]``)."""
    names, counts = rater_counts(references, "total")
    if len(names) < 2:
        raise ValueError("leave-one-rater-out needs at least two raters")
    judge = judge_counts(predictions, "total")
    d_rater, d_judge = [], []
    for r in range(len(names)):
        left_in = np.delete(counts, r, axis=1).mean(axis=1)
        d_rater.append(np.abs(counts[:, r] - left_in))
        d_judge.append(np.abs(judge - left_in))
    return names, np.asarray(d_rater), np.asarray(d_judge)


def leave_one_rater_out(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Per left-out rater: ``mad_rater`` and ``mad_judge`` (mean absolute difference of the left-out rater and of
    the judge from the left-in raters' mean, total errors) and the paired t-test ``t``, ``p`` between them."""
    from scipy.stats import ttest_rel

    names, d_rater, d_judge = _differences(predictions, references)
    out: dict[str, dict[str, float]] = {}
    for r, name in enumerate(names):
        t = p = float("nan")
        if d_rater.shape[1] > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # identical differences: t and p are nan
                test = ttest_rel(d_rater[r], d_judge[r])
            t, p = float(test.statistic), float(test.pvalue)
        out[name] = {"mad_rater": float(d_rater[r].mean()), "mad_judge": float(d_judge[r].mean()), "t": t, "p": p}
    return out


def mad_judge_vs_raters(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    return float(_differences(predictions, references)[2].mean())


def mad_rater_vs_raters(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    return float(_differences(predictions, references)[1].mean())


__all__ = [
    "judge_counts",
    "kendall_tau_b",
    "kendall_tau_b_significant",
    "kendall_tau_b_total",
    "leave_one_rater_out",
    "mad_judge_vs_raters",
    "mad_rater_vs_raters",
    "rater_counts",
]
