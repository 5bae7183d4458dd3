"""Many results (and the papers' reported numbers) → one table per benchmark, ranked per column.

A benchmark is a harness task (rows: every model evaluated on it, plus the reported rows mapped to it) or a
dataset a paper reports on that has no harness task (reported rows only). A measured row is *ranked* (it can
be marked best or second) unless it ran with ``--limit`` or on other data than the benchmark's reference
dataset fingerprint (the most common one among full runs); such rows are shown with their flag and never
ranked. A measured row lacking some of the task's metrics is flagged with the missing names. Reported rows
are ranked with the measured ones: they are the published numbers on the same dataset and metric.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.interfaces import BenchError
from leaderboard.reported import CATEGORY_SEPARATOR, PAPERS, ReportedCell
from reports.io import RESULTS_FILE, read_results

# The tabs, in order: (task family, title). Other families get a tab of their own after these.
TABS = (
    ("zero-shot", "Zero-shot"),
    ("fine-tune", "Fine-tune"),
    ("grounding", "Grounding"),
    ("retrieval", "Retrieval"),
    ("vqa", "VQA"),
    ("report generation", "Report generation"),
    ("judge validation", "CheXprompt"),
    ("diagnosis", "Diagnosis"),
)
SCALE_LABELS = {"fraction": "0–1", "percent": "0–100", "raw": ""}
GROUNDING_CATEGORY_METRIC = "CNR"  # grounding tables get one column per category of this metric


@dataclass
class Column:
    key: str
    label: str
    higher_is_better: bool | None
    description: str = ""
    scale: str = ""  # set when reported values were converted to this column's scale
    reported_only: bool = False

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓"}.get(self.higher_is_better, "")  # type: ignore[arg-type]


@dataclass
class Cell:
    value: float | None
    low: float | None = None
    high: float | None = None
    note: str = ""
    rank: int | None = None  # 1: best, 2: second
    sd: float | None = None  # sample standard deviation over training seeds (fine-tuning), with their count
    n_seeds: int = 0


@dataclass
class Row:
    kind: str  # "measured" | "reported"
    label: str
    model: str
    cells: dict[str, Cell] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    ranked: bool = True
    # measured rows
    run_id: str = ""
    run_dir: str = ""
    parameters: int | None = None
    model_kind: str = ""
    fingerprint: str = ""
    evaluated: str = ""
    harness_version: str = ""
    n: int | None = None
    dataset_fingerprint: str = ""
    per_class_auc: dict[str, float | None] = field(default_factory=dict)
    # reported rows
    paper: str = ""
    tables: list[str] = field(default_factory=list)
    setting: str = ""
    note: str = ""

    @property
    def source(self) -> str:
        if self.kind == "reported":
            return f"{PAPERS.get(self.paper, self.paper)}, {' / '.join(self.tables)}"
        return self.run_id


@dataclass
class Benchmark:
    id: str
    title: str
    family: str
    dataset: str
    description: str
    harness_task: bool
    columns: list[Column] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    @property
    def headline(self) -> Column | None:
        for col in self.columns:
            if any(r.cells.get(col.key) and r.cells[col.key].value is not None for r in self.rows):
                return col
        return None

    def column(self, key: str) -> Column | None:
        return next((c for c in self.columns if c.key == key), None)


# --------------------------------------------------------------------------- reading runs


def find_runs(paths: Sequence[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every run under the given folders (a run folder itself, or a folder of run folders)."""
    runs = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise BenchError(f"{p}: no such folder (expected a folder of runs or one run folder)")
        files = [p / RESULTS_FILE] if (p / RESULTS_FILE).is_file() else sorted(p.glob(f"*/{RESULTS_FILE}"))
        runs += [(f.parent, read_results(f)) for f in files]
    if not runs:
        raise BenchError(f"no results found in {', '.join(map(str, paths))} (expected <run>/{RESULTS_FILE})")
    return runs


def _newest_per_setup(runs: list[tuple[Path, dict[str, Any]]], task: str) -> list[tuple[Path, dict[str, Any]]]:
    """One run per (model, fingerprint, arguments, data, limit): re-running the same evaluation replaces it."""
    chosen: dict[str, tuple[Path, dict[str, Any]]] = {}
    for run_dir, res in sorted(runs, key=lambda r: r[1]["created"]):
        t = res["tasks"][task]
        key = json.dumps(
            [res["model"]["name"], res["model"]["fingerprint"], res["model"]["args"], t["dataset_fingerprint"],
             res["config"].get("limit")],
            sort_keys=True, default=str,
        )  # fmt: skip
        chosen[key] = (run_dir, res)
    return list(chosen.values())


