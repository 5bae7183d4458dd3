"""Distributed runs (torchrun, gloo on CPU), resuming with another number of ranks, --batch-size auto and
reuse of embeddings across the tasks of a run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bench.cached_model import AUTO_BATCH_START
from bench.distributed import shard_indices
from bench.interfaces import EMBED, BenchError, ImageRef, ModelAdapter, ModelSpec, as_pil
from bench.plugins import hookimpl, load_registry
from bench.runner import RunConfig, run

# ---------------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n,batch", [(0, 4), (1, 4), (7, 2), (64, 32), (65, 32), (130, 8)])
def test_shards_are_whole_batches_covering_each_position_once(n: int, batch: int, world: int) -> None:
    shares = [shard_indices(n, batch, rank, world) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(n))
    for rank, share in enumerate(shares):
        assert all((i // batch) % world == rank for i in share)
        assert share == sorted(share)


def test_shard_deals_batches_round_robin() -> None:
    assert shard_indices(10, 3, 0, 2) == [0, 1, 2, 6, 7, 8]
    assert shard_indices(10, 3, 1, 2) == [3, 4, 5, 9]
    with pytest.raises(ValueError):
        shard_indices(10, 3, 2, 2)


# ---------------------------------------------------------------------------------------------- torchrun


def _env(cache_dir: Path) -> dict[str, str]:
    # one thread per process in both the one-process and the two-process runs: the same arithmetic
    return {**os.environ, "BENCH_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _bench_cmd(nproc: int, args: Sequence[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "bench", *args]
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "bench", *args,
    ]  # fmt: skip


def _bench(nproc: int, args: Sequence[str], cache_dir: Path, timeout: float = 600) -> dict[str, Any]:
    proc = subprocess.run(_bench_cmd(nproc, args), capture_output=True, text=True, env=_env(cache_dir), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{") :])
    return json.loads((Path(printed["run_dir"]) / "results.json").read_text())


def _records(results: dict[str, Any], run_dir: Path, task: str) -> list[dict[str, Any]]:
    path = run_dir / results["tasks"][task]["samples_file"]
    return [json.loads(line) for line in path.read_text().splitlines()]


def _values(results: dict[str, Any], task: str) -> dict[str, Any]:
    return {name: (m["value"], m["ci95"]) for name, m in results["tasks"][task]["metrics"].items()}


def _run_args(model: str, ckpt: Path, tasks: str, out: Path, *extra: str) -> list[str]:
    return [
        "run", "--model", model, "--model-args", f"checkpoint={ckpt}", "--task", tasks,
        "--output", str(out), "--device", "cpu", "--no-progress", *extra,
    ]  # fmt: skip


N = 24  # samples per task (--limit): the runs are real runs of the trained tiny llava-rad, kept short
RUN_OPTIONS = ["--limit", str(N), "--batch-size", "4", "--bootstrap", "0"]
TASKS = ["synthcxr_zs", "synthcxr_retrieval", "synthcxr_ft_1pct", "synthcxr_rrg"]


@pytest.fixture(scope="module")
def one_and_two(trained_llava_rad: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same run of llava-rad (embedding, linear-probe and report-generation tasks) in one process and in two
    gloo processes under torchrun, each with a fresh cache."""
    tmp = tmp_path_factory.mktemp("distributed")
    out: dict[str, Any] = {}
    for name, nproc in (("one", 1), ("two", 2)):
        args = _run_args("llava-rad", trained_llava_rad, ",".join(TASKS), tmp / name, *RUN_OPTIONS)
        out[name] = _bench(nproc, args, tmp / f"cache-{name}")
        out[f"{name}_dir"] = tmp / name / out[name]["run_id"]
    return out


