"""meddr-bootstrap: MedDr's diagnosis-guided bootstrapping (reports written from labelled synthcxr images by the
``openai`` adapter against a real HTTP server on 127.0.0.1), resumability through the prediction cache, the CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import api
from bench.cache import PredictionCache
from bench.data import synthcxr
from bench.interfaces import BenchError, Sample
from models.reference import meddr_bootstrap as mb
from tasks import prompts
from tests.conftest import run_bench
from tests.openai_stub_server import Received, StubServer
from tests.test_data_vqa import make_vqa_rad

LIMIT = 6


def _line(label: str, prompt: str) -> str | None:
    m = re.search(rf"^{label}:\s*(.*)$", prompt, flags=re.MULTILINE)
    return m.group(1).strip() if m else None


def _names(line: str | None) -> list[str]:
    return [] if line is None or line == mb.NONE_LISTED else [n.strip() for n in line.split(",")]


def echo_present(item: Received) -> str:
    """A generator that describes what the prompt says is present (so each report can be traced to its prompt)."""
    return f"  Findings consistent with: {_line('Present', item.prompt)}.  "


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _train(n: int = LIMIT) -> list[Sample]:
    return synthcxr.load(None, "train")[:n]


def _gen_args(server: StubServer, **extra: Any) -> str:
    args = {"model": "stub-model", "base_url": server.base_url, "concurrency": 1, **extra}
    return ";".join(f"{k}={v}" for k, v in args.items())


def _check_prompt(prompt: str, sample: Sample) -> None:
    """The prompt states the sample's positive findings as present, its negative ones only as absent."""
    labels = sample.labels
    positive = [n for n, v in labels.items() if v == 1]
    negative = [n for n, v in labels.items() if v == 0 and n != mb.NO_FINDING]
    uncertain = [n for n, v in labels.items() if v == -1]
    present = _names(_line("Present", prompt))
    assert present == positive
    assert not set(present) & set(negative)
    assert _names(_line("Absent", prompt)) == negative
    assert _names(_line("Uncertain", prompt)) == uncertain
    assert "{" not in prompt and prompt.startswith("This chest X-ray ")


# --------------------------------------------------------------------------- prompt


def test_prompt_from_synthcxr_labels() -> None:
    samples = synthcxr.load(None, "train")[:200]
    hedged = next(s for s in samples if -1 in s.labels.values())
    normal = next(s for s in samples if s.labels[mb.NO_FINDING] == 1)
    for s in (hedged, normal):
        _check_prompt(mb.bootstrap_prompt(s.labels, prompts.BOOTSTRAP_FINDINGS, "chest X-ray"), s)
    assert "Present: No Finding\nAbsent: Atelectasis, " in mb.bootstrap_prompt(
        normal.labels, prompts.BOOTSTRAP_FINDINGS, "x"
    )
    assert "\nUncertain: none\n" in mb.bootstrap_prompt(normal.labels, prompts.BOOTSTRAP_FINDINGS, "x")
    # unmentioned labels are not stated
    labels = {**hedged.labels, "Nodule": None}
    custom = mb.bootstrap_prompt(labels, "{image_kind} | {present} | {absent} | {uncertain}", "CT")
    assert "Nodule" not in custom and custom.startswith("CT | ")
    with pytest.raises(BenchError, match="placeholders may be"):
        mb.check_options("Describe {organ}.", 256, 8)


# --------------------------------------------------------------------------- generation through the openai adapter


def test_reports_from_openai_stub_then_all_cached(tmp_path: Path) -> None:
    samples = _train()
    out, cache = tmp_path / "boot" / "reports.jsonl", tmp_path / "cache.sqlite"
    with StubServer(responder=echo_present) as server:
        kw: dict[str, Any] = {
            "generator_args": _gen_args(server),
            "limit": LIMIT,
            "batch_size": 4,
            "max_new_tokens": 200,
            "cache_path": cache,
            "log": lambda m: None,
        }
        summary = api.meddr_bootstrap("openai", "synthcxr", out, **kw)
        received = server.answered()
        assert server.count == LIMIT and len(received) == LIMIT
        records = _read_jsonl(out)
        assert summary["written"] == LIMIT and summary["generated"] == LIMIT
        assert summary["cached"] == 0 and summary["skipped"] == 0 and summary["output"] == str(out)

        # concurrency=1: the server saw the samples in order, each prompt with its own image
        for sample, item, record in zip(samples, received, records, strict=True):
            _check_prompt(item.prompt, sample)
            assert item.body is not None and item.body["max_tokens"] == 200 and item.body["temperature"] == 0.0
            assert len(item.images) == 1
            from PIL import Image

            sent = np.asarray(Image.open(io.BytesIO(item.images[0])))
            np.testing.assert_array_equal(sent, np.asarray(sample.image.load()))
            assert set(record) == {"id", "image", "labels", "prompt", "report", "generator", "generator_fingerprint"}
            assert record["id"] == sample.id and record["image"] == sample.image.path
            assert record["labels"] == sample.labels and record["prompt"] == item.prompt
            positives = ", ".join(n for n, v in sample.labels.items() if v == 1)
            assert record["report"] == f"Findings consistent with: {positives}."
            assert record["generator"] == "openai"
            assert record["generator_fingerprint"] == summary["generator_fingerprint"]
        assert not out.with_name(out.name + ".partial").exists()

        # the same command again: every report from the cache, no request reaches the server
        first = out.read_text()
        again = api.meddr_bootstrap("openai", "synthcxr", out, **kw)
        assert server.count == LIMIT
        assert again["cached"] == LIMIT and again["generated"] == 0 and again["written"] == LIMIT
        assert out.read_text() == first


