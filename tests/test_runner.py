"""End to end: `bench run` on synthcxr with the clip-baseline, the cache, resume after SIGKILL,
the result schema, re-scoring, the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from reports.io import read_results
from reports.schema import SAMPLE_RECORD, results_schema
from tests.conftest import run_bench


def _run_json(*args: str, env: dict[str, str] | None = None) -> dict:
    res = run_bench(*args, "--no-progress", env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _validate_run(run_dir: Path) -> dict:
    data = json.loads((run_dir / "results.json").read_text())
    jsonschema.validate(data, results_schema())
    for task in data["tasks"].values():
        lines = (run_dir / task["samples_file"]).read_text().splitlines()
        assert len(lines) == task["n_samples"]
        for line in lines:
            jsonschema.validate(json.loads(line), SAMPLE_RECORD)
    return data


@pytest.fixture(scope="module")
def trained_run(trained_clip: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("runs")
    cache = out / "cache.sqlite"
    args = (
        "run",
        "--model",
        "clip-baseline",
        "--model-args",
        f"checkpoint={trained_clip}",
        "--task",
        "synthcxr_zs,synthcxr_zs_5class",
        "--output",
        str(out),
        "--cache",
        str(cache),
        "--bootstrap",
        "200",
    )
    first = _run_json(*args)
    second = _run_json(*args)
    return {"first": Path(first["run_dir"]), "second": Path(second["run_dir"]), "args": args}


def test_trained_clip_learns_zero_shot(trained_run):
    data = _validate_run(trained_run["first"])
    zs = data["tasks"]["synthcxr_zs"]
    auc = zs["metrics"]["AUC"]
    assert auc["value"] >= 0.85, auc  # the target; untrained: about 0.5
    assert auc["per_class"]["Edema"] >= 0.9 and auc["per_class"]["Cardiomegaly"] >= 0.9, auc
    assert auc["ci95"][0] < auc["value"] < auc["ci95"][1]
    assert zs["n_samples"] == 400 and auc["n"] == 400
    assert set(zs["metrics"]) == {"AUC", "F1", "ACC"}
    assert len(auc["per_class"]) == 7
    assert zs["config"]["prompts"]["Edema"] == {"positive": ["edema"], "negative": ["no edema"]}
    assert zs["config"]["threshold"] == 0.5 and zs["config"]["uncertain"] == "positive"
    five = data["tasks"]["synthcxr_zs_5class"]
    assert five["metrics"]["ACC"]["value"] > 0.35  # chance is 0.2
    assert data["status"] == "complete" and data["comparable"]
    assert data["model"]["parameters"] > 10_000
    assert data["environment"]["packages"]["torch"].startswith("2.")


def test_second_identical_run_is_served_from_cache(trained_run):
    first = read_results(trained_run["first"])
    second = read_results(trained_run["second"])
    assert trained_run["first"] != trained_run["second"]
    for name in ("synthcxr_zs", "synthcxr_zs_5class"):
        assert second["tasks"][name]["metrics"] == first["tasks"][name]["metrics"]
        assert second["tasks"][name]["calls"]["model_items"] == 0
    assert second["tasks"]["synthcxr_zs"]["calls"]["cache_hits"] == 400 + 14  # images and class prompts
    # embeddings are shared across the tasks of a run: the 5-class task's images and class prompts
    # ("{}" templates) were all embedded by synthcxr_zs already, and come from the run's memory
    for results in (first, second):
        calls = results["tasks"]["synthcxr_zs_5class"]["calls"]
        assert calls["model_items"] == 0 and calls["cache_hits"] == 0
        assert calls["reused"] == results["tasks"]["synthcxr_zs_5class"]["n_samples"] + 5
    assert first["tasks"]["synthcxr_zs"]["calls"]["model_items"] == 400 + 14


def test_rescoring_the_samples_file_gives_the_same_metrics(trained_run, tmp_path):
    run = read_results(trained_run["first"])
    samples = trained_run["first"] / run["tasks"]["synthcxr_zs"]["samples_file"]
    out = _run_json_score(
        "--task", "synthcxr_zs", "--predictions", str(samples), "--bootstrap", "200", "--output", str(tmp_path)
    )
    assert out == run["tasks"]["synthcxr_zs"]["metrics"]
    assert json.loads((tmp_path / "scores.json").read_text()) == out
    # the generic metric path refuses uncertain labels instead of guessing a policy ...
    res = run_bench("score", "--metrics", "AUC", "--predictions", str(samples))
    assert res.returncode == 2 and "uncertain labels (-1) need a task's policy" in res.stderr
    # ... and agrees with the task once the labels carry the task's policy (uncertain -> 1, missing -> 0)
    binary = tmp_path / "binary.jsonl"
    with binary.open("w") as fh:
        for line in samples.read_text().splitlines():
            rec = json.loads(line)
            rec["reference"] = {c: int(v in (1, -1)) for c, v in rec["reference"].items()}
            fh.write(json.dumps(rec) + "\n")
    generic = _run_json_score("--metrics", "AUC", "--predictions", str(binary), "--bootstrap", "20")
    assert generic["AUC"]["value"] == pytest.approx(out["AUC"]["value"], abs=1e-12)


def _run_json_score(*args: str) -> dict:
    res = run_bench("score", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_untrained_model_is_near_chance(tmp_path):
    out = _run_json(
        "run",
        "--model",
        "clip-baseline",
        "--task",
        "synthcxr_zs",
        "--output",
        str(tmp_path),
        "--bootstrap",
        "0",
        "--no-cache",
    )
    data = _validate_run(Path(out["run_dir"]))
    auc = data["tasks"]["synthcxr_zs"]["metrics"]["AUC"]
    assert 0.35 <= auc["value"] <= 0.65, auc
    assert auc["ci95"] == [None, None]
    assert data["config"]["cache"] is False


def test_limit_marks_result_not_comparable(trained_clip, tmp_path):
    out = _run_json(
        "run",
        "--model",
        "clip-baseline",
        "--model-args",
        f"checkpoint={trained_clip}",
        "--task",
        "synthcxr_zs",
        "--output",
        str(tmp_path),
        "--limit",
        "25",
        "--bootstrap",
        "0",
    )
    data = _validate_run(Path(out["run_dir"]))
    assert data["comparable"] is False and data["flags"] == ["limit"]
    assert data["tasks"]["synthcxr_zs"]["n_samples"] == 25
    assert data["tasks"]["synthcxr_zs"]["comparable"] is False


def test_sigkill_then_same_command_resumes_identically(trained_clip, tmp_path):
    cache = tmp_path / "cache.sqlite"
    out = tmp_path / "runs"
    args = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--model",
        "clip-baseline",
        "--model-args",
        f"checkpoint={trained_clip}",
        "--task",
        "synthcxr_zs",
        "--output",
        str(out),
        "--cache",
        str(cache),
        "--batch-size",
        "2",
        "--bootstrap",
        "100",
        "--no-progress",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    partial = None
    deadline = time.time() + 300
    written = 0
    while time.time() < deadline and proc.poll() is None:
        found = list(out.glob("*/samples/synthcxr_zs.jsonl.partial"))
        if found:
            partial = found[0]
            written = len(partial.read_bytes().splitlines())
            if written >= 60:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial is not None
    run_dir = partial.parents[1]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "running"

    res = subprocess.run(args, capture_output=True, text=True, env=os.environ.copy())
    assert res.returncode == 0, res.stderr
    assert f"resuming unfinished run {run_dir}" in res.stderr
    assert Path(json.loads(res.stdout)["run_dir"]) == run_dir
    resumed = _validate_run(run_dir)
    calls = resumed["tasks"]["synthcxr_zs"]["calls"]
    assert calls["cache_hits"] >= written  # every image behind a written record came from the cache
    assert calls["model_items"] + calls["cache_hits"] == 400 + 14  # 400 images + 7×2 prompts
    assert calls["model_items"] < 400 - written + 1

    reference = _run_json(
        "run",
        "--model",
        "clip-baseline",
        "--model-args",
        f"checkpoint={trained_clip}",
        "--task",
        "synthcxr_zs",
        "--output",
        str(tmp_path / "fresh"),
        "--no-cache",
        "--batch-size",
        "2",
        "--bootstrap",
        "100",
    )
    fresh = read_results(reference["run_dir"])
    assert resumed["tasks"]["synthcxr_zs"]["metrics"] == fresh["tasks"]["synthcxr_zs"]["metrics"]
    assert (run_dir / "samples/synthcxr_zs.jsonl").read_text() == (
        Path(reference["run_dir"]) / "samples/synthcxr_zs.jsonl"
    ).read_text()


def test_demo_reuses_checkpoint_and_ends_with_the_leaderboard(trained_clip, tmp_path):
    import shutil

    out = tmp_path / "runs"
    shutil.copytree(trained_clip, out / "checkpoints" / "clip-baseline-tiny-synthcxr")
    res = run_bench("demo", "--output", str(out), "--bootstrap", "50", "--models", "clip-baseline")
    assert res.returncode == 0, res.stderr
    assert "reusing trained checkpoint" in res.stderr
    info = json.loads(res.stdout)
    assert len(info["runs"]) == 1
    data = _validate_run(Path(info["runs"][0]))
    probes = {f"synthcxr_ft_{p}pct{s}" for p in (1, 10, 100) for s in ("", "_scratch")}  # seconds: in the demo
    full = sorted(f"synthcxr_ft_{p}pct_full{s}" for p in (1, 10, 100) for s in ("", "_scratch"))  # minutes: not
    embedding = {"synthcxr_zs", "synthcxr_zs_5class", "synthcxr_retrieval", "synthcxr_grounding"}
    assert set(data["tasks"]) == embedding | probes
    assert info["left_out"] == full and "bench demo --all-tasks" in res.stderr
    # the demo ends by writing the leaderboard site over its runs, with the papers' reported rows, and says where
    index = out / "site" / "index.html"
    assert info["site"] == str(index) and f"leaderboard: {index}" in res.stderr.splitlines()[-1]
    html = index.read_text()
    for task in data["tasks"]:
        table = json.loads((out / "site" / "tables" / f"{task}.json").read_text())
        assert [(r["model"], r["run_id"]) for r in table["rows"]] == [("clip-baseline", data["run_id"])]
        assert (
            table["rows"][0][table["columns"][0]["key"]]
            == data["tasks"][task]["metrics"][table["columns"][0]["key"]]["value"]
        )
    assert f"{data['tasks']['synthcxr_zs']['metrics']['AUC']['value']:.4f}" in html
    assert html.count('<span class="badge reported">reported</span>') > 300  # the papers' rows
    assert "Not run by this demo" in html and all(task in html for task in full)  # the index says what is missing
    assert data["tasks"]["synthcxr_ft_1pct_scratch"]["metrics"]["AUC"]["value"] < 0.75  # the random-encoder floor


def test_demo_retrains_a_checkpoint_of_other_arguments_or_other_model_code(trained_clip, tmp_path):
    import shutil

    from bench import api
    from bench.plugins import registry

    spec = registry().models["clip-baseline"]
    ck = tmp_path / "ck"
    shutil.copytree(trained_clip, ck)
    record = json.loads((ck / "training.json").read_text())
    assert record["model_code"] == api.model_code_fingerprint(spec) and len(record["model_code"]) == 16
    assert api._reusable(ck, spec, {})
    assert not api._reusable(ck, spec, {"epochs": 3})
    (ck / "training.json").write_text(json.dumps({**record, "model_code": "0" * 16}))  # e.g. a preset edited since
    assert not api._reusable(ck, spec, {})


def test_demo_plan_keeps_dependency_order_and_closes_over_references():
    from bench import api
    from bench.interfaces import BenchError
    from bench.plugins import registry

    reg = registry()
    full = [s.model for s in api.demo_plan(reg)]
    assert full[:5] == ["clip-baseline", "lgdea", "llava-rad", "llava-radz", "meddr-rag"]
    assert [s.model for s in api.demo_plan(reg, ["llava-radz"])] == ["clip-baseline", "llava-rad", "llava-radz"]
    assert [s.model for s in api.demo_plan(reg, ["meddr-rag"])] == ["clip-baseline", "meddr-rag"]
    assert [s.model for s in api.demo_plan(reg, ["lgdea"])] == ["clip-baseline", "lgdea"]
    tasks = api.demo_tasks("clip-baseline", reg)
    assert "synthcxr_zs" in tasks and not [t for t in tasks if "_ft_" in t]
    linear = set(api.demo_tasks("clip-baseline", reg, "linear")) - set(tasks)
    assert linear == {f"synthcxr_ft_{p}pct{s}" for p in (1, 10, 100) for s in ("", "_scratch")}
    every = set(api.demo_tasks("clip-baseline", reg, "all"))
    assert len(every - set(tasks) - linear) == 6 and all("_full" in t for t in every - set(tasks) - linear)
    # with --all-tasks the demo's models cover every implemented synthcxr task; without, full fine-tuning is left out
    synthcxr = {n for n, t in reg.tasks.items() if t.dataset == "synthcxr" and t.factory is not None}
    assert {t for s in api.demo_plan(reg) for t in api._step_tasks(s, reg, all_tasks=True)} == synthcxr
    assert set(api.demo_left_out(reg)) == {t for t in synthcxr if "_full" in t}
    with pytest.raises(BenchError, match="finetune must be"):
        api.demo_tasks("clip-baseline", reg, "some")
    with pytest.raises(BenchError, match="no demo step for nope"):
        api.demo_plan(reg, ["nope"])
    with pytest.raises(BenchError, match="not trained earlier"):
        api._fill("checkpoint={llava-rad}", {})
