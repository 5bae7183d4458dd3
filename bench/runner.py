"""Model × tasks → per-sample records → metrics → result files.

Everything that can be checked is checked before any work starts (names, capabilities,
implemented protocols, dataset presence, writable output, cache readable). Records are
streamed to ``samples/<task>.jsonl.partial`` as they are produced; model outputs go to the
prediction cache one batch at a time; ``results.json`` is rewritten after each task.

With a judge (``RunConfig.judge``, the CLI's ``--judge``), every report-generation task is also scored with the
CheXprompt aggregates (:mod:`bench.metrics.judging`); the task result records the judge (model, host, prompt
version, token usage, cost, failures). The judge's endpoint is checked (privacy rule, key) before any work.

Resume: the same command finds the unfinished run folder with the same configuration hash
and continues in it: finished tasks are kept, the task in flight is redone with every
finished model call served from the cache.

Under ``torchrun`` / ``accelerate launch`` (:mod:`bench.distributed`) every rank builds the model on its
own device and computes its share of each task (whole batches, dealt round-robin); rank 0 gathers the
records (or, for tasks whose records depend on every sample, the model outputs, and predicts from them),
scores and writes. The cache keys do not depend on the rank, so a run interrupted with N processes resumes
with any other number. ``batch_size="auto"`` (:class:`bench.cached_model.BatchPolicy`) halves model calls on
out-of-memory and records the size that fitted.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import __version__, distributed
from bench.cache import PredictionCache, default_cache_path
from bench.cached_model import (
    AUTO_BATCH_START,
    EMBED_SCOPE,
    BatchPolicy,
    CachedModel,
    CallStats,
    LazyModel,
    RunMemo,
)
from bench.distributed import DistContext
from bench.interfaces import (
    BenchError,
    DatasetSpec,
    ModelAdapter,
    ModelSpec,
    ProtocolNotImplemented,
    Sample,
    Task,
    TaskSpec,
    resolve,
    stable_hash,
)
from bench.metrics.judge import prompt_version
from bench.metrics.judge_client import JudgeConfig
from bench.metrics.judging import Judge, judged_task, score_with_judge
from bench.plugins import Registry, registry
from reports.io import RESULTS_FILE, SampleWriter, iter_samples, read_results, write_results
from reports.schema import SCHEMA_VERSION
from reports.text import metric_text

PACKAGES = ("torch", "numpy", "scikit-learn", "transformers", "pluggy", "tokenizers", "pillow")


@dataclass
class RunConfig:
    model: str
    tasks: list[str]
    model_args: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    output: str = "runs"
    limit: int | None = None
    batch_size: int | str = 32  # or "auto": the largest that fits, found by halving on out-of-memory
    device: str = "auto"
    seed: int = 0
    use_cache: bool = True
    cache_path: str | None = None
    bootstrap: int = 1000
    run_id: str | None = None
    progress: bool = True
    judge: dict[str, Any] | None = None  # --judge options (model, base_url, ...): CheXprompt on rrg tasks
    allow_remote_judge: bool = False


@dataclass
class Plan:
    config: RunConfig
    model_spec: ModelSpec
    tasks: list[TaskSpec]
    datasets: dict[str, DatasetSpec]
    judge: JudgeConfig | None = None
    dist: DistContext = field(default_factory=DistContext)
    device: str = "auto"  # this rank's device

    @property
    def batch_size(self) -> int:
        """The batch the tasks are given (with ``auto``, the first size tried)."""
        size = self.config.batch_size
        return AUTO_BATCH_START if size == "auto" else int(size)


# --------------------------------------------------------------------------- checks


def data_root(explicit: str | None) -> Path | None:
    root = explicit or os.environ.get("BENCH_DATA_ROOT")
    return Path(root).expanduser() if root else None


def dataset_folder(spec: DatasetSpec, root: Path | None) -> Path | None:
    """The dataset's own folder, or None for generated datasets without a data root."""
    if root is None:
        if spec.needs_root:
            raise BenchError(
                f"dataset {spec.name!r} is read from local files: pass --data-root DIR (or set "
                f"BENCH_DATA_ROOT) with the dataset in DIR/{spec.folder or spec.name}/. {spec.obtain}".strip()
            )
        return None
    folder = root / (spec.folder or spec.name)
    if spec.needs_root and not folder.is_dir():
        raise BenchError(f"dataset {spec.name!r} not found: expected its folder at {folder}. {spec.obtain}".strip())
    return folder


