"""Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.interfaces import TRAIN, BenchError, resolve
from bench.plugins import Registry, registry
from bench.runner import RunConfig, RunOutcome, data_root, dataset_folder, instantiate_model, run
from reports.io import atomic_write_text, iter_samples, read_results

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- listing


def list_items(kind: str, reg: Registry | None = None) -> list[dict[str, Any]]:
    """Registered datasets/tasks/models/metrics as JSON-ready dicts (imports nothing heavy)."""
    reg = reg or registry()
    if kind == "tasks":
        return [spec.to_json() | {"plugin": reg.owners[("tasks", n)]} for n, spec in sorted(reg.tasks.items())]
    if kind == "models":
        return [
            {
                "name": n,
                "capabilities": sorted(s.capabilities),
                "kind": s.kind,
                "presets": list(s.presets),
                "description": s.description,
                "plugin": reg.owners[("models", n)],
            }
            for n, s in sorted(reg.models.items())
        ]
    if kind == "datasets":
        return [
            {
                "name": n,
                "description": s.description,
                "splits": list(s.splits),
                "needs_root": s.needs_root,
                "folder": s.folder or n,
                "obtain": s.obtain,
                "plugin": reg.owners[("datasets", n)],
            }
            for n, s in sorted(reg.datasets.items())
        ]
    if kind == "metrics":
        return [
            {
                "name": n,
                "higher_is_better": s.higher_is_better,
                "description": s.description,
                "level": s.level,
                "family": s.family,
                "plugin": reg.owners[("metrics", n)],
            }
            for n, s in sorted(reg.metrics.items())
        ]
    raise BenchError(f"unknown kind {kind!r}: choose tasks, models, datasets or metrics")


def list_plugins(reg: Registry | None = None) -> list[dict[str, Any]]:
    reg = reg or registry()
    return [
        {
            "name": p.name,
            "module": p.module,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": p.hooks,
            "blocked": p.blocked,
        }
        for p in reg.plugins
    ]


# --------------------------------------------------------------------------- evaluate / score


def evaluate(model: str, tasks: Sequence[str], log: Log | None = None, **options: Any) -> RunOutcome:
    """Run ``model`` on ``tasks``; options are the fields of :class:`bench.runner.RunConfig`."""
    return run(RunConfig(model=model, tasks=list(tasks), **options), log=log)


def load_results(path: str | Path) -> dict[str, Any]:
    return read_results(path)


def score(
    predictions: str | Path,
    task: str | None = None,
    metrics: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Score predictions made elsewhere, with a task's scorer or with named metrics.

    With named metrics, each metric is either a plain function ``fn(predictions, references) -> float``
    (bootstrapped by recomputing it on resampled samples) or an additive metric
    (:class:`bench.metrics.stats.AdditiveMetric`: per-sample sufficient statistics + an aggregator), which is
    bootstrapped exactly from its statistics; metrics sharing a ``stats_key`` compute the statistics once.
    A metric whose optional tool is missing (:class:`~bench.metrics.unavailable.MetricUnavailable`) is
    reported with ``value``/``ci95`` null and ``"unavailable": reason``.
    """
    if (task is None) == (not metrics):
        raise BenchError("give exactly one of --task or --metrics")
    reg = registry()
    records = list(iter_samples(predictions))
    if not records:
        raise BenchError(f"{predictions}: no predictions in the file")
    if task is not None:
        spec = reg.get("tasks", task)
        if spec.factory is None:
            from bench.runner import check_implemented

            check_implemented(spec)
        result = resolve(spec.factory)(spec).score(records, bootstrap, seed)
    else:
        result = _score_metrics(records, list(metrics or ()), reg, bootstrap, seed)
    if output is not None:
        out = Path(output)
        atomic_write_text(out / "scores.json", json.dumps(result, indent=2) + "\n")
    return result


def _score_metrics(
    records: list[dict[str, Any]], names: list[str], reg: Registry, bootstrap: int, seed: int
) -> dict[str, Any]:
    from bench.metrics.scoring import score_metrics

    preds = [r["prediction"] for r in records]
    refs = [r["reference"] for r in records]
    return score_metrics(preds, refs, names, bootstrap, seed, reg=reg)


# --------------------------------------------------------------------------- data


def data_info(name: str) -> dict[str, Any]:
    """What ``bench data info`` prints: description, where to obtain it, licence, layout."""
    spec = registry().get("datasets", name)
    return {
        "name": spec.name,
        "description": spec.description,
        "obtain": spec.obtain,
        "licence": spec.licence,
        "folder": spec.folder or spec.name,
        "splits": list(spec.splits),
        "needs_root": spec.needs_root,
        "layout": spec.layout,
    }


