"""Compare a new run with a baseline run: the CI regression gate behind ``bench compare``.

Matching: every task of the baseline must be in the new run, on the same data (equal dataset
fingerprints), and both samples files must hold the same sample ids with the same references. For each
metric the paired bootstrap of ``new - baseline`` draws sample ids once per resample and applies them to
both runs (:mod:`bench.metrics.stats`). How a metric is recomputed on a resample, first route that applies
and whose value on all samples reproduces the value in ``results.json`` for both runs:

1. ``additive``: a registered metric with per-sample sufficient statistics (BLEU, ROUGE-L, CIDEr, METEOR,
   the CheXbert and rule-labeler F1s, RadGraph F1, RadCliQ, sacrebleu): statistics computed once from each
   record's prediction and reference; a resample is one weighted sum of them. Exact.
2. ``per-sample mean``: a registered metric of level "sample" (the mean of a per-sample value, e.g. CNR):
   each record's value once, a resample's value is the mean of its defined values. Exact.
3. ``task``: everything else (AUC, F1, ACC under the task's threshold and uncertain-label policy; the
   retrieval ranks; labels parsed from generated answers; the VQA metrics): the task's own scorer, found
   through the plugin registry, is run on the resampled records. Exact by construction; one scorer call
   per resample and run.

A regression: a metric moves in its worse direction with a p-value below ``alpha`` (Holm-adjusted over all
metrics compared, unless ``correction="none"``), or it moves in its worse direction by more than
``max_drop`` (in the metric's own units) whatever the p-value.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.interfaces import BenchError, resolve
from bench.metrics.stats import (
    DefinedMean,
    PairedComparison,
    align_by_id,
    is_additive,
    paired_bootstrap,
    paired_bootstrap_statistics,
)
from bench.metrics.unavailable import MetricUnavailable
from reports.io import RESULTS_FILE, iter_samples, read_results

CORRECTIONS = ("holm", "none")
FORMATS = ("text", "markdown", "json")
# what makes a route unable to read a task's records (it is then skipped for the next one)
_ROUTE_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, BenchError, MetricUnavailable)


@dataclass
class MetricComparison:
    """One metric of one task: ``new - baseline`` with its paired bootstrap interval and p-value."""

    task: str
    metric: str
    higher_is_better: bool
    baseline: float | None
    new: float | None
    difference: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    n: int = 0
    method: str = ""
    regression: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = [out.pop("low"), out.pop("high")]
        return out

    @property
    def worsening(self) -> float:
        """How much worse the new run is, in the metric's units (negative: better)."""
        if self.difference is None or not math.isfinite(self.difference):
            return 0.0
        return -self.difference if self.higher_is_better else self.difference


@dataclass
class RunInfo:
    path: str
    run_id: str
    model: str
    fingerprint: str
    comparable: bool

    @classmethod
    def of(cls, path: Path, results: Mapping[str, Any]) -> RunInfo:
        return cls(
            str(path),
            results["run_id"],
            results["model"]["name"],
            results["model"]["fingerprint"],
            bool(results.get("comparable", True)),
        )


@dataclass
class Comparison:
    baseline: RunInfo
    new: RunInfo
    alpha: float
    max_drop: float | None
    correction: str
    resamples: int
    seed: int
    rows: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricComparison]:
        return [r for r in self.rows if r.regression]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": "regression" if self.regressions else "no regression",
            "exit_code": self.exit_code,
            "alpha": self.alpha,
            "max_drop": self.max_drop,
            "correction": self.correction,
            "resamples": self.resamples,
            "seed": self.seed,
            "baseline": asdict(self.baseline),
            "new": asdict(self.new),
            "comparisons": [r.to_json() for r in self.rows],
            "notes": list(self.notes),
        }

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps(self.to_json(), indent=2)
        if fmt == "markdown":
            return _markdown(self)
        if fmt == "text":
            return _text(self)
        raise BenchError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- loading