def check_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise BenchError(f"cannot write to output folder {path}: {exc.strerror or exc}") from None


def check_capabilities(model: ModelSpec, task: TaskSpec) -> None:
    missing = sorted(task.requires - model.capabilities)
    if missing:
        raise BenchError(
            f"model {model.name!r} cannot run task {task.name!r}: the task needs capability "
            f"{', '.join(missing)}, the model has {', '.join(sorted(model.capabilities)) or 'none'}"
        )


def check_implemented(task: TaskSpec) -> None:
    if task.factory is None:
        raise ProtocolNotImplemented(
            f"task {task.name!r}: protocol {task.protocol!r} not implemented yet in this version of "
            "medvlbench; it is registered so that its name, dataset and metrics are fixed"
        )


def make_plan(config: RunConfig, reg: Registry | None = None) -> Plan:
    reg = reg or registry()
    if config.limit is not None and config.limit < 1:
        raise BenchError(f"--limit must be a positive number of samples, got {config.limit}")
    if config.batch_size != "auto" and (
        not isinstance(config.batch_size, int) or isinstance(config.batch_size, bool) or config.batch_size < 1
    ):
        raise BenchError(f"--batch-size must be a positive integer or 'auto', got {config.batch_size!r}")
    if config.bootstrap < 0:
        raise BenchError(f"--bootstrap must be 0 (off) or a number of resamples, got {config.bootstrap}")
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        raise BenchError(f"--device must be auto, cpu or cuda[:N], got {config.device!r}")
    if not config.tasks:
        raise BenchError("no task given: pass --task NAME[,NAME...] (`bench list tasks` shows them)")
    model_spec = reg.get("models", config.model)
    tasks = [reg.get("tasks", t) for t in config.tasks]
    root = data_root(config.data_root)
    datasets: dict[str, DatasetSpec] = {}
    for task in tasks:
        check_capabilities(model_spec, task)
        check_implemented(task)
        ds = reg.get("datasets", task.dataset)
        dataset_folder(ds, root)  # a missing folder is refused here; malformed files by the reader
        datasets[ds.name] = ds
    judge = plan_judge(config.judge, config.allow_remote_judge, tasks) if config.judge is not None else None
    check_output_dir(Path(config.output))
    return Plan(config, model_spec, tasks, datasets, judge, device=config.device)


def plan_judge(options: Mapping[str, Any], allow_remote: bool, tasks: Sequence[TaskSpec]) -> JudgeConfig:
    """The judge's configuration, checked before any work: options, privacy rule, key, tasks it applies to."""
    config = JudgeConfig.from_options(options, allow_remote)
    config.read_key()
    if not any(judged_task(t.protocol) for t in tasks):
        names = ", ".join(f"{t.name} ({t.protocol})" for t in tasks)
        raise BenchError(
            f"--judge scores generated reports against their references, and none of the tasks does report "
            f"generation: {names}. Judge a report-generation task such as mimic_rrg or synthcxr_rrg"
        )
    return config


# --------------------------------------------------------------------------- helpers


def environment(device: str) -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "git_commit": git_commit(),
        "device": device,
        "harness_version": __version__,
        "hostname": platform.node(),
    }


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_description(model: ModelAdapter, requested: str) -> str:
    desc = model.describe().get("device")
    return str(desc) if desc else requested