def _measured_row(run_dir: Path, res: Mapping[str, Any], task: str, expected: Iterable[str]) -> Row:
    t = res["tasks"][task]
    model = res["model"]
    row = Row(
        kind="measured",
        label=model["name"],
        model=model["name"],
        run_id=res["run_id"],
        run_dir=str(run_dir),
        parameters=model.get("parameters"),
        model_kind=model.get("kind", ""),
        fingerprint=model["fingerprint"],
        evaluated=str(res.get("finished") or res["created"])[:10],
        harness_version=res["environment"].get("harness_version", ""),
        n=t["n_samples"],
        dataset_fingerprint=t["dataset_fingerprint"],
    )
    for name, m in t["metrics"].items():
        ci = m.get("ci95") or [None, None]
        row.cells[name] = Cell(m.get("value"), ci[0], ci[1], m.get("unavailable", ""))
        seeds = m.get("seeds") or {}
        if isinstance(m.get("sd"), (int, float)) and len(seeds) > 1:
            row.cells[name].sd, row.cells[name].n_seeds = float(m["sd"]), len(seeds)
        if name == "AUC" and isinstance(m.get("per_class"), Mapping):
            row.per_class_auc = dict(m["per_class"])
        per_category = m.get("per_category") if name == GROUNDING_CATEGORY_METRIC else None
        for cat, v in (per_category or {}).items():
            cci = v.get("ci95") or [None, None]
            row.cells[f"{name}{CATEGORY_SEPARATOR}{cat}"] = Cell(v.get("value"), cci[0], cci[1])
    limit = res["config"].get("limit")
    if limit is not None or not t.get("comparable", True):
        row.flags.append(f"--limit {limit}: not comparable" if limit is not None else "not comparable")
        row.ranked = False
    for flag in t.get("flags", []):
        if flag != "limit":
            row.flags.append(flag)
    missing = [m for m in expected if m not in t["metrics"]]
    unavailable = [m for m, v in t["metrics"].items() if v.get("value") is None]
    if missing:
        row.flags.append(f"missing: {', '.join(missing)}")
    if unavailable:
        row.flags.append(f"unavailable: {', '.join(unavailable)}")
    return row


def _flag_other_data(rows: list[Row]) -> None:
    """Rows evaluated on other data than the benchmark's reference fingerprint are flagged, not ranked."""
    full = [r for r in rows if r.ranked] or rows
    if not full:
        return
    counts = Counter(r.dataset_fingerprint for r in full)
    newest = max(full, key=lambda r: r.evaluated).dataset_fingerprint
    reference = max(counts, key=lambda fp: (counts[fp], fp == newest))
    for r in rows:
        if r.dataset_fingerprint != reference and r.ranked:  # a --limit run is flagged already
            r.flags.append(f"other data (dataset fingerprint {r.dataset_fingerprint[:10]} ≠ {reference[:10]})")
            r.ranked = False


# --------------------------------------------------------------------------- reported rows


def _reported_rows(cells: list[ReportedCell]) -> list[Row]:
    """Cells → rows: one per (paper, model, setting); a table repeating the same numbers joins the row."""
    rows: list[Row] = []
    index: dict[tuple[str, str, str], list[Row]] = {}
    for c in cells:
        candidates = index.setdefault((c.paper, c.model, c.setting), [])
        cell = Cell(c.value, note=_printed_note(c))
        for row in candidates:
            old = row.cells.get(c.column)
            if old is None or old.value == cell.value:
                break
        else:
            row = Row(kind="reported", label=c.row_label, model=c.model, paper=c.paper, setting=c.setting)
            candidates.append(row)
            rows.append(row)
        if c.column not in row.cells:
            row.cells[c.column] = cell
        if c.table not in row.tables:
            row.tables.append(c.table)
        if c.note and c.note not in row.note:
            row.note = f"{row.note}; {c.note}" if row.note else c.note
    return [r for r in rows if any(cell.value is not None for cell in r.cells.values())]


def _printed_note(c: ReportedCell) -> str:
    if c.value is None:
        return f"{c.note or 'not reported'} ({PAPERS[c.paper]}, {c.table})"
    shown = f"as printed: {c.printed}" + (" %" if c.printed_scale == "percent" else "")
    if c.printed_scale != c.scale:
        shown += f", shown on a {SCALE_LABELS[c.scale]} scale"
    return f"{shown} ({PAPERS[c.paper]}, {c.table}, {c.metric})"


# --------------------------------------------------------------------------- building


