"""Registers the built-in metrics (lazy references: nothing heavy is imported here).

One function per metric family; each returns its MetricSpecs. ``level`` is "corpus" for a
metric computed over the whole set (AUC, corpus BLEU, CIDEr) and "sample" for a mean of
per-sample scores.
"""

from __future__ import annotations

from bench.interfaces import MetricSpec
from bench.plugins import hookimpl

_CLS = "bench.metrics.classification"


def _classification() -> list[MetricSpec]:
    return [
        MetricSpec(
            "AUC", f"{_CLS}:auc", True, "Macro mean over classes of ROC-AUC (scikit-learn).", "corpus", "classification"
        ),
        MetricSpec(
            "F1", f"{_CLS}:f1", True, "Macro F1 over classes at the protocol's threshold.", "corpus", "classification"
        ),
        MetricSpec(
            "ACC",
            f"{_CLS}:accuracy",
            True,
            "Macro accuracy over classes at the protocol's threshold.",
            "corpus",
            "classification",
        ),
    ]


def _retrieval() -> list[MetricSpec]:
    return []


def _grounding() -> list[MetricSpec]:
    return []


def _nlg() -> list[MetricSpec]:
    return []


def _vqa() -> list[MetricSpec]:
    return []


def _clinical() -> list[MetricSpec]:
    return []


@hookimpl
def bench_register_metrics() -> list[MetricSpec]:
    return [*_classification(), *_retrieval(), *_grounding(), *_nlg(), *_vqa(), *_clinical()]