def test_crash_keeps_finished_batches(tmp_path: Path) -> None:
    calls = {"n": 0}

    def fail_fifth(item: Received) -> str:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("server crashed")
        return echo_present(item)

    out, cache = tmp_path / "reports.jsonl", tmp_path / "cache.sqlite"
    with StubServer(responder=fail_fifth) as server:
        kw: dict[str, Any] = {
            "generator_args": _gen_args(server, max_retries=0),
            "limit": LIMIT,
            "batch_size": 2,
            "cache_path": cache,
            "log": lambda m: None,
        }
        with pytest.raises(BenchError, match="HTTP 500"):
            api.meddr_bootstrap("openai", "synthcxr", out, **kw)
        assert server.count == 5 and len(server.answered()) == 4
        assert not out.exists()  # an output file is only ever complete
        assert len(_read_jsonl(out.with_name(out.name + ".partial"))) == 4  # the two finished batches
        with PredictionCache(cache) as c:
            assert c.count() == 4

        summary = api.meddr_bootstrap("openai", "synthcxr", out, **kw)
        assert server.count == 7  # only the unfinished batch was asked again
        assert summary["cached"] == 4 and summary["generated"] == 2 and summary["written"] == LIMIT
        assert [r["id"] for r in _read_jsonl(out)] == [s.id for s in _train()]


def test_samples_without_labels_or_image_are_skipped(tmp_path: Path) -> None:
    train = _train(5)
    samples = [
        train[0],
        dataclasses.replace(train[1], labels={}),
        dataclasses.replace(train[2], labels=dict.fromkeys(train[2].labels)),  # every label unmentioned
        dataclasses.replace(train[3], images=[]),
        train[4],
    ]
    logged: list[str] = []
    stats = mb.BootstrapStats()
    with StubServer(responder=echo_present) as server, PredictionCache(tmp_path / "c.sqlite") as cache:
        records = list(
            mb.bootstrap_reports(
                "openai",
                samples,
                prompt_template=prompts.BOOTSTRAP_FINDINGS,
                generator_args={"model": "stub-model", "base_url": server.base_url},
                cache=cache,
                log=logged.append,
                stats=stats,
            )
        )
        assert server.count == 2
    assert [r["id"] for r in records] == [train[0].id, train[4].id]
    assert (stats.written, stats.skipped_no_labels, stats.skipped_no_image, stats.skipped) == (2, 2, 1, 3)
    assert logged == [
        "meddr-bootstrap: 2 reports (0 from the cache, 2 generated); "
        "skipped 2 samples without labels and 1 without an image"
    ]


# --------------------------------------------------------------------------- the command line


def test_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "reports.jsonl"
    with StubServer(responder=echo_present) as server:
        res = run_bench(
            "meddr-bootstrap",
            "--generator",
            "openai",
            "--generator-args",
            f"model=stub-model;base_url={server.base_url}",
            "--data",
            "synthcxr",
            "--limit",
            "3",
            "--output",
            str(out),
            "--max-new-tokens",
            "64",
            "--batch-size",
            "2",
            "--cache",
            str(tmp_path / "cache.sqlite"),
        )
        assert res.returncode == 0, res.stderr
        assert server.count == 3
        assert all(r.body is not None and r.body["max_tokens"] == 64 for r in server.answered())
    summary = json.loads(res.stdout)
    assert summary["written"] == 3 and summary["skipped"] == 0 and summary["cached"] == 0
    assert summary["output"] == str(out)
    assert "meddr-bootstrap: 3 reports (0 from the cache, 3 generated)" in res.stderr
    records = _read_jsonl(out)
    samples = _train(3)
    assert [r["id"] for r in records] == [s.id for s in samples]
    for sample, record in zip(samples, records, strict=True):
        _check_prompt(record["prompt"], sample)
        assert record["labels"] == sample.labels and record["report"].startswith("Findings consistent with: ")


def _refused(res: Any, *fragments: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: "), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    for fragment in fragments:
        assert fragment in res.stderr, res.stderr


@pytest.mark.parametrize(
    ("generator", "generator_args", "needle"),
    [
        ("opena", "model=m", "unknown model 'opena'"),
        ("clip-baseline", "", "generator 'clip-baseline' lacks the generate capability"),
        ("openai", "model=m;oops", "meddr-bootstrap: generator_args: expected key=value pairs separated by ';'"),
    ],
)
def test_cli_bad_generator(tmp_path: Path, generator: str, generator_args: str, needle: str) -> None:
    out = tmp_path / "reports.jsonl"
    args = ["--generator", generator, "--data", "synthcxr", "--limit", "2", "--output", str(out)]
    res = run_bench("meddr-bootstrap", *args, *(["--generator-args", generator_args] if generator_args else []))
    _refused(res, needle)
    assert not any(tmp_path.iterdir())


def test_cli_dataset_without_labels(tmp_path: Path) -> None:
    make_vqa_rad(tmp_path / "data" / "vqa_rad")
    out = tmp_path / "reports.jsonl"
    res = run_bench(
        "meddr-bootstrap",
        *("--generator", "openai", "--generator-args", "model=m;base_url=http://127.0.0.1:9/v1"),
        *("--data", "vqa_rad", "--data-root", str(tmp_path / "data"), "--output", str(out)),
    )
    _refused(res, "no sample of vqa_rad:train has both an image and labels", "needs a labelled image dataset")
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_cli_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "reports.jsonl"
    res = run_bench(
        "meddr-bootstrap",
        *("--generator", "openai", "--generator-args", "model=m;base_url=http://127.0.0.1:9/v1"),
        *("--data", "synthcxr", "--limit", "2", "--output", str(out)),
    )
    _refused(res, "cannot write the output file", str(out))
