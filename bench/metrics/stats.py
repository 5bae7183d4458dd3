"""Bootstrap confidence intervals over samples, and the paired bootstrap test of two runs.

Percentile bootstrap (LLaVA-Rad used 500 resamples): resample sample indices with replacement, recompute the
statistic on each resample, take the 2.5th/97.5th percentiles. Resamples on which the statistic is undefined
(e.g. an AUC with one class) are skipped and counted.

Corpus metrics (BLEU, CIDEr, METEOR, …) are not recomputed from text on each resample. They follow the
*additive* protocol (:class:`AdditiveMetric`): the metric provides per-sample sufficient statistics
(``stats(predictions, references) -> [n, k]``) and a function of their column sums
(``aggregate(totals, n)``, vectorised over leading axes). A bootstrap resample is then a vector of
multiplicities ``w`` (how often each sample was drawn) and its value is ``aggregate(w @ stats, n)``: exact
for the corpus metric, and all resamples cost one matrix product. The same index draws as
:func:`bootstrap_indices` are used, so a given seed gives the same resamples everywhere.

What each statistic holds fixed is documented by its metric (e.g. CIDEr-D keeps the document frequencies
of the full reference corpus; BLEU keeps nothing fixed — its clipped counts and lengths are summed exactly
as over a real corpus).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bench.interfaces import BenchError
from bench.metrics.unavailable import MetricUnavailable

__all__ = [
    "AdditiveMetric",
    "DefinedMean",
    "MetricUnavailable",
    "PairedComparison",
    "additive_bootstrap_ci",
    "additive_resamples",
    "additive_value",
    "align_by_id",
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_weights",
    "is_additive",
    "iter_bootstrap_weights",
    "paired_bootstrap",
    "paired_bootstrap_statistic",
    "paired_bootstrap_statistics",
    "percentile_interval",
    "summarise_seeds",
]

# --------------------------------------------------------------------------- protocol

# MetricUnavailable (bench.metrics.unavailable, re-exported here): raised by a metric whose optional tool is
# missing (Java for METEOR, a local model for BERTScore); scorers report value null + the reason, never 0.


@runtime_checkable
class AdditiveMetric(Protocol):
    """A metric computed from the column sums of per-sample sufficient statistics.

    ``stats`` returns a float array ``[n, k]`` (one row per sample); ``aggregate(totals, n)`` maps column
    sums ``[..., k]`` (a single corpus or a batch of resamples) to metric values ``[...]``. An optional
    ``stats_key`` attribute lets metrics that share statistics (BLEU-1…4) compute them once.
    """

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray: ...

    def aggregate(self, totals: np.ndarray, n: int) -> Any: ...


def is_additive(obj: Any) -> bool:
    return callable(getattr(obj, "stats", None)) and callable(getattr(obj, "aggregate", None))


class DefinedMean:
    """Additive form of "the mean of the per-sample values that are defined" (NaN = undefined, left out).

    Statistics per sample are ``[value or 0, 1 if defined else 0]``; a resample's value is the ratio of their
    weighted sums, which equals ``nanmean`` of the resampled values (NaN when none is defined).
    """

    @staticmethod
    def statistics(values: Sequence[float | None]) -> np.ndarray:
        v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
        ok = np.isfinite(v)
        return np.stack([np.where(ok, v, 0.0), ok.astype(np.float64)], axis=1)

    def aggregate(self, totals: np.ndarray, n: int) -> Any:
        totals = np.asarray(totals, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                totals[..., 1] > 0, totals[..., 0] / np.where(totals[..., 1] > 0, totals[..., 1], 1), np.nan
            )


# --------------------------------------------------------------------------- resampling


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] indices; the same seed gives the same resamples on every machine."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def iter_bootstrap_weights(n: int, resamples: int, seed: int, max_cells: int = 4_000_000) -> Iterator[np.ndarray]:
    """Multiplicity matrices ``[r, n]`` (float) of the resamples of :func:`bootstrap_indices`, in row blocks
    of at most ``max_cells`` entries (the draws are the same as one ``bootstrap_indices`` call)."""
    rng = np.random.default_rng(seed)
    rows = max(1, min(resamples, max_cells // max(n, 1)))
    done = 0
    while done < resamples:
        r = min(rows, resamples - done)
        idx = rng.integers(0, n, size=(r, n))
        flat = (idx + (np.arange(r) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=r * n).reshape(r, n).astype(np.float64)
        done += r


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """All multiplicity rows at once (``[resamples, n]``)."""
    if resamples <= 0 or n == 0:
        return np.zeros((0, n))
    return np.concatenate(list(iter_bootstrap_weights(n, resamples, seed)))


def percentile_interval(values: np.ndarray, resamples: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval of bootstrap values; (None, None) when most resamples were undefined."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0 or values.size < max(10, resamples // 2):  # statistic undefined on most resamples
        return None, None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> tuple[float | None, float | None]:
    """Percentile interval of ``statistic(indices)`` over bootstrap resamples of ``range(n)``."""
    if resamples <= 0 or n == 0:
        return None, None
    values = np.array([statistic(idx) for idx in bootstrap_indices(n, resamples, seed)], dtype=float)
    return percentile_interval(values, resamples, level)


# --------------------------------------------------------------------------- several training seeds

_BUNDLE_CORE = ("value", "ci95", "n", "per_class")


def summarise_seeds(
    bundles: Mapping[str, Mapping[str, Any]],
    resampled: Mapping[str, np.ndarray] | None,
    resamples: int,
    level: float = 0.95,
) -> dict[str, Any]:
    """One metric measured on the same test samples by models trained with several seeds → one bundle.

    ``bundles``: seed → that seed's bundle (``value``, ``n``, optional ``per_class`` and metadata);
    ``resampled``: seed → the metric on each bootstrap resample of the test samples, the same resamples for
    every seed (or None without bootstrap). The result: ``value`` = mean over seeds; ``sd`` = their sample
    standard deviation (ddof = 1; None with one seed); ``ci95`` = percentile interval of the seed mean over
    the shared resamples (test-sample uncertainty of the mean; with one seed, that seed's interval);
    ``per_class`` = per-class means; ``seeds`` = seed → ``{"value", "ci95"}`` plus the metadata that differ
    between seeds (e.g. each seed's thresholds); metadata equal for all seeds stay at the top.
    """
    if not bundles:
        raise ValueError("no seeds to summarise")
    seeds = list(bundles)
    values = [bundles[k]["value"] for k in seeds]
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    complete = len(finite) == len(values)
    mean = float(np.mean(finite)) if complete else None
    sd = float(np.std(finite, ddof=1)) if complete and len(finite) > 1 else None
    per_seed: dict[str, dict[str, Any]] = {}
    for k in seeds:
        entry: dict[str, Any] = {"value": bundles[k]["value"], "ci95": [None, None]}
        if resampled is not None and resamples > 0:
            entry["ci95"] = list(percentile_interval(resampled[k], resamples, level))
        per_seed[str(k)] = entry
    low, high = None, None
    if resampled is not None and resamples > 0 and complete:
        low, high = percentile_interval(np.mean([resampled[k] for k in seeds], axis=0), resamples, level)
    out: dict[str, Any] = {"value": mean, "ci95": [low, high], "n": int(bundles[seeds[0]]["n"]), "sd": sd}
    classes = bundles[seeds[0]].get("per_class")
    if classes is not None:
        out["per_class"] = {}
        for c in classes:
            vals = [bundles[k]["per_class"].get(c) for k in seeds]
            out["per_class"][c] = float(np.mean(vals)) if all(v is not None for v in vals) else None
    meta = {key for k in seeds for key in bundles[k] if key not in _BUNDLE_CORE}
    for key in sorted(meta):
        found = [bundles[k].get(key) for k in seeds]
        if all(f == found[0] for f in found):
            out[key] = found[0]
        else:
            for k, f in zip(seeds, found, strict=True):
                per_seed[str(k)][key] = f
    out["seeds"] = per_seed
    return out


# --------------------------------------------------------------------------- additive metrics


def additive_value(metric: Any, stats: np.ndarray) -> float:
    """The metric on the whole set."""
    stats = np.asarray(stats, dtype=np.float64)
    return float(metric.aggregate(stats.sum(axis=0), stats.shape[0]))


def additive_resamples(metric: Any, stats: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The metric on each bootstrap resample (``[resamples]``), from the sufficient statistics."""
    stats = np.asarray(stats, dtype=np.float64)
    n = stats.shape[0]
    if resamples <= 0 or n == 0:
        return np.zeros(0)
    parts = [
        np.asarray(metric.aggregate(w @ stats, n), dtype=np.float64).reshape(-1)
        for w in iter_bootstrap_weights(n, resamples, seed)
    ]
    return np.concatenate(parts)


def additive_bootstrap_ci(
    metric: Any, stats: np.ndarray, resamples: int, seed: int, level: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of an additive metric (the same resamples as :func:`bootstrap_ci`)."""
    if resamples <= 0 or np.shape(stats)[0] == 0:
        return None, None
    return percentile_interval(additive_resamples(metric, stats, resamples, seed), resamples, level)


def additive_bootstrap_cis(
    items: Mapping[str, tuple[Any, np.ndarray]], resamples: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float | None, float | None]]:
    """Intervals of several additive metrics on the same samples, sharing one set of resamples.

    ``items`` maps a name to ``(metric, stats)``; the same as :func:`additive_bootstrap_ci` for each (same
    draws; equal up to rounding), but the multiplicities are drawn once and applied to all statistics in one
    matrix product.
    """
    names = list(items)
    if not names:
        return {}
    blocks = [np.asarray(items[k][1], dtype=np.float64) for k in names]
    n = blocks[0].shape[0]
    if any(b.shape[0] != n for b in blocks):
        raise ValueError("all statistics must have one row per sample")
    if resamples <= 0 or n == 0:
        return dict.fromkeys(names, (None, None))
    edges = np.cumsum([0] + [b.shape[1] for b in blocks])
    joined = np.concatenate(blocks, axis=1)
    values: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for w in iter_bootstrap_weights(n, resamples, seed):
        totals = w @ joined
        for i, k in enumerate(names):
            agg = items[k][0].aggregate(totals[:, edges[i] : edges[i + 1]], n)
            values[k].append(np.asarray(agg, dtype=np.float64).reshape(-1))
    return {k: percentile_interval(np.concatenate(values[k]), resamples, level) for k in names}


# --------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True)
class PairedComparison:
    """Run A minus run B on the same samples, with a paired bootstrap interval and two-sided p-value."""

    value_a: float
    value_b: float
    difference: float
    low: float | None
    high: float | None
    p_value: float | None
    n: int
    resamples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.value_a,
            "b": self.value_b,
            "difference": self.difference,
            "ci95": [self.low, self.high],
            "p_value": self.p_value,
            "n": self.n,
            "resamples": self.resamples,
        }


def _paired_summary(
    value_a: float, value_b: float, diffs: np.ndarray, n: int, resamples: int, level: float
) -> PairedComparison:
    observed = value_a - value_b
    low, high = percentile_interval(diffs, resamples, level)
    finite = diffs[np.isfinite(diffs)]
    p_value: float | None = None
    if low is not None and np.isfinite(observed):
        # Null-centred bootstrap (Hall & Wilson 1991): shifting the resampled differences by the observed one
        # gives their distribution under "no difference"; p = share at least as extreme as observed.
        extreme = np.count_nonzero(np.abs(finite - observed) >= abs(observed) - 1e-12 * max(1.0, abs(observed)))
        p_value = float(min(1.0, (extreme + 1) / (finite.size + 1)))
    return PairedComparison(value_a, value_b, observed, low, high, p_value, n, resamples)


def paired_bootstrap(
    metric: Any, stats_a: np.ndarray, stats_b: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> PairedComparison:
    """Paired bootstrap test of an additive metric for two runs scored on the same samples in the same order.

    Each resample draws sample indices once and applies them to both runs, so the interval of A − B and the
    p-value account for the pairing. p is two-sided: (1 + #{|d* − d| ≥ |d|}) / (R + 1), where d is the
    observed difference and d* the resampled ones.
    """
    a = np.asarray(stats_a, dtype=np.float64)
    b = np.asarray(stats_b, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise BenchError(f"paired bootstrap needs the same samples in both runs ({a.shape[0]} vs {b.shape[0]})")
    n = a.shape[0]
    value_a, value_b = additive_value(metric, a), additive_value(metric, b)
    if resamples <= 0 or n == 0:
        return PairedComparison(value_a, value_b, value_a - value_b, None, None, None, n, max(resamples, 0))
    diffs = np.concatenate(
        [
            np.asarray(metric.aggregate(w @ a, n), dtype=np.float64).reshape(-1)
            - np.asarray(metric.aggregate(w @ b, n), dtype=np.float64).reshape(-1)
            for w in iter_bootstrap_weights(n, resamples, seed)
        ]
    )
    return _paired_summary(value_a, value_b, diffs, n, resamples, level)


def paired_bootstrap_statistic(
    statistic_a: Callable[[np.ndarray], float],
    statistic_b: Callable[[np.ndarray], float],
    n: int,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedComparison:
    """Paired bootstrap for metrics without sufficient statistics: ``statistic_x(indices)`` recomputes run
    x's metric on the samples ``indices`` (both runs get the same indices)."""
    everything = np.arange(n)
    value_a, value_b = float(statistic_a(everything)), float(statistic_b(everything))
    if resamples <= 0 or n == 0:
        return PairedComparison(value_a, value_b, value_a - value_b, None, None, None, n, max(resamples, 0))
    diffs = np.array(
        [statistic_a(idx) - statistic_b(idx) for idx in bootstrap_indices(n, resamples, seed)], dtype=float
    )
    return _paired_summary(value_a, value_b, diffs, n, resamples, level)


def paired_bootstrap_statistics(
    statistics_a: Callable[[np.ndarray], Mapping[str, float | None]],
    statistics_b: Callable[[np.ndarray], Mapping[str, float | None]],
    names: Sequence[str],
    n: int,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, PairedComparison]:
    """:func:`paired_bootstrap_statistic` for several metrics computed together: ``statistics_x(indices)``
    returns run x's ``{name: value}`` on the samples ``indices`` (a scorer that computes all of a task's
    metrics at once is called once per resample and run). The draws are those of
    :func:`paired_bootstrap_statistic`, so each metric's result equals that function's for it alone."""

    def values(stats: Mapping[str, float | None]) -> np.ndarray:
        return np.array([np.nan if stats.get(k) is None else float(stats[k]) for k in names], dtype=float)

    everything = np.arange(n)
    full_a, full_b = values(statistics_a(everything)), values(statistics_b(everything))
    if resamples <= 0 or n == 0:
        diffs = np.zeros((0, len(names)))
    else:
        diffs = np.array(
            [values(statistics_a(idx)) - values(statistics_b(idx)) for idx in bootstrap_indices(n, resamples, seed)]
        ).reshape(-1, len(names))
    out = {}
    for j, name in enumerate(names):
        if diffs.shape[0] == 0:
            a, b = float(full_a[j]), float(full_b[j])
            out[name] = PairedComparison(a, b, a - b, None, None, None, n, max(resamples, 0))
        else:
            out[name] = _paired_summary(float(full_a[j]), float(full_b[j]), diffs[:, j], n, resamples, level)
    return out


def align_by_id(ids_a: Sequence[str], ids_b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into run A and run B of the sample ids both runs share (in A's order).

    Raises BenchError when they share none or an id repeats within a run.
    """
    for name, ids in (("A", ids_a), ("B", ids_b)):
        if len(set(ids)) != len(ids):
            raise BenchError(f"run {name} has repeated sample ids; a paired comparison needs unique ids")
    pos_b = {sid: i for i, sid in enumerate(ids_b)}
    rows_a = [i for i, sid in enumerate(ids_a) if sid in pos_b]
    if not rows_a:
        raise BenchError("the two runs share no sample ids")
    return np.array(rows_a, dtype=np.int64), np.array([pos_b[ids_a[i]] for i in rows_a], dtype=np.int64)


def compare_runs(
    metric: Any,
    records_a: Sequence[Mapping[str, Any]],
    records_b: Sequence[Mapping[str, Any]],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedComparison:
    """Paired bootstrap of ``metric`` between two runs' sample records (``id``, ``prediction``, ``reference``).

    Samples are matched by id (those both runs have, in run A's order); their references must agree. An
    additive metric is resampled from its sufficient statistics, any other ``fn(predictions, references)``
    is recomputed on each resample. Raises MetricUnavailable when the metric is unavailable here.
    """
    rows_a, rows_b = align_by_id([str(r["id"]) for r in records_a], [str(r["id"]) for r in records_b])
    recs_a = [records_a[i] for i in rows_a]
    recs_b = [records_b[i] for i in rows_b]
    for ra, rb in zip(recs_a, recs_b):
        if ra["reference"] != rb["reference"]:
            raise BenchError(f"sample {ra['id']!r} has different references in the two runs; they are not comparable")
    refs = [r["reference"] for r in recs_a]
    preds_a = [r["prediction"] for r in recs_a]
    preds_b = [r["prediction"] for r in recs_b]
    if is_additive(metric):
        return paired_bootstrap(
            metric, metric.stats(preds_a, refs), metric.stats(preds_b, refs), resamples, seed, level
        )

    def on(preds: list[Any]) -> Callable[[np.ndarray], float]:
        return lambda idx: float(metric([preds[i] for i in idx], [refs[i] for i in idx]))

    return paired_bootstrap_statistic(on(preds_a), on(preds_b), len(refs), resamples, seed, level)