def load_samples(spec: DatasetSpec, task: TaskSpec, root: Path | None, split: str | None = None) -> list[Sample]:
    """The task's split (or another ``split`` of its dataset) read with the task's dataset options."""
    folder = dataset_folder(spec, root)
    loader: Callable[..., list[Sample]] = resolve(spec.loader)
    return loader(folder, split or task.split, **dict(task.dataset_options))


def dataset_fingerprint(dataset: str, samples: Sequence[Sample], selection: Mapping[str, Any] | None = None) -> str:
    """Hash of the evaluated samples (ids, image keys, labels) and, when the protocol used other splits,
    of what it chose from them (:meth:`bench.interfaces.Task.data_selection`)."""
    payload: dict[str, Any] = {
        "dataset": dataset,
        "items": [[s.id, [im.key for im in s.images], s.labels] for s in samples],
    }
    if selection:
        payload["selection"] = dict(selection)
    return stable_hash(payload, 32)


def instantiate_model(spec: ModelSpec, args: Mapping[str, Any], device: str) -> ModelAdapter:
    factory = resolve(spec.factory)
    kwargs = dict(args)
    kwargs.setdefault("device", device)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise BenchError(f"model {spec.name!r}: bad --model-args ({exc})") from None
    if not isinstance(model, ModelAdapter):
        raise BenchError(f"model {spec.name!r}: its factory returned {type(model).__name__}, not a ModelAdapter")
    undeclared = sorted(spec.capabilities - set(model.capabilities))
    if undeclared:
        raise BenchError(
            f"model {spec.name!r} is registered with capability {', '.join(undeclared)} "
            "that its adapter does not declare"
        )
    return model


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _find_resumable(output: Path, config_hash: str) -> Path | None:
    """An unfinished run folder with the same configuration, newest first."""
    candidates = []
    for path in output.glob(f"*/{RESULTS_FILE}"):
        try:
            data = read_results(path)
        except BenchError:
            continue
        if data["status"] == "running" and data["config"].get("config_hash") == config_hash:
            candidates.append(path.parent)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


# --------------------------------------------------------------------------- run


@dataclass
class RunOutcome:
    run_dir: Path
    results: dict[str, Any]
    resumed: bool = False
    rank: int = 0  # this process's rank in a distributed run (rank 0 writes and reports)


def run(config: RunConfig, reg: Registry | None = None, log: Callable[[str], None] | None = None) -> RunOutcome:
    """Run ``config``; under a distributed launcher every rank calls this, and rank 0's outcome is the run's
    (the other ranks return the same run folder with the results rank 0 wrote)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    plan = make_plan(config, reg)
    dist = distributed.context(config.device)
    try:
        plan.dist = dist
        plan.device = distributed.device_for_rank(config.device, dist.local_rank, dist.world_size)
        if not dist.is_main:
            log = _quiet
        root = data_root(config.data_root)
        cache = PredictionCache(config.cache_path or default_cache_path()) if config.use_cache else None
        try:
            judge = Judge.from_config(plan.judge, cache) if plan.judge is not None and dist.is_main else None
            return _run(plan, root, cache, log, judge)
        finally:
            if cache is not None:
                cache.close()
    finally:
        dist.close()


def _quiet(msg: str) -> None:
    pass


def _judge_identity(judge: JudgeConfig) -> dict[str, Any]:
    return {**judge.describe(), "prompt_version": prompt_version()}


def _on_all(dist: DistContext, fn: Callable[[], Any]) -> list[Any] | None:
    """Run ``fn`` on every rank and gather its values on rank 0 (None elsewhere); when any rank fails, every
    rank raises that failure (so that no rank waits forever at the next collective)."""
    if not dist.enabled:
        return [fn()]
    try:
        payload: tuple[str, Any] = ("ok", fn())
    except BenchError as exc:
        payload = ("error", str(exc))
    except Exception as exc:  # reported through rank 0, with this rank's traceback on its own stderr
        import traceback

        traceback.print_exc()
        payload = ("error", f"{type(exc).__name__}: {exc}")
    gathered = dist.gather(payload)
    errors = None
    if gathered is not None:
        errors = [f"rank {r}: {p[1]}" for r, p in enumerate(gathered) if p[0] == "error"] or None
    errors = dist.broadcast(errors)
    if errors:
        raise BenchError("; ".join(errors))
    return [p[1] for p in gathered] if gathered is not None else None


def _on_main(dist: DistContext, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 and share its value with every rank; a failure there is raised on every rank."""
    if not dist.enabled:
        return fn()
    if dist.is_main:
        try:
            value = fn()
        except Exception as exc:
            text = str(exc) if isinstance(exc, BenchError) else f"rank 0: {type(exc).__name__}: {exc}"
            dist.broadcast(("error", text))
            raise
        dist.broadcast(("ok", value))
        return value
    status, value = dist.broadcast(None)
    if status == "error":
        raise BenchError(value)
    return value


