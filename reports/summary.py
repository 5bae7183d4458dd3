"""A plain HTML summary of the runs in an output folder (the demo's first page).

The full leaderboard lives in ``leaderboard/``; this page is a dependency-free overview:
one table per task, one row per run, each metric with its 95 % interval. Every string that
came from a model or a file is escaped (jinja2 autoescape).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from bench.interfaces import BenchError
from reports.io import RESULTS_FILE, atomic_write_text, read_results

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:0 0 2rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}caption{text-align:left;font-weight:600;margin:.5rem 0}
.ci{color:#777;font-size:.85em}.flag{color:#b00}
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ runs|length }} run(s) in <code>{{ folder }}</code>. Values are point estimates with 95 % bootstrap intervals.</p>
{% for task, rows in tables.items() %}
<table><caption>{{ task }}{% if rows[0].description %} — {{ rows[0].description }}{% endif %}</caption>
<tr><th>run</th><th>model</th><th>n</th>{% for m in rows[0].metric_names %}<th>{{ m }}</th>{% endfor %}</tr>
{% for r in rows %}<tr><td>{{ r.run_id }}{% if not r.comparable %} <span class="flag">(not comparable: {{ r.flags|join(", ") }})</span>{% endif %}</td>
<td>{{ r.model }}</td><td>{{ r.n }}</td>
{% for m in rows[0].metric_names %}{% set v = r.metrics.get(m) %}<td>{% if v and v.value is not none %}{{ "%.4f"|format(v.value) }}{% if v.get("sd") is not none and (v.get("seeds") or {})|length > 1 %} ± {{ "%.4f"|format(v.sd) }} <span class="ci">({{ v.seeds|length }} seeds)</span>{% endif %}{% if v.ci95[0] is not none %} <span class="ci">[{{ "%.4f"|format(v.ci95[0]) }}, {{ "%.4f"|format(v.ci95[1]) }}]</span>{% endif %}{% else %}–{% endif %}</td>{% endfor %}
</tr>{% endfor %}
</table>
{% endfor %}
</body></html>
"""


def collect_runs(folder: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(folder.glob(f"*/{RESULTS_FILE}")):
        try:
            runs.append(read_results(path))
        except BenchError:
            continue
    return runs


def render_summary(runs: list[dict[str, Any]], folder: str, title: str = "medvlbench runs") -> str:
    tables: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(runs, key=lambda r: r["created"], reverse=True):
        for name, task in run["tasks"].items():
            tables.setdefault(name, []).append(
                {
                    "run_id": run["run_id"],
                    "model": run["model"]["name"],
                    "n": task["n_samples"],
                    "metrics": task["metrics"],
                    "metric_names": list(task["metrics"]),
                    "comparable": task["comparable"] and run.get("comparable", True),
                    "flags": task.get("flags", []) + run.get("flags", []),
                    "description": task["config"].get("description", ""),
                }
            )
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(title=title, runs=runs, tables=dict(sorted(tables.items())), folder=folder)


def write_summary(folder: Path, title: str = "medvlbench runs") -> Path:
    runs = collect_runs(folder)
    path = folder / "index.html"
    atomic_write_text(path, render_summary(runs, str(folder), title))
    return path
