"""Write the static leaderboard site: ``index.html`` (one tab per task family, one table per benchmark),
``tables/*.csv|json`` (every table), ``plots/*.svg``, ``runs/<run>/index.html`` (one report per run) and
``static/`` (stylesheet and script). No server is needed: the pages work from ``file://`` and from any
static host. Only ``bench/cli.py`` calls this module.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from bench import __version__
from bench.interfaces import BenchError
from leaderboard import plots
from leaderboard.board import Benchmark, build_benchmarks, find_runs, tabs_of
from leaderboard.reported import PAPERS, load_reported
from reports.io import atomic_write_text
from reports.run_report import PUBLIC, copy_assets, html_environment, render_run_report


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def format_parameters(n: Any) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        return "–"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)


def _environment() -> jinja2.Environment:
    env = html_environment("leaderboard")
    env.filters["params"] = format_parameters
    return env


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text, mode=PUBLIC)


# --------------------------------------------------------------------------- exports


def table_records(bench: Benchmark) -> list[dict[str, Any]]:
    """The rows of a table as flat records (what the CSV and JSON exports hold)."""
    out = []
    for r in bench.rows:
        rec: dict[str, Any] = {
            "benchmark": bench.id,
            "kind": r.kind,
            "model": r.label,
            "source": r.source,
            "ranked": r.ranked,
            "flags": "; ".join(r.flags),
            "run_id": r.run_id,
            "parameters": r.parameters,
            "model_kind": r.model_kind,
            "fingerprint": r.fingerprint,
            "evaluated": r.evaluated,
            "harness_version": r.harness_version,
            "n": r.n,
            "paper": r.paper,
            "tables": " / ".join(r.tables),
            "setting": r.setting,
        }
        for col in bench.columns:
            cell = r.cells.get(col.key)
            rec[col.key] = cell.value if cell else None
            rec[f"{col.key} ci95 low"] = cell.low if cell else None
            rec[f"{col.key} ci95 high"] = cell.high if cell else None
            rec[f"{col.key} sd over seeds"] = cell.sd if cell else None
        out.append(rec)
    return out


def _csv(records: list[dict[str, Any]]) -> str:
    if not records:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in rec.items()} for rec in records)
    return buf.getvalue()


def _json(bench: Benchmark, records: list[dict[str, Any]]) -> str:
    doc = {
        "benchmark": bench.id,
        "title": bench.title,
        "family": bench.family,
        "dataset": bench.dataset,
        "columns": [
            {"key": c.key, "higher_is_better": c.higher_is_better, "description": c.description, "scale": c.scale}
            for c in bench.columns
        ],
        "rows": records,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- build


def _run_pages(runs: list[tuple[Path, dict[str, Any]]], out: Path, include_samples: bool) -> dict[str, str]:
    """One report per run: run folder → its page's path relative to the site."""
    pages: dict[str, str] = {}
    taken: set[str] = set()
    for run_dir, res in runs:
        name = slug(res["run_id"])
        while name in taken or name == "img":
            name += "_"
        taken.add(name)
        render_run_report(
            run_dir,
            out / "runs" / name,
            include_samples,
            asset_base="../../static/",
            home="../../index.html",
            images=(out / "runs" / "img", "../img/"),
        )
        pages[str(run_dir)] = f"runs/{name}/index.html"
    return pages


def _plots(bench: Benchmark, out: Path, name: str) -> list[dict[str, str]]:
    made = []
    for kind, fn, caption in (
        ("parameters", plots.score_vs_parameters, "headline metric against parameter count"),
        ("per-class-auc", plots.per_class_auc, "AUC per class"),
        ("per-category-cnr", plots.per_category_cnr, "CNR per category (hatched: reported)"),
    ):
        svg = fn(bench)
        if svg:
            rel = f"plots/{name}-{kind}.svg"
            _write(out / rel, svg)
            made.append({"src": rel, "caption": caption})
    return made


def build_site(
    runs_dirs: Sequence[str | Path],
    output: str | Path,
    reported: bool = False,
    title: str = "medvlbench leaderboard",
    include_samples: bool = False,
    notes: Sequence[str] = (),
) -> Path:
    """Write the site for the runs found in ``runs_dirs`` (and the papers' numbers with ``reported``);
    ``notes`` are shown (as text) under the title. Returns the path of ``index.html``."""
    from bench.plugins import registry

    reg = registry()
    runs = find_runs(runs_dirs)
    cells = load_reported() if reported else []
    benchmarks = build_benchmarks(runs, cells, reg)
    out = Path(output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot write the site to {out}: {exc.strerror or exc}") from None
    copy_assets(out / "static")
    pages = _run_pages(runs, out, include_samples)
    names: dict[str, str] = {}
    extras: dict[str, dict[str, Any]] = {}
    for bench in benchmarks:
        name = slug(bench.id)
        names[bench.id] = name
        records = table_records(bench)
        _write(out / "tables" / f"{name}.csv", _csv(records))
        _write(out / "tables" / f"{name}.json", _json(bench, records))
        extras[bench.id] = {"slug": name, "plots": _plots(bench, out, name)}
    html = (
        _environment()
        .get_template("index.html.j2")
        .render(
            title=title,
            notes=list(notes),
            tabs=tabs_of(benchmarks, reg),
            extras=extras,
            pages=pages,
            runs=len(runs),
            reported=reported,
            papers=PAPERS,
            version=__version__,
            generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
    )
    index = out / "index.html"
    _write(index, html)
    return index