def data_check(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """Validate a local copy: ``{"dataset", "ok", "splits": {split: n}, "problems": [...]}``.

    ``root`` is the dataset's own folder; by default ``BENCH_DATA_ROOT/<folder>``. Uses the
    dataset's ``check`` when it has one, else loads every split and opens a sample of images.
    """
    from bench.data.common import CheckReport, check_with_loader
    from bench.runner import data_root, dataset_folder

    spec = registry().get("datasets", name)
    if root is not None:
        folder: Path | None = Path(root)
    elif spec.needs_root:
        base = data_root(None)
        if base is None:
            raise BenchError(f"give --root DIR (the folder of {name}) or set BENCH_DATA_ROOT")
        folder = base / (spec.folder or spec.name)
    else:
        folder = dataset_folder(spec, data_root(None))
    if folder is not None and not folder.is_dir():
        report = CheckReport(name, problems=[f"{folder}: no such folder. {spec.obtain}".strip()])
    elif spec.check is not None:
        report = resolve(spec.check)(folder)
    else:
        report = check_with_loader(name, folder, resolve(spec.loader), spec.splits)
    return report.to_json()


# --------------------------------------------------------------------------- train


TRAINING_RECORD = "training.json"


def train(
    model: str,
    preset: str = "tiny",
    data: str = "synthcxr",
    output: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    data_root_dir: str | None = None,
    log: Log | None = None,
) -> Path:
    """Train a trainable model on a dataset's train split (validation on its val split)."""
    log = log or _stderr
    reg = registry()
    spec = reg.get("models", model)
    if TRAIN not in spec.capabilities:
        raise BenchError(f"model {model!r} is not trainable (capabilities: {', '.join(sorted(spec.capabilities))})")
    if spec.presets and preset not in spec.presets:
        raise BenchError(f"model {model!r} has no preset {preset!r}; presets: {', '.join(spec.presets)}")
    ds = reg.get("datasets", data)
    folder = dataset_folder(ds, data_root(data_root_dir))
    out = Path(output) if output else Path("checkpoints") / f"{model}-{preset}-{data}"
    from bench.runner import check_output_dir

    check_output_dir(out)
    loader = resolve(ds.loader)
    train_samples = loader(folder, "train")
    val_samples = loader(folder, "val") if "val" in ds.splits else []
    adapter = instantiate_model(spec, {"preset": preset, "seed": seed}, device)
    log(f"training {model} (preset {preset}) on {data}: {len(train_samples)} train, {len(val_samples)} val samples")
    start = time.perf_counter()
    adapter.fit(train_samples, {"preset": preset, "seed": seed, "device": device, "val_data": val_samples, "log": log})
    adapter.save(out)
    record = {
        "model": model,
        "preset": preset,
        "data": data,
        "seed": seed,
        "device": device,
        "train_samples": len(train_samples),
        "seconds": round(time.perf_counter() - start, 2),
        "fingerprint": adapter.fingerprint(),
    }
    atomic_write_text(out / TRAINING_RECORD, json.dumps(record, indent=2) + "\n")
    log(f"saved {model} checkpoint to {out} ({record['seconds']} s)")
    return out


def trained_checkpoint(directory: Path) -> Mapping[str, Any] | None:
    """The training record of a finished checkpoint folder, or None."""
    try:
        return json.loads((directory / TRAINING_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------- demo


def demo_tasks(model: str, reg: Registry | None = None) -> list[str]:
    """Every implemented synthcxr task the model's capabilities support."""
    reg = reg or registry()
    caps = reg.models[model].capabilities
    return [
        name
        for name, t in sorted(reg.tasks.items())
        if t.dataset == "synthcxr" and t.factory is not None and t.requires <= caps
    ]


def demo(
    output: str | Path = "runs",
    data_root_dir: str | None = None,
    bootstrap: int = 1000,
    device: str = "auto",
    log: Log | None = None,
) -> dict[str, Any]:
    """The main job on the embedded default: train (or reuse) each trainable model's tiny
    preset on synthcxr, run every synthcxr task it supports, write an HTML summary."""
    from reports.summary import write_summary

    log = log or _stderr
    reg = registry()
    output = Path(output)
    run_dirs: list[Path] = []
    for name, spec in sorted(reg.models.items()):
        if TRAIN not in spec.capabilities or "tiny" not in spec.presets:
            continue
        tasks = demo_tasks(name, reg)
        if not tasks:
            continue
        ckpt = output / "checkpoints" / f"{name}-tiny-synthcxr"
        if trained_checkpoint(ckpt) is None:
            train(name, "tiny", "synthcxr", ckpt, device=device, data_root_dir=data_root_dir, log=log)
        else:
            log(f"reusing trained checkpoint {ckpt}")
        outcome = evaluate(
            name,
            tasks,
            log=log,
            model_args={"checkpoint": str(ckpt)},
            output=str(output),
            bootstrap=bootstrap,
            device=device,
            data_root=data_root_dir,
        )
        run_dirs.append(outcome.run_dir)
    if not run_dirs:
        raise BenchError("no trainable model with a 'tiny' preset is registered: nothing to demonstrate")
    summary = write_summary(output)
    log(f"summary: {summary}")
    return {"runs": [str(d) for d in run_dirs], "summary": str(summary)}
