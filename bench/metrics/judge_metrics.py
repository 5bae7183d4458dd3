"""CheXprompt aggregates: additive metrics over the judge's per-report error counts.

Each report contributes one row of statistics: judged (1, or 0 for a report the judge failed on — whose row is
otherwise all zeros), significant errors of types A-F, insignificant errors of types A-F, "no significant error"
and "no error at all". Every aggregate is a ratio of column sums over the judged reports, so a judge failure is
left out of numerator and denominator alike (never scored as an error-free report), and bootstrap intervals are
exact (:mod:`bench.metrics.stats`, additive protocol: resampled column sums).

- ``chexprompt_mean_significant_errors``: clinically significant errors per report;
- ``chexprompt_mean_total_errors``: all errors per report;
- ``chexprompt_pct_no_significant_errors``: % reports without a clinically significant error;
- ``chexprompt_pct_error_free``: % reports without any error (LLaVA-Rad's "error-free reports");
- ``chexprompt_<type>`` / ``chexprompt_<type>_significant``: mean errors of one type per report (all / significant).

The metric objects need the judge (``judge=``, a :class:`bench.metrics.judging.Judge`): the scorer passes it to
metrics with ``needs_judge``; without one they are reported unavailable, never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.metrics.judge import ERROR_TYPES, LETTERS, Judgement
from bench.metrics.unavailable import MetricUnavailable

COL_JUDGED = 0
COL_SIG = slice(1, 7)
COL_INSIG = slice(7, 13)
COL_NO_SIG = 13
COL_ERROR_FREE = 14
N_COLUMNS = 15

NO_JUDGE = (
    "no LLM judge configured: pass --judge model=NAME,base_url=http://127.0.0.1:PORT/v1 to `bench run` or `bench score`"
)


def judgement_row(judgement: Judgement | None) -> np.ndarray:
    row = np.zeros(N_COLUMNS)
    if judgement is None:
        return row
    row[COL_JUDGED] = 1.0
    row[COL_SIG] = judgement.significant
    row[COL_INSIG] = judgement.insignificant
    row[COL_NO_SIG] = float(judgement.n_significant == 0)
    row[COL_ERROR_FREE] = float(judgement.n_total == 0)
    return row


def judgement_stats(judgements: Sequence[Judgement | None]) -> np.ndarray:
    """``[n, 15]``: :func:`judgement_row` of each report."""
    if not judgements:
        return np.zeros((0, N_COLUMNS))
    return np.stack([judgement_row(j) for j in judgements])


class ChexpromptMetric:
    """One aggregate: ``scale`` × (sum of the chosen columns) / (reports judged). All share one set of
    judgements (``stats_key``), so the judge is asked once per report whatever the number of aggregates."""

    needs_judge = True
    stats_key = "chexprompt"

    def __init__(self, name: str, columns: slice | int | tuple[int, ...], scale: float = 1.0) -> None:
        self.name = name
        self.columns = columns
        self.scale = scale

    def stats(self, predictions: Sequence[Any], references: Sequence[Any], judge: Any = None) -> np.ndarray:
        if judge is None:
            raise MetricUnavailable(NO_JUDGE, self.name)
        for what, values in (("prediction", predictions), ("reference", references)):
            bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
            if bad is not None:
                raise TypeError(f"record {bad + 1}: the {what} is {type(values[bad]).__name__}, not a report text")
        return judgement_stats(judge.judge_pairs(list(references), list(predictions)))

    def aggregate(self, totals: np.ndarray, n: int) -> np.ndarray:
        totals = np.asarray(totals, dtype=np.float64)
        judged = totals[..., COL_JUDGED]
        picked = totals[..., self.columns]
        numerator = picked.sum(axis=-1) if picked.ndim > judged.ndim else picked
        safe = np.where(judged > 0, judged, 1.0)
        return np.where(judged > 0, self.scale * numerator / safe, np.nan)

    def summary(self, stats: np.ndarray) -> dict[str, int]:
        """Recorded beside the value: ``n`` = reports judged, ``n_judge_failed`` = reports left out."""
        stats = np.asarray(stats)
        judged = int(stats[:, COL_JUDGED].sum()) if len(stats) else 0
        return {"n": judged, "n_judge_failed": len(stats) - judged}

    def __call__(self, predictions: Sequence[Any], references: Sequence[Any], judge: Any = None) -> float:
        stats = self.stats(predictions, references, judge=judge)
        return float(self.aggregate(stats.sum(axis=0), len(stats)))

    def __repr__(self) -> str:
        return f"ChexpromptMetric({self.name!r})"


def _type_metric(letter: str, significant_only: bool) -> ChexpromptMetric:
    i = LETTERS.index(letter)
    key = ERROR_TYPES[i].key
    if significant_only:
        return ChexpromptMetric(f"chexprompt_{key}_significant", COL_SIG.start + i)
    return ChexpromptMetric(f"chexprompt_{key}", (COL_SIG.start + i, COL_INSIG.start + i))


mean_significant_errors = ChexpromptMetric("chexprompt_mean_significant_errors", COL_SIG)
mean_total_errors = ChexpromptMetric("chexprompt_mean_total_errors", tuple(range(COL_SIG.start, COL_INSIG.stop)))
pct_no_significant_errors = ChexpromptMetric("chexprompt_pct_no_significant_errors", COL_NO_SIG, 100.0)
pct_error_free = ChexpromptMetric("chexprompt_pct_error_free", COL_ERROR_FREE, 100.0)
false_finding = _type_metric("A", False)
false_finding_significant = _type_metric("A", True)
omitted_finding = _type_metric("B", False)
omitted_finding_significant = _type_metric("B", True)
wrong_location = _type_metric("C", False)
wrong_location_significant = _type_metric("C", True)
wrong_severity = _type_metric("D", False)
wrong_severity_significant = _type_metric("D", True)
false_comparison = _type_metric("E", False)
false_comparison_significant = _type_metric("E", True)
omitted_comparison = _type_metric("F", False)
omitted_comparison_significant = _type_metric("F", True)

__all__ = ["NO_JUDGE", "ChexpromptMetric", "judgement_row", "judgement_stats"]
