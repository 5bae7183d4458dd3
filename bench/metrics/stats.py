"""Bootstrap confidence intervals over samples.

Percentile bootstrap (LLaVA-Rad used 500 resamples): resample sample indices with
replacement, recompute the statistic on each resample, take the 2.5th/97.5th percentiles.
Resamples on which the statistic is undefined (e.g. an AUC with one class) are skipped and
counted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] indices; the same seed gives the same resamples on every machine."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


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
    values = values[np.isfinite(values)]
    if values.size < max(10, resamples // 2):  # statistic undefined on most resamples
        return None, None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)