def _columns(
    spec: Any, measured: list[Row], reported: list[ReportedCell], registry_metrics: Mapping[str, Any]
) -> list[Column]:
    keys: list[str] = list(spec.metrics) if spec is not None else []
    for row in measured:
        keys += [k for k in row.cells if CATEGORY_SEPARATOR not in k]
    keys += [c.column for c in reported if c.harness_metric and CATEGORY_SEPARATOR not in c.column]
    keys += sorted({k for row in measured for k in row.cells if CATEGORY_SEPARATOR in k})
    keys += sorted({c.column for c in reported if CATEGORY_SEPARATOR in c.column})
    keys += [c.column for c in reported if not c.harness_metric and CATEGORY_SEPARATOR not in c.column]
    scales = {c.column: c.scale for c in reported if c.scale != c.printed_scale}
    columns = []
    for key in dict.fromkeys(keys):
        base, _, category = key.partition(CATEGORY_SEPARATOR)
        spec_m = registry_metrics.get(base)
        paper = next((c for c in reported if c.column == key), None)
        if spec_m is not None:
            higher, desc = spec_m.higher_is_better, spec_m.description
        elif paper is not None:
            higher, desc = paper.higher_is_better, f"{paper.metric} as reported by {PAPERS[paper.paper]}"
        else:
            higher, desc = None, "not a registered metric: direction unknown, not ranked"
        if category:
            desc = f"{base} of the {category} phrases. {desc}"
        reported_only = paper is not None and not paper.harness_metric
        if reported_only:
            desc = f"{desc}; no harness metric computes it"
        columns.append(Column(key, key, higher, desc, SCALE_LABELS.get(scales.get(key, ""), ""), reported_only))
    return columns


def _rank(bench: Benchmark) -> None:
    for col in bench.columns:
        if col.higher_is_better is None:
            continue
        eligible = [r for r in bench.rows if r.ranked and r.cells.get(col.key) and r.cells[col.key].value is not None]
        values = sorted({r.cells[col.key].value for r in eligible}, reverse=col.higher_is_better)  # type: ignore[misc]
        for r in eligible:
            cell = r.cells[col.key]
            cell.rank = 1 if cell.value == values[0] else 2 if len(values) > 1 and cell.value == values[1] else None


def _order(bench: Benchmark) -> None:
    head = bench.headline

    def key(r: Row) -> tuple[int, int, float, str]:
        cell = r.cells.get(head.key) if head else None
        value = cell.value if cell is not None and cell.value is not None else None
        sign = -1.0 if head is None or head.higher_is_better is not False else 1.0
        return (0 if r.ranked else 1, 0 if value is not None else 1, sign * (value or 0.0), r.label)

    bench.rows.sort(key=key)


def build_benchmarks(
    runs: list[tuple[Path, dict[str, Any]]], reported: list[ReportedCell], reg: Any
) -> list[Benchmark]:
    """One Benchmark per harness task with results or reported rows, and per reported-only dataset."""
    tasks: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for run_dir, res in runs:
        for task in res["tasks"]:
            tasks.setdefault(task, []).append((run_dir, res))
    by_benchmark: dict[str, list[ReportedCell]] = {}
    for cell in reported:
        by_benchmark.setdefault(cell.benchmark, []).append(cell)
    benchmarks = []
    for name in sorted(set(tasks) | set(by_benchmark)):
        spec = reg.tasks.get(name)
        cells = by_benchmark.get(name, [])
        expected = list(spec.metrics) if spec is not None else []
        measured = [_measured_row(d, r, name, expected) for d, r in _newest_per_setup(tasks.get(name, []), name)]
        _flag_other_data(measured)
        if name in tasks:
            first = tasks[name][0][1]["tasks"][name]
            family = spec.family if spec is not None else first.get("family", "")
            dataset, description = first["dataset"], spec.description if spec is not None else ""
        elif spec is not None:
            family, dataset, description = spec.family, spec.dataset, spec.description
        else:
            family, dataset = cells[0].family, cells[0].dataset
            description = f"{dataset}: reported by the paper(s) only; no harness task evaluates this dataset."
        title = name if (spec is not None or name in tasks) else f"{dataset} ({cells[0].family}, reported only)"
        bench = Benchmark(name, title, family or "other", dataset, description, spec is not None or name in tasks)
        bench.columns = _columns(spec, measured, cells, reg.metrics)
        bench.rows = measured + _reported_rows(cells)
        _rank(bench)
        _order(bench)
        benchmarks.append(bench)
    return benchmarks


def tabs_of(benchmarks: list[Benchmark], reg: Any) -> list[dict[str, Any]]:
    """The tabs with their benchmarks, and the registered tasks of each family that have no results yet."""
    families = [f for f, _ in TABS]
    extra = sorted({b.family for b in benchmarks} - set(families))
    shown = {b.id for b in benchmarks}
    tabs = []
    for family, title in [*TABS, *((f, f.capitalize()) for f in extra)]:
        pending = [spec for name, spec in sorted(reg.tasks.items()) if spec.family == family and name not in shown]
        tabs.append(
            {
                "family": family,
                "slug": family.replace(" ", "-"),
                "title": title,
                # benchmarks with measured rows first, then those with the papers' numbers only
                "benchmarks": sorted(
                    (b for b in benchmarks if b.family == family),
                    key=lambda b: (not any(r.kind == "measured" for r in b.rows), not b.harness_task, b.id),
                ),
                "pending": pending,
            }
        )
    return tabs