def _load(path: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(path)
    run_dir = path.parent if path.name == RESULTS_FILE else path
    return run_dir, read_results(path)


def _records(run_dir: Path, task: Mapping[str, Any]) -> list[dict[str, Any]]:
    path = run_dir / task["samples_file"]
    if not path.is_file():
        raise BenchError(
            f"{path}: samples file missing; the paired test needs the per-sample records of task {task['task']} "
            "(bench run writes them beside results.json)"
        )
    return list(iter_samples(path))


def _check_inputs(base: Mapping[str, Any], new: Mapping[str, Any], base_dir: Path, new_dir: Path) -> None:
    missing = sorted(set(base["tasks"]) - set(new["tasks"]))
    if missing:
        raise BenchError(f"{new_dir}: the new run lacks task(s) {', '.join(missing)} of the baseline {base_dir}")
    differ = [
        f"{name} ({t['dataset_fingerprint'][:12]} vs {new['tasks'][name]['dataset_fingerprint'][:12]})"
        for name, t in base["tasks"].items()
        if t["dataset_fingerprint"] != new["tasks"][name]["dataset_fingerprint"]
    ]
    if differ:
        raise BenchError(
            "the runs were evaluated on different data (dataset fingerprints differ; e.g. another --limit, split "
            f"or dataset version): {', '.join(differ)}"
        )


# --------------------------------------------------------------------------- routes


@dataclass
class _Pair:
    """Both runs' records of one task, aligned by sample id."""

    task: str
    records_a: list[dict[str, Any]]  # new
    records_b: list[dict[str, Any]]  # baseline

    @property
    def n(self) -> int:
        return len(self.records_a)

    def predictions(self, which: str) -> list[Any]:
        return [r["prediction"] for r in (self.records_a if which == "a" else self.records_b)]

    @property
    def references(self) -> list[Any]:
        return [r["reference"] for r in self.records_a]


def _pair(task: str, new_records: list[dict[str, Any]], base_records: list[dict[str, Any]]) -> _Pair:
    rows_a, rows_b = align_by_id([str(r["id"]) for r in new_records], [str(r["id"]) for r in base_records])
    if not (len(rows_a) == len(new_records) == len(base_records)):
        raise BenchError(
            f"task {task}: the runs hold different sample ids ({len(base_records)} in the baseline, "
            f"{len(new_records)} in the new run, {len(rows_a)} shared)"
        )
    recs_a = [new_records[i] for i in rows_a]
    recs_b = [base_records[i] for i in rows_b]
    for ra, rb in zip(recs_a, recs_b, strict=True):
        if ra["reference"] != rb["reference"]:
            raise BenchError(f"task {task}: sample {ra['id']!r} has different references in the two runs")
    return _Pair(task, recs_a, recs_b)


def _close(x: float | None, y: float | None) -> bool:
    if x is None or y is None or not math.isfinite(x):
        return x is None and y is None
    return abs(x - y) <= 1e-6 * max(1.0, abs(y))


def _additive_route(fn: Any, pair: _Pair, resamples: int, seed: int) -> PairedComparison:
    refs = pair.references
    stats_a = np.asarray(fn.stats(pair.predictions("a"), refs), dtype=np.float64).reshape(pair.n, -1)
    stats_b = np.asarray(fn.stats(pair.predictions("b"), refs), dtype=np.float64).reshape(pair.n, -1)
    return paired_bootstrap(fn, stats_a, stats_b, resamples, seed)


def _per_sample_route(fn: Any, pair: _Pair, resamples: int, seed: int) -> PairedComparison:
    refs = pair.references

    def values(preds: list[Any]) -> np.ndarray:
        return DefinedMean.statistics([float(fn([p], [r])) for p, r in zip(preds, refs, strict=True)])

    return paired_bootstrap(
        DefinedMean(), values(pair.predictions("a")), values(pair.predictions("b")), resamples, seed
    )


def _task_scorer(task: str, reg: Any, seed: int) -> Callable[[Sequence[Mapping[str, Any]]], dict[str, float | None]]:
    spec = reg.get("tasks", task)
    if spec.factory is None:
        raise BenchError(f"task {task}: its protocol is not implemented here, so its metrics cannot be recomputed")
    scorer = resolve(spec.factory)(spec)

    def score(records: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
        out = {}
        for name, m in scorer.score(records, 0, seed).items():
            m = m.to_json() if hasattr(m, "to_json") else m
            value = m.get("value") if isinstance(m, Mapping) else None
            out[name] = None if value is None or not math.isfinite(value) else float(value)
        return out

    return score


def _recorded(results: Mapping[str, Any], task: str, metric: str) -> float | None:
    return results["tasks"][task]["metrics"][metric]["value"]


def _compare_task(
    pair: _Pair,
    names: list[str],
    base: Mapping[str, Any],
    new: Mapping[str, Any],
    reg: Any,
    resamples: int,
    seed: int,
) -> dict[str, tuple[PairedComparison, str]]:
    out: dict[str, tuple[PairedComparison, str]] = {}
    rest: list[str] = []
    for name in names:
        spec = reg.metrics.get(name)
        fn = resolve(spec.fn) if spec is not None else None
        routes: list[tuple[str, Callable[[], PairedComparison]]] = []
        if fn is not None and is_additive(fn):
            routes.append(("additive", lambda fn=fn: _additive_route(fn, pair, resamples, seed)))
        if fn is not None and spec.level == "sample":
            routes.append(("per-sample mean", lambda fn=fn: _per_sample_route(fn, pair, resamples, seed)))
        for method, run in routes:
            try:
                result = run()
            except _ROUTE_ERRORS:
                continue
            if _close(result.value_a, _recorded(new, pair.task, name)) and _close(
                result.value_b, _recorded(base, pair.task, name)
            ):
                out[name] = (result, method)
                break
        else:
            rest.append(name)
    if rest:
        score = _task_scorer(pair.task, reg, seed)
        for name, run, records in (("new", new, pair.records_a), ("baseline", base, pair.records_b)):
            full = score(records)
            bad = [m for m in rest if not _close(full.get(m), _recorded(run, pair.task, m))]
            if bad:
                detail = ", ".join(
                    f"{m}: {_recorded(run, pair.task, m)} recorded, "
                    + (
                        "not computable here (a tool or local weights missing?)"
                        if full.get(m) is None
                        else f"{full[m]} recomputed"
                    )
                    for m in bad
                )
                raise BenchError(
                    f"task {pair.task}: the {name} run's samples file does not reproduce its results.json "
                    f"({detail}); the files do not belong together or were scored by another version"
                )
        recs_a, recs_b = pair.records_a, pair.records_b
        results = paired_bootstrap_statistics(
            lambda idx: score([recs_a[i] for i in idx]),
            lambda idx: score([recs_b[i] for i in idx]),
            rest,
            pair.n,
            resamples,
            seed,
        )
        out.update({name: (results[name], "task") for name in rest})
    return out


# --------------------------------------------------------------------------- decision


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _decide(rows: list[MetricComparison], alpha: float, max_drop: float | None, correction: str) -> None:
    tested = [r for r in rows if r.p_value is not None]
    adjusted = holm([r.p_value for r in tested]) if correction == "holm" else [r.p_value for r in tested]
    for r, p in zip(tested, adjusted, strict=True):
        r.p_adjusted = p
    for r in rows:
        worse = r.worsening
        reasons = []
        if worse > 0 and r.p_adjusted is not None and r.p_adjusted < alpha:
            reasons.append(f"significant drop (p={r.p_adjusted:.3g} < {alpha:g})")
        if worse > 0 and max_drop is not None and worse > max_drop:
            reasons.append(f"drop {worse:.4g} > max-drop {max_drop:g}")
        r.regression = bool(reasons)
        if reasons:
            r.reason = "; ".join(reasons)
        elif worse > 0:
            r.reason = "lower, within noise" if r.higher_is_better else "higher, within noise"
        elif r.difference:
            r.reason = "better"
        else:
            r.reason = "unchanged"


def _check_options(alpha: float, max_drop: float | None, resamples: int, correction: str) -> None:
    if not 0 < alpha < 1:
        raise BenchError(f"--alpha must be between 0 and 1, got {alpha}")
    if max_drop is not None and max_drop < 0:
        raise BenchError(f"--max-drop must be 0 or more (in the metric's units), got {max_drop}")
    if correction not in CORRECTIONS:
        raise BenchError(f"--correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    if resamples < 1 or 1 / (resamples + 1) >= alpha:
        raise BenchError(
            f"--resamples {resamples}: the smallest p-value a paired bootstrap can give is 1/(resamples+1), "
            f"which must be below --alpha {alpha}; use at least {math.ceil(1 / alpha)} resamples"
        )


def _select(
    base: Mapping[str, Any], new: Mapping[str, Any], new_dir: Path, wanted: list[str], reg: Any, notes: list[str]
) -> list[tuple[str, list[str]]]:
    """(task, metric names) to compare: the baseline's metrics (or ``wanted``) that have a value there; one
    missing or unavailable in the new run, or not registered (direction unknown), is unusable input."""
    if wanted:
        known = {m for t in base["tasks"].values() for m in t["metrics"]}
        unknown = [m for m in wanted if m not in known]
        if unknown:
            raise BenchError(
                f"--metric {', '.join(unknown)}: not among the baseline's metrics ({', '.join(sorted(known))})"
            )
    selected = []
    for task, base_task in base["tasks"].items():
        names = []
        for name, m in base_task["metrics"].items():
            if wanted and name not in wanted:
                continue
            if m["value"] is None:
                notes.append(f"{task} {name}: not compared, unavailable in the baseline ({m.get('unavailable')})")
                continue
            nm = new["tasks"][task]["metrics"].get(name)
            if nm is None or nm["value"] is None:
                why = "missing" if nm is None else f"unavailable ({nm.get('unavailable') or 'no value'})"
                raise BenchError(f"task {task}: metric {name} is {why} in the new run {new_dir}")
            if name not in reg.metrics:
                raise BenchError(f"task {task}: metric {name} is not registered here; its direction is unknown")
            names.append(name)
        if names:
            selected.append((task, names))
    if not selected:
        raise BenchError("no metric to compare (none selected, or all unavailable in the baseline)")
    return selected


def compare(
    baseline: str | Path,
    new: str | Path,
    metrics: Sequence[str] | None = None,
    max_drop: float | None = None,
    alpha: float = 0.05,
    resamples: int = 1000,
    seed: int = 0,
    correction: str = "holm",
    reg: Any = None,
) -> Comparison:
    """Compare run ``new`` with run ``baseline`` (run folders or their results.json)."""
    _check_options(alpha, max_drop, resamples, correction)
    if reg is None:
        from bench.plugins import registry

        reg = registry()
    base_dir, base = _load(baseline)
    new_dir, new_res = _load(new)
    _check_inputs(base, new_res, base_dir, new_dir)
    out = Comparison(
        RunInfo.of(base_dir, base), RunInfo.of(new_dir, new_res), alpha, max_drop, correction, resamples, seed
    )
    for info in (out.baseline, out.new):
        if not info.comparable:
            out.notes.append(f"{info.run_id} is marked not comparable (e.g. --limit); both runs use the same samples")
    selected = _select(base, new_res, new_dir, list(dict.fromkeys(metrics or ())), reg, out.notes)
    tests = sum(len(names) for _, names in selected)
    if correction == "holm" and tests / (resamples + 1) >= alpha:
        raise BenchError(
            f"{tests} metrics are compared with Holm's correction: the smallest adjusted p-value "
            f"{resamples} resamples can give is {tests}/(resamples+1) >= --alpha {alpha}; use --resamples "
            f"{math.ceil(tests / alpha)} or more, or fewer --metric"
        )
    for task, names in selected:
        base_task, new_task = base["tasks"][task], new_res["tasks"][task]
        pair = _pair(task, _records(new_dir, new_task), _records(base_dir, base_task))
        results = _compare_task(pair, names, base, new_res, reg, resamples, seed)
        for name in names:
            res, method = results[name]
            out.rows.append(
                MetricComparison(
                    task=task,
                    metric=name,
                    higher_is_better=reg.metrics[name].higher_is_better,
                    baseline=res.value_b,
                    new=res.value_a,
                    difference=res.difference,
                    low=res.low,
                    high=res.high,
                    p_value=res.p_value,
                    n=res.n,
                    method=method,
                )
            )
    _decide(out.rows, alpha, max_drop, correction)
    return out


# --------------------------------------------------------------------------- rendering


def _f(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def _ci(r: MetricComparison) -> str:
    return f"[{_f(r.low, '+.4f')}, {_f(r.high, '+.4f')}]" if r.low is not None else "–"


def _verdict(c: Comparison) -> str:
    n = len(c.regressions)
    if n:
        return f"REGRESSION: {n} of {len(c.rows)} metric(s) worse"
    return f"no regression ({len(c.rows)} metric(s) compared)"


def _settings(c: Comparison) -> str:
    corr = ", Holm-adjusted" if c.correction == "holm" else ""
    drop = f", max-drop {c.max_drop:g}" if c.max_drop is not None else ""
    return f"paired bootstrap, {c.resamples} resamples, seed {c.seed}, alpha {c.alpha:g}{corr}{drop}"


def _text(c: Comparison) -> str:
    header = ["task", "metric", "baseline", "new", "diff", "95% CI of diff", "p", "method", "verdict"]
    body = [
        [
            r.task,
            f"{r.metric} {'↑' if r.higher_is_better else '↓'}",
            _f(r.baseline),
            _f(r.new),
            _f(r.difference, "+.4f"),
            _ci(r),
            _f(r.p_adjusted, ".3g"),
            r.method,
            ("REGRESSION: " if r.regression else "") + r.reason,
        ]
        for r in c.rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        f"bench compare: {_verdict(c)}",
        f"baseline: {c.baseline.run_id} ({c.baseline.model}, {c.baseline.fingerprint[:12]})",
        f"new:      {c.new.run_id} ({c.new.model}, {c.new.fingerprint[:12]})",
        _settings(c),
        "",
    ]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]]
    lines += [f"note: {n}" for n in c.notes]
    return "\n".join(lines)


def _md(text: str) -> str:
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("`", "'")


def _markdown(c: Comparison) -> str:
    title = "❌ Regression" if c.regressions else "✅ No regression"
    lines = [
        f"### bench compare: {title}",
        "",
        f"**Baseline** `{_md(c.baseline.run_id)}` ({_md(c.baseline.model)}, `{c.baseline.fingerprint[:12]}`) → "
        f"**new** `{_md(c.new.run_id)}` ({_md(c.new.model)}, `{c.new.fingerprint[:12]}`)",
        "",
        "| task | metric | baseline | new | Δ (95 % CI) | p | verdict |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for r in c.rows:
        verdict = f"**regression**: {_md(r.reason)}" if r.regression else _md(r.reason)
        lines.append(
            f"| {_md(r.task)} | {_md(r.metric)} {'↑' if r.higher_is_better else '↓'} | {_f(r.baseline)} | "
            f"{_f(r.new)} | {_f(r.difference, '+.4f')} {_ci(r)} | {_f(r.p_adjusted, '.3g')} | {verdict} |"
        )
    lines += ["", f"<sub>{_md(_settings(c))}; {_verdict(c)}</sub>"]
    lines += [f"\n> {_md(n)}" for n in c.notes]
    return "\n".join(lines) + "\n"