def _run(
    plan: Plan,
    root: Path | None,
    cache: PredictionCache | None,
    log: Callable[[str], None],
    judge: Judge | None = None,
) -> RunOutcome:
    config, dist = plan.config, plan.dist
    started = time.perf_counter()
    model, model_fp, info = _model_and_identity(plan, cache)
    identity = {
        "model": plan.model_spec.name,
        "model_fp": model_fp,
        "model_args": config.model_args,
        "tasks": config.tasks,
        "limit": config.limit,
        "seed": config.seed,
        "bootstrap": config.bootstrap,
        "data_root": str(root) if root else None,
        "schema": SCHEMA_VERSION,
    }
    if plan.judge is not None:
        identity["judge"] = _judge_identity(plan.judge)
    config_hash = stable_hash(identity)
    fingerprints = _on_all(dist, lambda: model_fp)

    def same_weights() -> None:
        if fingerprints is not None and len(set(fingerprints)) > 1:
            raise BenchError(f"the ranks loaded different weights (fingerprints {sorted(set(fingerprints))})")

    _on_main(dist, same_weights)

    def open_run() -> tuple[Path, dict[str, Any], bool]:
        return _open_run_folder(plan, root, cache, config_hash, model_fp, info, log)

    run_dir, results, resumed = _on_main(dist, open_run)
    memo = RunMemo()
    sample_cache: dict[tuple[str, str, str], list[Sample]] = {}
    for spec in plan.tasks:
        if spec.name in results["tasks"]:
            log(f"{spec.name}: already finished in this run, kept")
            continue
        batch = BatchPolicy(auto=config.batch_size == "auto")  # per task: memory per item differs between tasks
        ctx = _TaskContext(spec, plan, model, model_fp, cache, root, run_dir, sample_cache, log, memo, batch)
        result = _run_task_distributed(ctx, judge) if dist.enabled else _run_task(ctx, judge)
        if dist.is_main:
            results["tasks"][spec.name] = result
            write_results(run_dir, results)
        memo.keep_embeddings()
    if dist.is_main:
        results["status"] = "complete"
        results["finished"] = _now()
        results["wall_time_s"] = round(time.perf_counter() - started, 3)
        write_results(run_dir, results)
    results = _on_main(dist, lambda: results) if dist.enabled else results
    return RunOutcome(run_dir, results, resumed, dist.rank)


