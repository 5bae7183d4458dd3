"""Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.interfaces import TRAIN, BenchError, TaskSpec, resolve
from bench.plugins import Registry, registry
from bench.runner import RunConfig, RunOutcome, data_root, dataset_folder, instantiate_model, run
from reports.io import JsonlWriter, atomic_write_text, iter_samples, read_results

if TYPE_CHECKING:
    from reports.compare import Comparison

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
    judge: Mapping[str, Any] | None = None,
    allow_remote_judge: bool = False,
    cache_path: str | Path | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Score predictions made elsewhere, with a task's scorer or with named metrics.

    With named metrics, each metric is either a plain function ``fn(predictions, references) -> float``
    (bootstrapped by recomputing it on resampled samples) or an additive metric
    (:class:`bench.metrics.stats.AdditiveMetric`: per-sample sufficient statistics + an aggregator), which is
    bootstrapped exactly from its statistics; metrics sharing a ``stats_key`` compute the statistics once.
    A metric whose optional tool is missing (:class:`~bench.metrics.unavailable.MetricUnavailable`) is
    reported with ``value``/``ci95`` null and ``"unavailable": reason``.

    ``judge``: LLM-judge options (``model``, ``base_url``, … of :class:`bench.metrics.judge_client.JudgeConfig`;
    the endpoint must be a loopback address unless ``allow_remote_judge``). With a report-generation task the
    CheXprompt aggregates are added to the task's metrics; with named metrics the judge serves the ``chexprompt_*``
    ones. The result then has a ``"judge"`` entry (model, host, prompt version, token usage, cost, failures).
    Verdicts go through the prediction cache (``cache_path``; none with ``use_cache=False``).
    """
    if (task is None) == (not metrics):
        raise BenchError("give exactly one of --task or --metrics")
    reg = registry()
    judge_config = None
    if judge is not None:
        from bench.metrics.judge_client import JudgeConfig

        judge_config = JudgeConfig.from_options(judge, allow_remote_judge)
        judge_config.read_key()
    spec = reg.get("tasks", task) if task is not None else None
    if spec is not None and judge_config is not None:
        from bench.metrics.judging import judged_task

        if not judged_task(spec.protocol):
            raise BenchError(
                f"--judge scores generated reports against their references; task {spec.name} is not a "
                f"report-generation task (protocol {spec.protocol})"
            )
    records = list(iter_samples(predictions))
    if not records:
        raise BenchError(f"{predictions}: no predictions in the file")
    with _judge_for(judge_config, cache_path, use_cache) as judge_obj:
        if spec is not None:
            if spec.factory is None:
                from bench.runner import check_implemented

                check_implemented(spec)
            result = resolve(spec.factory)(spec).score(records, bootstrap, seed)
            if judge_obj is not None:
                from bench.metrics.judging import score_with_judge

                result.update(score_with_judge(records, judge_obj, bootstrap, seed, reg=reg))
        else:
            result = _score_metrics(records, list(metrics or ()), reg, bootstrap, seed, judge_obj)
        if judge_obj is not None and judge_obj.stats.pairs:
            result["judge"] = judge_obj.summary()
    if output is not None:
        out = Path(output)
        atomic_write_text(out / "scores.json", json.dumps(result, indent=2) + "\n")
    return result


@contextlib.contextmanager
def _judge_for(config: Any, cache_path: str | Path | None, use_cache: bool) -> Iterator[Any]:
    """The Judge of ``config`` (None without one), with the prediction cache open while it is used."""
    if config is None:
        yield None
        return
    from bench.cache import PredictionCache, default_cache_path
    from bench.metrics.judging import Judge

    cache = PredictionCache(cache_path or default_cache_path()) if use_cache else None
    try:
        yield Judge.from_config(config, cache)
    finally:
        if cache is not None:
            cache.close()


def _score_metrics(
    records: list[dict[str, Any]], names: list[str], reg: Registry, bootstrap: int, seed: int, judge: Any = None
) -> dict[str, Any]:
    from bench.metrics.scoring import score_metrics

    preds = [r["prediction"] for r in records]
    refs = [r["reference"] for r in records]
    return score_metrics(preds, refs, names, bootstrap, seed, reg=reg, judge=judge)


def compare(baseline: str | Path, new: str | Path, **options: Any) -> Comparison:
    """``bench compare``: run ``new`` against run ``baseline``; options of :func:`reports.compare.compare`.
    Returns a :class:`reports.compare.Comparison` (``exit_code`` 0 or 1; unusable input raises BenchError)."""
    from reports.compare import compare as compare_runs

    return compare_runs(baseline, new, **options)


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


