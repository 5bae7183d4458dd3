"""One run's HTML report: configuration, environment, metrics with intervals, per-class breakdown, confusion
matrix and a browser of predictions against references.

Everything shown comes from the run's result files (``results.json``, ``samples/<task>.jsonl``) and is
rendered through jinja2 with autoescaping, so model output is always text. Samples of a dataset read from
local files (MIMIC-CXR, CheXpert, … may be under a data use agreement) are shown only with
``include_samples=True``; the synthetic datasets' samples are shown by default.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from reports.io import RESULTS_FILE, atomic_write_text, iter_samples, read_results

MAX_SAMPLES = 100  # rows of the sample browser per task
THUMBNAIL_PX = 128
ASSETS = ("bench.css", "bench.js")
PUBLIC = 0o644  # pages are served by any static host


def format_number(value: Any) -> str:
    """Numbers as the pages print them: 4 decimals below 10, fewer above."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    if not math.isfinite(value):
        return "–"
    if isinstance(value, int):
        return str(value)
    size = abs(value)
    return f"{value:.1f}" if size >= 100 else f"{value:.2f}" if size >= 10 else f"{value:.4f}"


def html_environment(package: str) -> jinja2.Environment:
    """The jinja2 environment of a package's HTML templates: autoescaping on, undefined names an error, the
    ``num`` filter. Shared by the run report and the leaderboard."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    return env


def environment() -> jinja2.Environment:
    env = html_environment("reports")
    env.globals["zip"] = zip
    env.filters["pretty"] = lambda obj: json.dumps(obj, indent=2, ensure_ascii=False, default=str)
    return env


def copy_assets(folder: Path) -> None:
    """The shared stylesheet and script (``reports/static``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        with resources.as_file(resources.files("reports") / "static" / name) as src:
            shutil.copyfile(src, folder / name)


def synthetic_datasets() -> set[str]:
    """Datasets generated from a seed (no local files, nothing under a data use agreement)."""
    from bench.plugins import registry

    return {name for name, spec in registry().datasets.items() if not spec.needs_root}


# --------------------------------------------------------------------------- breakdowns


def per_class_table(metrics: Mapping[str, Any]) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """(metric names, class names, {class: {metric: value}}) from the metrics' per-class blocks."""
    names, classes = [], []
    table: dict[str, dict[str, Any]] = {}
    for name, m in metrics.items():
        for key in ("per_class", "recall", "per_category"):
            block = m.get(key) if isinstance(m, Mapping) else None
            if not isinstance(block, Mapping):
                continue
            label = name if key != "recall" else f"{name} (recall)"
            names.append(label)
            for cls, v in block.items():
                if cls not in table:
                    classes.append(cls)
                    table[cls] = {}
                table[cls][label] = v.get("value") if isinstance(v, Mapping) else v
    return names, classes, table


@dataclass
class Confusion:
    kind: str  # "multiclass" (rows: reference, columns: prediction) or "multilabel" (per-class counts)
    rows: list[str]
    columns: list[str]
    counts: list[list[int]]
    note: str = ""


def _scores(records: Sequence[Mapping[str, Any]], classes: list[str]) -> np.ndarray | None:
    if not all(isinstance(r.get("prediction"), Mapping) for r in records):
        return None
    try:
        return np.array([[float(r["prediction"][c]) for c in classes] for r in records], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None


def _parsed_labels(records: Sequence[Mapping[str, Any]]) -> list[list[str]] | None:
    parsed = [r.get("parsed") for r in records]
    if not all(isinstance(p, Mapping) and isinstance(p.get("labels"), list) for p in parsed):
        return None
    return [list(p["labels"]) for p in parsed]  # type: ignore[index]


def confusion(records: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> Confusion | None:
    """The confusion matrix of a classification task, rebuilt from its records and recorded configuration."""
    from bench.metrics.classification import binary_label_matrix, zscore_columns  # scikit-learn: only when needed

    classes = [str(c) for c in config.get("classes") or ()]
    if not classes or not records:
        return None
    refs = [r.get("reference") for r in records]
    scores, parsed = _scores(records, classes), _parsed_labels(records)
    if all(isinstance(ref, str) for ref in refs):
        if scores is not None:
            if config.get("normalize") == "zscore":
                scores = zscore_columns(scores)
            predicted = [classes[int(i)] for i in scores.argmax(axis=1)]
        elif parsed is not None:
            predicted = [p[0] if len(p) == 1 else ("(none)" if not p else "(several)") for p in parsed]
        else:
            return None
        columns = classes + [c for c in ("(none)", "(several)") if c in predicted]
        counts = [[sum(1 for r, p in zip(refs, predicted, strict=True) if r == a and p == b) for b in columns]
                  for a in classes]  # fmt: skip
        return Confusion("multiclass", classes, columns, counts)
    if all(isinstance(ref, Mapping) for ref in refs):
        y = binary_label_matrix(
            refs, classes, str(config.get("uncertain", "positive")), str(config.get("missing", "negative"))
        )
        if scores is not None:
            threshold = config.get("threshold", 0.5)
            if not isinstance(threshold, (int, float)):
                return None
            pred = scores >= float(threshold)
            note = f"decision: probability >= {threshold:g}"
        elif parsed is not None:
            pred = np.array([[c in p for c in classes] for p in parsed], dtype=bool)
            note = "decision: labels parsed from the answer"
        else:
            return None
        note += (
            f"; uncertain labels as {config.get('uncertain', 'positive')}, "
            f"unmentioned as {config.get('missing', 'negative')}"
        )
        counts = []
        for j in range(len(classes)):
            ok = np.isfinite(y[:, j])
            t, p = y[ok, j].astype(bool), pred[ok, j]
            counts.append([int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum()), int((~t & ~p).sum())])
        return Confusion("multilabel", classes, ["TP", "FP", "FN", "TN"], counts, note)
    return None


# --------------------------------------------------------------------------- samples


def _short(value: Any) -> str:
    """A record field as readable text (maps and long lists summarised)."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        return f"[{len(value)}×{len(value[0])} map]"
    if isinstance(value, Mapping):
        return "\n".join(f"{k}: {_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value[:20]) + (" …" if len(value) > 20 else "")
    return str(value)


def _image_of(record: Mapping[str, Any]) -> str | None:
    inputs = record.get("inputs") or {}
    image = inputs.get("image")
    if image is None and isinstance(inputs.get("images"), list) and inputs["images"]:
        image = inputs["images"][0]
    return image if isinstance(image, str) and Path(image).is_file() else None


def _thumbnail(path: str, folder: Path, base: str) -> str | None:
    """A small JPEG of the image in ``folder`` (named by its path, so runs on the same images share it);
    its URL is ``base`` + name."""
    from PIL import Image

    name = hashlib.sha256(path.encode()).hexdigest()[:16] + ".jpg"
    target = folder / name
    if not target.exists():
        try:
            with Image.open(path) as im:
                im = im.convert("L" if im.mode in ("L", "I", "I;16", "1") else "RGB")
                im.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
                folder.mkdir(parents=True, exist_ok=True)
                im.save(target, quality=80)
        except OSError:
            return None
    return base + name


@dataclass
class SampleRow:
    id: str
    image: str | None
    inputs: str
    prediction: str
    reference: str
    scores: str


@dataclass
class TaskReport:
    name: str
    result: Mapping[str, Any]
    description: str
    metrics: list[tuple[str, Mapping[str, Any], bool | None, str]]  # name, metric, higher is better, description
    per_class: tuple[list[str], list[str], dict[str, dict[str, Any]]]
    confusion: Confusion | None
    samples: list[SampleRow] = field(default_factory=list)
    samples_total: int = 0
    samples_hidden: str = ""


def _sample_rows(records: Sequence[Mapping[str, Any]], images: Path, image_base: str) -> list[SampleRow]:
    rows = []
    for r in records[:MAX_SAMPLES]:
        inputs = {k: v for k, v in (r.get("inputs") or {}).items() if k not in ("image", "images")}
        image = _image_of(r)
        extra = {"parsed answer": r["parsed"].get("answer")} if isinstance(r.get("parsed"), Mapping) else {}
        rows.append(
            SampleRow(
                id=str(r.get("id")),
                image=_thumbnail(image, images, image_base) if image else None,
                inputs=_short({**inputs, **extra}),
                prediction=_short(r.get("prediction")),
                reference=_short(r.get("reference")),
                scores=_short(r.get("scores") or {}),
            )
        )
    return rows


def _task_report(
    run_dir: Path, name: str, result: Mapping[str, Any], images: tuple[Path, str], show: bool, reg: Any
) -> TaskReport:
    metrics = []
    for m, value in result["metrics"].items():
        spec = reg.metrics.get(m)
        metrics.append((m, value, spec.higher_is_better if spec else None, spec.description if spec else ""))
    task_spec = reg.tasks.get(name)
    path = run_dir / result["samples_file"]
    records = list(iter_samples(path, validate=False)) if path.is_file() else []
    report = TaskReport(
        name=name,
        result=result,
        description=task_spec.description if task_spec else "",
        metrics=metrics,
        per_class=per_class_table(result["metrics"]),
        confusion=confusion(records, result.get("config", {})),
        samples_total=len(records),
    )
    if not path.is_file():
        report.samples_hidden = f"no samples file at {path}"
    elif show:
        report.samples = _sample_rows(records, *images)
    else:
        report.samples_hidden = (
            f"{len(records)} samples of dataset {result['dataset']} are not shown: it is read from local files that "
            "may be under a data use agreement (MIMIC-CXR and CheXpert forbid redistribution). Build the report with "
            "--include-samples to embed its images and texts."
        )
    return report


def render_run_report(
    run_dir: str | Path,
    out_dir: str | Path,
    include_samples: bool = False,
    asset_base: str = "",
    home: str | None = None,
    images: tuple[Path, str] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` for one run. ``asset_base`` is where the page finds bench.css/bench.js
    (default: copied beside it); ``home`` links back to a leaderboard; ``images`` = (folder, URL prefix) of
    the sample thumbnails (default ``out_dir/img``, shared by the runs of a leaderboard)."""
    from bench.plugins import registry

    run_dir = Path(run_dir)
    if run_dir.name == RESULTS_FILE:
        run_dir = run_dir.parent
    results = read_results(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not asset_base:
        copy_assets(out / "static")
        asset_base = "static/"
    reg = registry()
    synthetic = synthetic_datasets()
    tasks = [
        _task_report(
            run_dir, name, t, images or (out / "img", "img/"), include_samples or t["dataset"] in synthetic, reg
        )
        for name, t in results["tasks"].items()
    ]
    html = (
        environment()
        .get_template("run_report.html.j2")
        .render(results=results, tasks=tasks, asset_base=asset_base, home=home, include_samples=include_samples)
    )
    path = out / "index.html"
    atomic_write_text(path, html, mode=PUBLIC)
    return path