def _open_run_folder(
    plan: Plan,
    root: Path | None,
    cache: PredictionCache | None,
    config_hash: str,
    model_fp: str,
    info: dict[str, Any],
    log: Callable[[str], None],
) -> tuple[Path, dict[str, Any], bool]:
    """The run folder (an unfinished one with the same configuration is resumed) and its results."""
    config = plan.config
    output = Path(config.output)
    run_dir = output / config.run_id if config.run_id else _find_resumable(output, config_hash)
    resumed = run_dir is not None and (run_dir / RESULTS_FILE).exists()
    if run_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = output / f"{stamp}_{plan.model_spec.name}_{config_hash[:8]}"
    results: dict[str, Any]
    if resumed:
        results = read_results(run_dir)
        if results["config"].get("config_hash") != config_hash:
            raise BenchError(f"run folder {run_dir} holds a run with another configuration; choose another --run-id")
        log(f"resuming unfinished run {run_dir}")
        results["config"]["world_size"] = plan.dist.world_size  # each task records the processes it ran on
    else:
        flags = ["limit"] if config.limit is not None else []
        results = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_dir.name,
            "status": "running",
            "created": _now(),
            "finished": None,
            "comparable": not flags,
            "flags": flags,
            "model": {
                "name": plan.model_spec.name,
                "args": dict(config.model_args),
                "fingerprint": model_fp,
                "parameters": info["parameters"],
                "kind": plan.model_spec.kind,
                "capabilities": sorted(plan.model_spec.capabilities),
                "description": info["description"],
            },
            "config": {
                "tasks": list(config.tasks),
                "seed": config.seed,
                "bootstrap": config.bootstrap,
                "limit": config.limit,
                "batch_size": config.batch_size,
                "device": config.device,
                "world_size": plan.dist.world_size,
                "data_root": str(root) if root else None,
                "cache": bool(cache),
                "config_hash": config_hash,
                **({"judge": _judge_identity(plan.judge)} if plan.judge is not None else {}),
            },
            "environment": environment(info["device"]),
            "tasks": {},
            "wall_time_s": None,
        }
    write_results(run_dir, results)
    return run_dir, results, resumed


_INFO_SCOPE = "model-info"


def _model_info(model: ModelAdapter, device: str) -> dict[str, Any]:
    return {
        "parameters": model.num_parameters(),
        "description": model.describe(),
        "device": device_description(model, device),
    }


def _model_and_identity(
    plan: Plan, cache: PredictionCache | None
) -> tuple[ModelAdapter | LazyModel, str, dict[str, Any]]:
    """The model (lazy when its fingerprint is known without building it and the cache remembers
    its description), its fingerprint, and what results.json records about it."""
    config, spec = plan.config, plan.model_spec

    def build() -> ModelAdapter:
        return instantiate_model(spec, config.model_args, plan.device)

    quick = resolve(spec.quick_fingerprint)(dict(config.model_args)) if spec.quick_fingerprint else None
    if quick is None or cache is None:
        model = build()
        model_fp = stable_hash({"model": spec.name, "weights": model.fingerprint()}, 32)
        return model, model_fp, _model_info(model, plan.device)
    model_fp = stable_hash({"model": spec.name, "weights": quick}, 32)
    key = (model_fp, _INFO_SCOPE, "", stable_hash({"args": dict(config.model_args), "device": plan.device}))
    info = cache.get_many([key]).get(key)
    lazy = LazyModel(build)
    if info is None:
        model = lazy.get()
        if stable_hash({"model": spec.name, "weights": model.fingerprint()}, 32) != model_fp:
            raise BenchError(f"model {spec.name!r}: its quick fingerprint disagrees with the loaded model's")
        info = _model_info(model, plan.device)
        cache.put_many([(key, info)])
    return lazy, model_fp, info