def meddr_bootstrap(
    generator: str,
    data: str = "synthcxr",
    output: str | Path = "bootstrap.jsonl",
    split: str = "train",
    generator_args: Any = None,
    limit: int | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    image_kind: str = "chest X-ray",
    data_root_dir: str | None = None,
    device: str = "auto",
    cache_path: str | Path | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """MedDr's diagnosis-guided bootstrapping: a findings paragraph for each labelled image of a dataset split,
    written by a registered ``generate`` model told the image's labels (``models.reference.meddr_bootstrap``).

    Writes ``output`` (JSONL, one record per report; replaced only when the run completes) and returns
    ``{"written", "skipped", "cached", "generated", "output", ...}``. Generations go through the prediction
    cache (``cache_path``, default ``$BENCH_CACHE_DIR/predictions.sqlite``): a re-run after a crash does not
    call the model again for the finished batches.
    """
    from bench.cache import PredictionCache, default_cache_path

    # plugin code by lazy reference, as the registry reaches it: bench/ imports neither models/ nor tasks/
    mb = resolve("models.reference.meddr_bootstrap")
    log = log or _stderr
    if limit is not None and limit < 1:
        raise BenchError(f"--limit must be a positive number of samples, got {limit}")
    template = resolve("tasks.prompts:BOOTSTRAP_FINDINGS")
    mb.check_options(template, max_new_tokens, batch_size)
    gen_args = mb.generator_arguments(generator_args)
    mb.check_generator(generator)
    ds = registry().get("datasets", data)
    if split not in ds.splits:
        raise BenchError(f"dataset {data!r} has no split {split!r}; valid: {', '.join(ds.splits)}")
    folder = dataset_folder(ds, data_root(data_root_dir))
    out = Path(output)
    mb.check_output_file(out)
    samples = resolve(ds.loader)(folder, split)
    if limit is not None:
        samples = samples[:limit]
    if not any(mb.skip_reason(s) is None for s in samples):
        no_labels = sum(mb.skip_reason(s) == "no_labels" for s in samples)
        raise BenchError(
            f"{mb.NAME}: no sample of {data}:{split} has both an image and labels ({len(samples)} samples, "
            f"{no_labels} without labels); diagnosis-guided bootstrapping needs a labelled image dataset"
        )
    stats = mb.BootstrapStats()
    with PredictionCache(cache_path or default_cache_path()) as cache:
        records = mb.bootstrap_reports(
            generator,
            samples,
            prompt_template=template,
            generator_args=gen_args,
            image_kind=image_kind,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            cache=cache,
            device=device,
            log=log,
            stats=stats,
        )
        writer = JsonlWriter(out)
        try:
            for record in records:
                writer.write(record)
            path = writer.finish()
        finally:
            writer.close()
    return {
        "written": stats.written,
        "skipped": stats.skipped,
        "skipped_no_labels": stats.skipped_no_labels,
        "skipped_no_image": stats.skipped_no_image,
        "cached": stats.cached,
        "generated": stats.generated,
        "generator": stats.generator,
        "generator_fingerprint": stats.generator_fingerprint,
        "output": str(path),
    }


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
    train_args: Mapping[str, Any] | None = None,
) -> Path:
    """Train a trainable model on a dataset's train split (validation on its val split).

    ``train_args`` are model-specific ``fit`` options (e.g. ``encoder=DIR`` for llava-rad, an
    ablation switch, ``paired_fraction=0.1`` for lgdea); the model rejects keys it does not know.
    """
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
    extra = dict(train_args or {})
    clash = sorted(set(extra) & {"preset", "seed", "device", "val_data", "log"})
    if clash:
        raise BenchError(f"--train-args cannot set {', '.join(clash)}: use the command's own options")
    fit_config = {"preset": preset, "seed": seed, "device": device, "val_data": val_samples, "log": log, **extra}
    adapter.fit(train_samples, fit_config)
    adapter.save(out)
    record = {
        "model": model,
        "preset": preset,
        "data": data,
        "seed": seed,
        "device": device,
        "train_args": {k: v for k, v in extra.items()},
        "train_samples": len(train_samples),
        "seconds": round(time.perf_counter() - start, 2),
        "fingerprint": adapter.fingerprint(),
        "model_code": model_code_fingerprint(spec),
    }
    atomic_write_text(out / TRAINING_RECORD, json.dumps(record, indent=2) + "\n")
    log(f"saved {model} checkpoint to {out} ({record['seconds']} s)")
    return out


def model_code_fingerprint(spec: Any) -> str | None:
    """Hash of the source file that defines a model's adapter (its presets live there), or None when
    the factory has no source file: a checkpoint trained by other code is not silently reused."""
    import hashlib
    import inspect

    try:
        source = inspect.getsourcefile(resolve(spec.factory))
    except (TypeError, OSError):
        return None
    if not source or not Path(source).is_file():
        return None
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]


