"""Score predictions with registered metrics by name (``bench score --metrics`` and the text tasks).

Each metric is either a plain function ``fn(predictions, references) -> float`` (bootstrapped by
recomputing it on resampled samples) or an additive metric (:class:`bench.metrics.stats.AdditiveMetric`:
per-sample sufficient statistics + an aggregator), which is bootstrapped exactly from its statistics;
metrics sharing a ``stats_key`` compute the statistics once, and all additive metrics share one set of
resamples. A metric whose optional tool or weights are missing
(:class:`~bench.metrics.unavailable.MetricUnavailable`) is reported with ``value``/``ci95`` null and
``"unavailable": reason`` — never as 0.

A metric with ``needs_judge`` (the CheXprompt aggregates) is given the LLM judge as ``judge=``; a metric with
``summary(stats) -> dict`` adds those fields to its entry (the judge's metrics: ``n`` = reports judged and
``n_judge_failed``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.interfaces import BenchError, resolve
from bench.metrics.stats import additive_bootstrap_cis, bootstrap_ci, is_additive
from bench.metrics.unavailable import MetricUnavailable


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def registered_metric(name: str, reg: Any = None) -> Callable[..., Any]:
    """The function registered under ``name`` (through the plugin registry, like ``bench score``)."""
    if reg is None:
        from bench.plugins import registry

        reg = registry()
    return resolve(reg.get("metrics", name).fn)


def score_metrics(
    predictions: Sequence[Any],
    references: Sequence[Any],
    names: Sequence[str],
    bootstrap: int,
    seed: int,
    reg: Any = None,
    judge: Any = None,
) -> dict[str, dict[str, Any]]:
    """``{name: {"value", "ci95", "n"[, "unavailable"]}}`` for each registered metric name, in order.

    ``judge``: the :class:`bench.metrics.judging.Judge` given to metrics that need one (None: they are
    reported unavailable)."""
    if len(predictions) != len(references):
        raise BenchError(f"{len(predictions)} predictions but {len(references)} references; expected one each")
    n = len(predictions)
    preds, refs = list(predictions), list(references)
    stats_cache: dict[str, np.ndarray] = {}
    additive: dict[str, tuple[Any, np.ndarray]] = {}  # name -> (metric, per-sample statistics)
    result: dict[str, dict[str, Any]] = {}
    for name in names:
        fn = registered_metric(name, reg)
        kwargs = {"judge": judge} if getattr(fn, "needs_judge", False) else {}
        extra: dict[str, Any] = {}
        try:
            if is_additive(fn):
                key = getattr(fn, "stats_key", None) or name
                if key not in stats_cache:
                    stats_cache[key] = np.asarray(fn.stats(preds, refs, **kwargs), dtype=np.float64).reshape(n, -1)
                stats = stats_cache[key]
                value = float(fn.aggregate(stats.sum(axis=0), n))
                additive[name] = (fn, stats)
                low = high = None
                if callable(getattr(fn, "summary", None)):
                    extra = dict(fn.summary(stats))
            else:
                value = float(fn(preds, refs, **kwargs))

                def stat(idx: Any, fn: Any = fn, kwargs: dict[str, Any] = kwargs) -> float:
                    return float(fn([preds[i] for i in idx], [refs[i] for i in idx], **kwargs))

                low, high = bootstrap_ci(stat, n, bootstrap, seed)
        except MetricUnavailable as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            result[name] = {"value": None, "ci95": [None, None], "n": n, "unavailable": reason}
            continue
        except (TypeError, ValueError, KeyError) as exc:
            raise BenchError(f"metric {name}: cannot score these predictions ({exc})") from None
        result[name] = {"value": _finite(value), "ci95": [_finite(low), _finite(high)], "n": n, **extra}
    for name, (low, high) in additive_bootstrap_cis(additive, bootstrap, seed).items():
        result[name]["ci95"] = [_finite(low), _finite(high)]
    return result