@dataclass
class _TaskContext:
    spec: TaskSpec
    plan: Plan
    model: ModelAdapter | LazyModel
    model_fp: str
    cache: PredictionCache | None
    root: Path | None
    run_dir: Path
    sample_cache: dict[tuple[str, str, str], list[Sample]]
    log: Callable[[str], None]
    memo: RunMemo
    batch: BatchPolicy

    def prepare(self) -> tuple[Task, list[Sample]]:
        """The task object (with its extra splits) and the samples it evaluates."""
        spec, plan = self.spec, self.plan
        task: Task = resolve(spec.factory)(spec)

        def split_samples(split: str) -> list[Sample]:
            key = (spec.dataset, split, stable_hash(dict(spec.dataset_options)))
            if key not in self.sample_cache:
                self.sample_cache[key] = load_samples(plan.datasets[spec.dataset], spec, self.root, split)
            return list(self.sample_cache[key])

        samples = task.prepare(split_samples(spec.split))
        if task.extra_splits:
            task.use_splits({split: split_samples(split) for split in task.extra_splits})
        if plan.config.limit is not None:
            samples = samples[: plan.config.limit]
        if not samples:
            raise BenchError(f"task {spec.name}: the {spec.split} split of {spec.dataset} has no usable samples")
        return task, samples

    def proxy(self, capture: bool = False) -> CachedModel:
        return CachedModel(
            self.model, self.model_fp, self.cache, scope=self.spec.name, memo=self.memo, batch=self.batch,
            capture=capture,
        )  # fmt: skip


def _run_task(ctx: _TaskContext, judge: Judge | None = None) -> dict[str, Any]:
    """One task in one process: records are streamed to the samples file as they come."""
    config = ctx.plan.config
    task, samples = ctx.prepare()
    proxy = ctx.proxy()
    start = time.perf_counter()
    writer = SampleWriter(ctx.run_dir, ctx.spec.name)
    try:
        for record in _predicted(task, proxy, samples, ctx.plan.batch_size, ctx.spec.name, config.progress):
            writer.write(record)
        path = writer.finish()
    finally:
        writer.close()
    return _score_task(ctx, task, samples, path, proxy.stats, start, judge)


def _run_task_distributed(ctx: _TaskContext, judge: Judge | None = None) -> dict[str, Any] | None:
    """One task over the process group: each rank computes its share, rank 0 gathers, scores and writes.
    Afterwards every rank holds every rank's embeddings (not fine-tuning features, which can be large and
    only rank 0 trains on), as one process would, so that later tasks of the run reuse the same values."""
    dist, batch_size = ctx.plan.dist, ctx.plan.batch_size
    local: dict[str, Any] = {}

    def prepare() -> None:
        task, samples = ctx.prepare()
        local.update(task=task, samples=samples, start=time.perf_counter())

    # rank 0 reads (or, for a generated dataset, writes) the data first, so the ranks never generate it twice
    _on_main(dist, prepare)

    def compute_share() -> dict[str, Any]:
        if not dist.is_main:
            prepare()
        task, samples = local["task"], local["samples"]
        proxy = ctx.proxy(capture=True)
        local["proxy"] = proxy
        if task.distributed == "outputs":
            task.prefetch(proxy, samples, batch_size, dist.rank, dist.world_size)
            return {"outputs": proxy.captured, "stats": proxy.stats}
        mine = distributed.shard_indices(len(samples), batch_size, dist.rank, dist.world_size)
        desc = f"{ctx.spec.name} (rank 0 of {dist.world_size})"
        show = ctx.plan.config.progress and dist.is_main
        records = list(_predicted(task, proxy, distributed.take(samples, mine), batch_size, desc, show))
        return {"indices": mine, "records": records, "stats": proxy.stats}

    shares = _on_all(dist, compute_share)

    def finish() -> dict[str, Any]:
        assert shares is not None
        task, samples = local["task"], local["samples"]
        stats = CallStats()
        for share in shares:
            stats.add(share["stats"])
        writer = SampleWriter(ctx.run_dir, ctx.spec.name)
        try:
            if task.distributed == "outputs":
                for share in shares:
                    ctx.memo.update(share["outputs"])
                proxy = ctx.proxy()  # every output is in the memo now: rank 0 predicts without the model
                records = list(task.predict(proxy, samples, batch_size))
                stats.add(proxy.stats)
                stats.reused -= proxy.stats.reused  # the replay's memo hits are the ranks' outputs, counted above
            else:
                ordered: list[Any] = [None] * len(samples)
                for share in shares:
                    for i, record in zip(share["indices"], share["records"], strict=True):
                        ordered[i] = record
                records = ordered
            if any(r is None for r in records) or len(records) != len(samples):
                raise RuntimeError(f"task {ctx.spec.name}: the ranks' records do not cover the {len(samples)} samples")
            for record in records:
                writer.write(record)
            path = writer.finish()
        finally:
            writer.close()
        return _score_task(ctx, task, samples, path, stats, local["start"], judge)

    result = _on_main(dist, finish)
    captured = local["proxy"].captured or {}
    embeddings = {k: v for k, v in captured.items() if k[1] == EMBED_SCOPE and not k[3].startswith("features:")}
    for part in dist.all_gather(embeddings):
        ctx.memo.update(part)
    return result