def trained_checkpoint(directory: Path) -> Mapping[str, Any] | None:
    """The training record of a finished checkpoint folder, or None."""
    try:
        return json.loads((directory / TRAINING_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------- demo


# Fine-tuning trains a head per fraction and seed and, in its full variants, the whole encoder: the linear
# probes (plain and Scratch, 1 / 10 / 100 %) cost seconds, so the demo runs them for the steps marked
# ``finetune``; full fine-tuning (plain and Scratch) costs minutes per fraction on a CPU (about 10.5 minutes for the
# six tasks with the tiny clip-baseline on 2 cores), so it runs only with ``all_tasks`` (`bench demo --all-tasks`).
FINETUNE = "finetune"


def demo_tasks(model: str, reg: Registry | None = None, finetune: str = "none") -> list[str]:
    """Every implemented synthcxr task the model's capabilities support; of the fine-tuning tasks, none
    (``finetune="none"``), the linear probes (``"linear"``) or all of them (``"all"``)."""
    if finetune not in ("none", "linear", "all"):
        raise BenchError(f"finetune must be 'none', 'linear' or 'all', got {finetune!r}")
    reg = reg or registry()
    caps = reg.models[model].capabilities

    def wanted(t: TaskSpec) -> bool:
        if t.protocol != FINETUNE or finetune == "all":
            return True
        return finetune == "linear" and t.options.get("mode") != "full"

    return [
        name
        for name, t in sorted(reg.tasks.items())
        if t.dataset == "synthcxr" and t.factory is not None and t.requires <= caps and wanted(t)
    ]


def demo_left_out(reg: Registry | None = None, models: Sequence[str] | None = None) -> list[str]:
    """The synthcxr tasks a plain demo (without ``all_tasks``) leaves out: full fine-tuning."""
    reg = reg or registry()
    plan = demo_plan(reg, models)
    plain = {t for step in plan for t in _step_tasks(step, reg, all_tasks=False)}
    return sorted({t for step in plan for t in _step_tasks(step, reg, all_tasks=True)} - plain)


def _step_tasks(step: DemoStep, reg: Registry, all_tasks: bool) -> list[str]:
    if step.tasks is not None:
        tasks = list(step.tasks)
    else:
        finetune = ("all" if all_tasks else "linear") if step.finetune else "none"
        tasks = demo_tasks(step.model, reg, finetune)
    return [t for t in tasks if t in reg.tasks]


@dataclass(frozen=True)
class DemoStep:
    """One model of the demo: trained (tiny preset) unless ``train`` is false, then evaluated.

    ``"{name}"`` inside ``train_args`` / ``model_args`` values stands for the checkpoint folder of an
    earlier step's model (LLaVA-Rad starts from the trained clip-baseline encoder, LLaVA-RadZ from
    the trained LLaVA-Rad, MedDr's retrieval uses both).
    """

    model: str
    train: bool = True
    train_args: Mapping[str, Any] = field(default_factory=dict)
    model_args: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None  # None: every synthcxr task the model supports (fine-tuning: see below)
    finetune: bool = False  # with tasks=None: also the fine-tuning tasks (full fine-tuning only with all_tasks)


DEMO_PLAN: tuple[DemoStep, ...] = (
    # the encoder baseline runs every fine-tuning protocol: linear probe, full fine-tuning and their Scratch floors
    DemoStep("clip-baseline", finetune=True),
    # LGDEA starts from pretrained encoders (the paper's ViT and ClinicalBERT): here the trained clip-baseline's
    # towers; 8 epochs then reach zs AUC 0.93 / CNR 1.18 (18 epochs from scratch: 0.87 / 1.18)
    DemoStep("lgdea", train_args={"init": "{clip-baseline}", "epochs": 8}),
    # LLaVA-Rad answers every generative synthcxr task (report generation, VQA, diagnosis, generative zero-shot,
    # with and without chain of thought) and, through its encoder, the embedding tasks
    DemoStep("llava-rad", train_args={"encoder": "{clip-baseline}"}),
    # LLaVA-RadZ: its paper's protocols, zero-shot recognition, retrieval and (Table 3) a classifier trained on
    # 1 / 10 / 100 % of the labels, here the linear probe (clip-baseline's step runs the other variants)
    DemoStep(
        "llava-radz",
        train_args={"base": "{llava-rad}"},
        tasks=(
            "synthcxr_zs",
            "synthcxr_zs_5class",
            "synthcxr_retrieval",
            "synthcxr_ft_1pct",
            "synthcxr_ft_10pct",
            "synthcxr_ft_100pct",
        ),
    ),
    DemoStep(
        "meddr-rag",
        train=False,
        model_args={
            "embedder": "clip-baseline",
            "embedder_args": "checkpoint={clip-baseline}",
            "mode": "voting",
        },
        tasks=("synthcxr_diag",),
    ),
)


def _fill(value: Any, checkpoints: Mapping[str, Path]) -> Any:
    if not isinstance(value, str):
        return value
    for name, path in checkpoints.items():
        value = value.replace("{" + name + "}", str(path))
    if "{" in value and "}" in value:
        raise BenchError(f"demo: {value!r} names a model that was not trained earlier in the demo")
    return value


def demo_plan(reg: Registry, models: Sequence[str] | None = None) -> list[DemoStep]:
    """The demo's steps for the registered models: DEMO_PLAN's, then any other trainable model with
    a tiny preset (a plugin's) trained plainly; ``models`` keeps those named (and what they need)."""
    steps = [s for s in DEMO_PLAN if s.model in reg.models]
    planned = {s.model for s in steps}
    for name, spec in sorted(reg.models.items()):
        if name not in planned and TRAIN in spec.capabilities and "tiny" in spec.presets:
            steps.append(DemoStep(name))
    if models:
        unknown = sorted(set(models) - {s.model for s in steps})
        if unknown:
            raise BenchError(f"demo: no demo step for {', '.join(unknown)}; steps: {', '.join(s.model for s in steps)}")
        wanted = set(models)
        for step in reversed(steps):  # what a wanted step refers to is wanted too
            if step.model in wanted:
                refs = json.dumps([dict(step.train_args), dict(step.model_args)])
                wanted |= {s.model for s in steps if "{" + s.model + "}" in refs}
        steps = [s for s in steps if s.model in wanted]
    return steps


def _reusable(ckpt: Path, spec: Any, train_args: Mapping[str, Any]) -> bool:
    """A finished checkpoint trained for this step (same model, preset, arguments, adapter code)."""
    record = trained_checkpoint(ckpt)
    if record is None:
        return False
    return (
        record.get("model") == spec.name
        and record.get("preset") == "tiny"
        and record.get("train_args", {}) == json.loads(json.dumps(dict(train_args)))
        and record.get("model_code") == model_code_fingerprint(spec)
    )


def demo(
    output: str | Path = "runs",
    data_root_dir: str | None = None,
    bootstrap: int = 1000,
    device: str = "auto",
    log: Log | None = None,
    models: Sequence[str] | None = None,
    all_tasks: bool = False,
) -> dict[str, Any]:
    """The main job on the embedded default: train (or reuse) each reference model's tiny preset on
    synthcxr in dependency order (:data:`DEMO_PLAN`) and run every synthcxr task it supports (full
    fine-tuning only with ``all_tasks``); the CLI then writes the leaderboard site over the runs."""
    log = log or _stderr
    reg = registry()
    output = Path(output)
    run_dirs: list[Path] = []
    checkpoints: dict[str, Path] = {}
    timings: dict[str, dict[str, float]] = {}
    for step in demo_plan(reg, models):
        tasks = _step_tasks(step, reg, all_tasks)
        model_args = {k: _fill(v, checkpoints) for k, v in step.model_args.items()}
        start = time.perf_counter()
        if step.train:
            train_args = {k: _fill(v, checkpoints) for k, v in step.train_args.items()}
            ckpt = output / "checkpoints" / f"{step.model}-tiny-synthcxr"
            if _reusable(ckpt, reg.models[step.model], train_args):
                log(f"reusing trained checkpoint {ckpt}")
            else:
                if trained_checkpoint(ckpt) is not None:
                    log(f"{ckpt} was trained with other settings: training it again")
                    shutil.rmtree(ckpt)
                train(
                    step.model, "tiny", "synthcxr", ckpt, device=device, data_root_dir=data_root_dir, log=log,
                    train_args=train_args,
                )  # fmt: skip
            checkpoints[step.model] = ckpt
            model_args = {"checkpoint": str(ckpt), **model_args}
        trained_s = time.perf_counter() - start
        if not tasks:
            continue
        outcome = evaluate(
            step.model,
            tasks,
            log=log,
            model_args=model_args,
            output=str(output),
            bootstrap=bootstrap,
            device=device,
            data_root=data_root_dir,
        )
        run_dirs.append(outcome.run_dir)
        timings[step.model] = {
            "train_s": round(trained_s, 1),
            "evaluate_s": round(time.perf_counter() - start - trained_s, 1),
        }
    if not run_dirs:
        raise BenchError("no trainable model with a 'tiny' preset is registered: nothing to demonstrate")
    left_out = [] if all_tasks else demo_left_out(reg, models)
    if left_out:
        log(f"left out (minutes each on a CPU; `bench demo --all-tasks` runs them): {', '.join(left_out)}")
    return {"runs": [str(d) for d in run_dirs], "seconds": timings, "left_out": left_out}
