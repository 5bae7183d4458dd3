"""Registers the built-in datasets (lazy references: readers are imported on use)."""

from __future__ import annotations

from bench.interfaces import DatasetSpec
from bench.plugins import hookimpl


@hookimpl
def bench_register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="synthcxr",
            loader="bench.data.synthcxr:load",
            description="Synthetic chest radiographs with known findings, boxes, reports and QA "
            "(generated from a seed; nothing to download).",
            needs_root=False,
            folder="synthcxr",
            obtain="generated on first use",
        ),
    ]