def test_two_gloo_processes_give_the_one_process_numbers(one_and_two: dict[str, Any]) -> None:
    one, two = one_and_two["one"], one_and_two["two"]
    assert two["config"]["world_size"] == 2 and one["config"]["world_size"] == 1
    for task in ("synthcxr_zs", "synthcxr_retrieval", "synthcxr_rrg"):  # identical
        assert _values(two, task) == _values(one, task), task
        assert two["tasks"][task]["dataset_fingerprint"] == one["tasks"][task]["dataset_fingerprint"]
    assert two["tasks"]["synthcxr_zs"]["distributed"] == {"world_size": 2, "backend": "gloo", "mode": "records"}
    assert two["tasks"]["synthcxr_retrieval"]["distributed"]["mode"] == "outputs"
    assert two["tasks"]["synthcxr_ft_1pct"]["distributed"]["mode"] == "outputs"
    # the generated reports themselves, in sample order
    reports = [
        [r["prediction"] for r in _records(one_and_two[k], one_and_two[f"{k}_dir"], "synthcxr_rrg")]
        for k in ("one", "two")
    ]
    assert reports[0] == reports[1] and len(reports[0]) == N and len(set(reports[0])) > 1
    assert two["tasks"]["synthcxr_rrg"]["calls"]["model_items"] == N
    # each image embedded once over both ranks, and reused by retrieval (no cache hits: fresh caches)
    zs_one, zs_two = one["tasks"]["synthcxr_zs"]["calls"], two["tasks"]["synthcxr_zs"]["calls"]
    prompts = zs_one["model_items"] - N
    assert zs_one["cache_hits"] == 0 and prompts > 0
    # both ranks embed the class prompts (one may find the other's in the cache); each image once in all
    assert zs_two["model_items"] + zs_two["cache_hits"] == N + 2 * prompts
    for results in (one, two):
        rt = results["tasks"]["synthcxr_retrieval"]
        assert rt["calls"]["reused"] == rt["n_samples"] and rt["calls"]["model_items"] > 0  # images from zero-shot
    # the linear probe trains on rank 0 from both ranks' features: same numbers up to float summation order
    ft_one, ft_two = _values(one, "synthcxr_ft_1pct"), _values(two, "synthcxr_ft_1pct")
    assert ft_one.keys() == ft_two.keys()
    for name, (value, _) in ft_one.items():
        assert ft_two[name][0] == pytest.approx(value, abs=1e-6), name


