"""Registers the built-in metrics (lazy references: nothing heavy is imported here)."""

from __future__ import annotations

from bench.interfaces import MetricSpec
from bench.plugins import hookimpl

_CLS = "bench.metrics.classification"


@hookimpl
def bench_register_metrics() -> list[MetricSpec]:
    return [
        MetricSpec("AUC", f"{_CLS}:auc", True, "Macro mean over classes of ROC-AUC (scikit-learn).",
                   "corpus", "classification"),
        MetricSpec("F1", f"{_CLS}:f1", True, "Macro F1 over classes at the protocol's threshold.",
                   "corpus", "classification"),
        MetricSpec("ACC", f"{_CLS}:accuracy", True, "Macro accuracy over classes at the protocol's threshold.",
                   "corpus", "classification"),
    ]
