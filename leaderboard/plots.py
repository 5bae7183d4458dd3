"""Static SVG plots of a benchmark (matplotlib, Agg): score against parameter count, per-class AUC bars,
per-category CNR bars. Text stays text in the SVG (small files) and output is reproducible (fixed hash salt,
no date)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from leaderboard.board import GROUNDING_CATEGORY_METRIC, Benchmark, Row
from leaderboard.reported import CATEGORY_SEPARATOR

MAX_SERIES = 8
_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "medvlbench",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Any, Any]]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(width, height))
        try:
            yield fig, ax
        finally:
            plt.close(fig)


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _text(text: str) -> str:
    """A name from a file as plain text in a plot ("$" would start mathtext)."""
    return text.replace("$", r"\$")


def _short(row: Row) -> str:
    label = row.label if row.kind == "reported" else row.run_id
    return _text(label if len(label) <= 40 else label[:39] + "…")


def score_vs_parameters(bench: Benchmark) -> str | None:
    """The headline metric of the measured rows against their parameter counts (log scale)."""
    head = bench.headline
    if head is None:
        return None
    points = [
        (r, r.parameters, r.cells[head.key].value)
        for r in bench.rows
        if r.kind == "measured" and r.parameters and r.cells.get(head.key) and r.cells[head.key].value is not None
    ]
    if not points:
        return None
    with _figure(5.0, 3.0) as (fig, ax):
        for row, params, value in points:
            ax.scatter(
                [params], [value], s=36, marker="o",
                facecolors="tab:blue" if row.ranked else "none", edgecolors="tab:blue",
            )  # fmt: skip
            ax.annotate(_short(row), (params, value), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(_text(f"{head.label} {head.arrow}"))
        ax.set_title(_text(f"{bench.title}: {head.label} vs parameters (hollow: not ranked)"), fontsize=9)
        return _svg(fig)


def _grouped_bars(bench: Benchmark, series: list[tuple[Row, list[float | None]]], groups: list[str], ylabel: str,
                  title: str) -> str:  # fmt: skip
    import numpy as np

    with _figure(max(5.0, 0.6 * len(groups) + 2.5), 3.2) as (fig, ax):
        width = 0.8 / len(series)
        x = np.arange(len(groups))
        for i, (row, values) in enumerate(series):
            heights = [np.nan if v is None else v for v in values]
            ax.bar(x + i * width - 0.4 + width / 2, heights, width, label=_short(row),
                   hatch="//" if row.kind == "reported" else None)  # fmt: skip
        ax.set_xticks(x, [_text(g) for g in groups], rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(_text(title), fontsize=9)
        ax.legend(fontsize=6, ncols=2, frameon=False)
        return _svg(fig)


def per_class_auc(bench: Benchmark) -> str | None:
    """Per-class AUC of the measured rows."""
    rows = [r for r in bench.rows if r.kind == "measured" and r.per_class_auc][:MAX_SERIES]
    if not rows:
        return None
    classes = list(dict.fromkeys(c for r in rows for c in r.per_class_auc))
    series = [(r, [r.per_class_auc.get(c) for c in classes]) for r in rows]
    return _grouped_bars(bench, series, classes, "AUC ↑", f"{bench.title}: AUC per class")


def per_category_cnr(bench: Benchmark) -> str | None:
    """CNR per category, measured rows first, then the reported rows with the best category mean."""
    prefix = GROUNDING_CATEGORY_METRIC + CATEGORY_SEPARATOR
    cats = [c.key for c in bench.columns if c.key.startswith(prefix)]
    if not cats:
        return None

    def values(r: Row) -> list[float | None]:
        return [r.cells[k].value if r.cells.get(k) else None for k in cats]

    def mean(r: Row) -> float:
        got = [v for v in values(r) if v is not None]
        return sum(got) / len(got) if got else float("-inf")

    with_values = [r for r in bench.rows if any(v is not None for v in values(r))]
    measured = [r for r in with_values if r.kind == "measured"]
    reported = sorted((r for r in with_values if r.kind == "reported"), key=mean, reverse=True)
    rows = (measured + reported)[:MAX_SERIES]
    if not rows:
        return None
    groups = [k[len(prefix) :] for k in cats]
    return _grouped_bars(bench, [(r, values(r)) for r in rows], groups, "CNR ↑", f"{bench.title}: CNR per category")