def _cached_rows(cache_dir: Path, scope: str) -> int:
    path = cache_dir / "predictions.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM predictions WHERE scope=?", (scope,)).fetchone()[0])
    except sqlite3.OperationalError:  # the table is being created
        return 0


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL the launcher and every rank at once: nothing gets to tidy up."""
    pids = [pid, *_descendants(pid)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_report_generation_interrupted_with_two_processes_resumes_with_one(
    trained_llava_rad: Path, one_and_two: dict[str, Any], tmp_path: Path
) -> None:
    task = "synthcxr_rrg"
    # interrupt a two-process run once a batch is in the cache (SIGKILL: nothing can be tidied up) ...
    cache = tmp_path / "cache"
    out = tmp_path / "interrupted"
    args = _run_args("llava-rad", trained_llava_rad, task, out, *RUN_OPTIONS)
    proc = subprocess.Popen(
        _bench_cmd(2, args), env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while _cached_rows(cache, task) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_tree(proc.pid)
    proc.wait(timeout=60)
    done = _cached_rows(cache, task)
    assert 4 <= done < N, f"{done} predictions cached when interrupted"
    [folder] = list(out.iterdir())
    assert json.loads((folder / "results.json").read_text())["status"] == "running"

    # ... and resume it with one process: the same folder, no prediction asked twice, the one-process numbers
    resumed = _bench(1, args, cache)
    assert resumed["run_id"] == folder.name and resumed["status"] == "complete"
    calls = resumed["tasks"][task]["calls"]
    assert calls["cache_hits"] == done and calls["model_items"] == N - done
    one = one_and_two["one"]
    assert _values(resumed, task) == _values(one, task)
    reference = [r["prediction"] for r in _records(one, one_and_two["one_dir"], task)]
    assert [r["prediction"] for r in _records(resumed, folder, task)] == reference


# ---------------------------------------------------------------------------------------------- batch size


class PixelGridEmbedder(ModelAdapter):
    """A deterministic embedder (8x8 grid means of the image, hashed word counts of a text; the two spaces are
    unrelated, so its scores are chance-level). It runs out of memory (torch's error) above ``capacity`` items
    per call, as a GPU model does above some batch."""

    name = "pixel-grid"
    capabilities = frozenset({EMBED})
    calls: ClassVar[list[int]] = []

    def __init__(self, capacity: int = 24, device: str = "cpu") -> None:
        super().__init__(capacity=capacity)
        self.capacity = int(capacity)

    def fingerprint(self) -> str:
        return "pixel-grid-v1"

    def _check(self, n: int) -> None:
        PixelGridEmbedder.calls.append(n)
        if n > self.capacity:
            import torch

            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} items")

    def encode_images(self, images: Sequence[ImageRef]) -> np.ndarray:
        self._check(len(images))
        rows = []
        for image in images:
            a = np.asarray(as_pil(image).convert("L").resize((64, 64)), dtype=np.float64) / 255.0
            v = a.reshape(8, 8, 8, 8).mean(axis=(1, 3)).ravel()
            rows.append(v - v.mean())
        return np.asarray(rows)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self._check(len(texts))
        out = np.zeros((len(texts), 64))
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, sum(map(ord, word)) % 64] += 1.0
        return out


class _Plugin:
    @hookimpl
    def bench_register_models(self) -> Iterable[ModelSpec]:
        return [ModelSpec("pixel-grid", PixelGridEmbedder, frozenset({EMBED}), kind="dual encoder")]


def _grid_run(tmp_path: Path, batch_size: int | str, run_id: str, **args: Any) -> dict[str, Any]:
    config = RunConfig(
        model="pixel-grid", tasks=["synthcxr_zs", "synthcxr_retrieval"], model_args=args, output=str(tmp_path),
        batch_size=batch_size, use_cache=False, bootstrap=100, run_id=run_id, progress=False, device="cpu",
    )  # fmt: skip
    return run(config, reg=load_registry([_Plugin()]), log=lambda m: None).results


def test_auto_batch_size_halves_on_out_of_memory_and_records_the_size_that_fitted(tmp_path: Path) -> None:
    PixelGridEmbedder.calls.clear()
    auto = _grid_run(tmp_path, "auto", "auto")
    zs = auto["tasks"]["synthcxr_zs"]
    assert zs["n_samples"] > AUTO_BATCH_START  # the task's first image batch is the size auto starts from
    failed, size = [], AUTO_BATCH_START
    while size > 24:  # halved until the 24 the model holds
        failed.append(size)
        size //= 2
    assert zs["batch_size"] == {"requested": "auto", "used": size, "out_of_memory_at": failed}
    assert max(PixelGridEmbedder.calls[-3:]) <= 24
    assert auto["config"]["batch_size"] == "auto"
    fixed = _grid_run(tmp_path, 8, "fixed")
    assert fixed["tasks"]["synthcxr_zs"]["batch_size"] == {"requested": 8, "used": 8, "out_of_memory_at": []}
    for task in ("synthcxr_zs", "synthcxr_retrieval"):
        assert _values(auto, task) == _values(fixed, task)
    # no cache here: retrieval takes every image embedding zero-shot computed earlier in the run
    assert auto["tasks"]["synthcxr_retrieval"]["calls"]["reused"] == auto["tasks"]["synthcxr_retrieval"]["n_samples"]


def test_a_fixed_batch_that_does_not_fit_stops_with_advice(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"out of memory with a batch of 32 .*--batch-size auto"):
        _grid_run(tmp_path, 32, "too-big")
    with pytest.raises(BenchError, match="out of memory with a batch of 1"):
        _grid_run(tmp_path, "auto", "never-fits", capacity=0)


def test_batch_size_option_accepts_auto_and_refuses_other_words(tmp_path: Path) -> None:
    from tests.conftest import run_bench

    bad = run_bench("run", "--model", "clip-baseline", "--task", "synthcxr_zs", "--batch-size", "big")
    assert bad.returncode == 2 and "'big' is neither a positive integer nor 'auto'" in bad.stderr
    with pytest.raises(BenchError, match="positive integer or 'auto'"):
        _grid_run(tmp_path, 0, "zero")