def _predicted(
    task: Task, model: CachedModel, samples: Sequence[Sample], batch_size: int, desc: str, show: bool
) -> Iterator[dict[str, Any]]:
    """``task.predict`` with a progress bar; a task that yields another number of records than samples is a bug."""
    progress = _progress(len(samples), desc, show)
    count = 0
    for record in task.predict(model, samples, batch_size):
        count += 1
        progress.update(1)
        yield record
    progress.close()
    if count != len(samples):
        raise RuntimeError(f"task {task.name} produced {count} records for {len(samples)} samples")


def _score_task(
    ctx: _TaskContext,
    task: Task,
    samples: Sequence[Sample],
    path: Path,
    stats: CallStats,
    start: float,
    judge: Judge | None,
) -> dict[str, Any]:
    spec, config, dist = ctx.spec, ctx.plan.config, ctx.plan.dist
    predict_s = time.perf_counter() - start
    records = list(iter_samples(path, validate=False))
    metrics = task.score(records, config.bootstrap, config.seed)
    judged: dict[str, Any] | None = None
    if judge is not None and judged_task(spec.protocol):
        judge.reset()
        metrics.update(score_with_judge(records, judge, config.bootstrap, config.seed))
        judged = judge.summary()
    wall = time.perf_counter() - start
    flags = ["limit"] if config.limit is not None else []
    summary = ", ".join(f"{name}={metric_text(m)}" for name, m in metrics.items() if isinstance(m.get("value"), float))
    ctx.log(
        f"{spec.name}: {summary} (n={len(samples)}, {wall:.1f}s, cache hits {stats.cache_hits}, reused {stats.reused})"
    )
    if judged is not None:
        ctx.log(
            f"{spec.name}: judge {judged['model']} judged {judged['n_judged']}, failed {judged['n_judge_failed']}, "
            f"cache hits {judged['cache_hits']}, {judged['usage']['total_tokens']} tokens"
        )
    out: dict[str, Any] = {
        "task": spec.name,
        "dataset": spec.dataset,
        "protocol": spec.protocol,
        "split": spec.split,
        "family": spec.family,
        "dataset_fingerprint": dataset_fingerprint(spec.dataset, samples, task.data_selection()),
        "n_samples": len(samples),
        "metrics": metrics,
        "config": task.config(),
        "samples_file": str(path.relative_to(ctx.run_dir)),
        "wall_time_s": round(wall, 4),
        "predict_time_s": round(predict_s, 4),
        "model_time_s": round(stats.model_seconds, 4),
        "throughput_samples_per_s": round(len(samples) / predict_s, 3) if predict_s > 0 else None,
        "calls": stats.to_json(),
        "batch_size": ctx.batch.to_json(config.batch_size),
        "distributed": {**dist.describe(), "mode": task.distributed if dist.enabled else None},
        "comparable": not flags,
        "flags": flags,
    }
    if judged is not None:
        out["judge"] = judged
    return out


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", file=sys.stderr, dynamic_ncols=True, leave=False)
