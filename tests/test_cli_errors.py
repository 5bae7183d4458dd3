"""Bad input: one clear message, exit status 2, no traceback."""

from __future__ import annotations

import pytest

from bench.cli import parse_model_args
from bench.interfaces import BenchError
from tests.conftest import run_bench


def _refused(res, *fragments: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") or res.stderr.startswith("Usage:") or "Error:" in res.stderr
    for fragment in fragments:
        assert fragment in res.stderr, res.stderr


def test_unknown_task_suggests(tmp_path):
    res = run_bench("run", "--model", "clip-baseline", "--task", "synthcxr_zz", "--output", str(tmp_path))
    _refused(res, "unknown task 'synthcxr_zz'", "Did you mean: synthcxr_zs")


def test_unknown_model_suggests(tmp_path):
    res = run_bench("run", "--model", "clip-baseln", "--task", "synthcxr_zs", "--output", str(tmp_path))
    _refused(res, "unknown model 'clip-baseln'", "clip-baseline")


def test_capability_mismatch(tmp_path):
    res = run_bench("run", "--model", "clip-baseline", "--task", "synthcxr_vqa", "--output", str(tmp_path))
    _refused(res, "cannot run task 'synthcxr_vqa'", "needs capability generate", "the model has backbone, embed")
    assert not any(tmp_path.iterdir())  # refused before any work


def test_protocol_not_implemented(tmp_path):
    res = run_bench(
        "run", "--model", "clip-baseline", "--task", "synthcxr_zs,chestxray14_linear_probe", "--output", str(tmp_path)
    )
    _refused(res, "protocol 'finetune' not implemented")
    assert not any(tmp_path.iterdir())


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = run_bench("run", "--model", "clip-baseline", "--task", "synthcxr_zs", "--output", str(blocker / "runs"))
    _refused(res, "cannot write to output folder", str(blocker / "runs"))


def test_corrupt_cache(tmp_path):
    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"\x00garbage" * 512)
    res = run_bench(
        "run",
        "--model",
        "clip-baseline",
        "--task",
        "synthcxr_zs",
        "--cache",
        str(bad),
        "--output",
        str(tmp_path / "runs"),
        "--limit",
        "5",
    )
    _refused(res, f"prediction cache {bad} is corrupt", "--no-cache")


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--limit", "0", "--limit must be a positive number"),
        ("--batch-size", "0", "--batch-size must be a positive integer or 'auto', got 0"),
        ("--bootstrap", "-1", "--bootstrap must be 0"),
        ("--device", "tpu", "--device must be auto, cpu or cuda"),
    ],
)
def test_bad_numbers(tmp_path, flag, value, message):
    res = run_bench("run", "--model", "clip-baseline", "--task", "synthcxr_zs", flag, value, "--output", str(tmp_path))
    _refused(res, message)


def test_bad_model_args(tmp_path):
    res = run_bench(
        "run",
        "--model",
        "clip-baseline",
        "--task",
        "synthcxr_zs",
        "--model-args",
        "checkpoint",
        "--output",
        str(tmp_path),
    )
    _refused(res, "--model-args: expected key=value")


def test_missing_checkpoint_is_clear(tmp_path):
    res = run_bench(
        "run",
        "--model",
        "clip-baseline",
        "--task",
        "synthcxr_zs",
        "--model-args",
        f"checkpoint={tmp_path / 'nope'}",
        "--output",
        str(tmp_path / "runs"),
    )
    _refused(res, str(tmp_path / "nope"))


def test_score_needs_one_of_task_or_metrics(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "a", "prediction": 0.4, "reference": 1}\n')
    _refused(run_bench("score", "--predictions", str(preds)), "exactly one of --task or --metrics")
    _refused(run_bench("score", "--metrics", "AUCC", "--predictions", str(preds)), "unknown metric 'AUCC'")
    _refused(
        run_bench("score", "--metrics", "AUC", "--predictions", str(tmp_path / "none.jsonl")),
        "predictions file not found",
    )
    preds.write_text('{"id": "a", "prediction": 0.4}\n')
    _refused(
        run_bench("score", "--metrics", "AUC", "--predictions", str(preds)), "p.jsonl:1: missing field(s) reference"
    )
    preds.write_text("not json\n")
    _refused(run_bench("score", "--metrics", "AUC", "--predictions", str(preds)), "p.jsonl:1: not a JSON object")


def test_parse_model_args():
    assert parse_model_args("checkpoint=/a/b,batch_size=8,temp=0.5,flag=true,x=none") == {
        "checkpoint": "/a/b",
        "batch_size": 8,
        "temp": 0.5,
        "flag": True,
        "x": None,
    }
    assert parse_model_args("prompt=a,b,c,n=1") == {"prompt": "a,b,c", "n": 1}
    with pytest.raises(BenchError):
        parse_model_args("=3")
