"""The OpenAI-compatible adapter against a real HTTP server on 127.0.0.1 (tests/openai_stub_server.py):
request format, retries (429 + Retry-After, 5xx, timeouts, malformed bodies), clear errors, the privacy
guard, the key never written anywhere, and `bench run` served from the cache the second time."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.interfaces import BenchError, GenerationRequest, ImageRef
from models.openai_chat import OpenAIChat, image_data_url, quick_fingerprint, retry_after_seconds
from tests.conftest import run_bench
from tests.openai_stub_server import DATA_URL_PREFIX, Fault, StubServer, default_answer

SECRET = "sk-test-secret"


@pytest.fixture
def server():
    with StubServer(expected_key=SECRET) as srv:
        yield srv


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return SECRET


@pytest.fixture
def image(tmp_path) -> ImageRef:
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, (32, 40), dtype=np.uint8), mode="L").save(path)
    return ImageRef(key="x", path=str(path))


def _requests(image: ImageRef, n: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(images=(image,), prompt=f"Question: Is there finding number {i}?", sample_id=f"s{i}")
        for i in range(n)
    ]


# --------------------------------------------------------------------------- arguments and the privacy guard


def test_arguments_are_validated(key):
    with pytest.raises(BenchError, match=r"unknown argument.*temprature.*accepted: model, base_url"):
        OpenAIChat(model="m", base_url="http://127.0.0.1:1/v1", temprature=0.5)
    with pytest.raises(BenchError, match="give the endpoint's model id"):
        OpenAIChat(base_url="http://127.0.0.1:1/v1")
    with pytest.raises(BenchError) as err:
        OpenAIChat(model="m", base_url="http://127.0.0.1:1/v1", api_key="sk-on-the-command-line")
    assert "environment variable" in str(err.value) and "sk-on-the-command-line" not in str(err.value)
    with pytest.raises(BenchError, match="concurrency must be at least 1"):
        OpenAIChat(model="m", base_url="http://127.0.0.1:1/v1", concurrency=0)
    with pytest.raises(BenchError, match="timeout must be a positive"):
        OpenAIChat(model="m", base_url="http://127.0.0.1:1/v1", timeout=-1)
    with pytest.raises(BenchError, match="allow_remote must be true or false"):
        OpenAIChat(model="m", base_url="http://127.0.0.1:1/v1", allow_remote="maybe")
    with pytest.raises(BenchError, match="must not hold credentials"):
        OpenAIChat(model="m", base_url="http://user:pw@127.0.0.1:1/v1")
    with pytest.raises(BenchError, match="http"):
        OpenAIChat(model="m", base_url="ftp://127.0.0.1/v1")
    with pytest.raises(BenchError, match="MY_KEY"):
        OpenAIChat(model="m", base_url="http://127.0.0.1:1/v1", api_key_env="MY_KEY")


def test_remote_endpoint_is_refused_without_allow_remote(key):
    with pytest.raises(BenchError) as err:
        OpenAIChat(model="m", base_url="https://api.example.com/v1")
    msg = str(err.value)
    assert "not a loopback address" in msg and "Credentialed data" in msg and "MIMIC-CXR" in msg
    assert "CheXpert" in msg and "allow_remote=true" in msg
    with pytest.raises(BenchError, match="loopback"):
        quick_fingerprint({"model": "m", "base_url": "http://10.0.0.7:8000/v1"})
    # accepted with allow_remote=true; nothing is sent until generate() is called
    model = OpenAIChat(model="m", base_url="https://api.example.com/v1", allow_remote=True)
    assert model.describe()["remote"] is True and model._client is None
    for url in ("http://localhost:8000/v1", "http://127.0.0.5:1/v1", "http://[::1]:8000/v1"):
        assert OpenAIChat(model="m", base_url=url).describe()["remote"] is False


def test_remote_endpoint_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BenchError, match="set the environment variable OPENAI_API_KEY"):
        OpenAIChat(model="m", base_url="https://api.example.com/v1", allow_remote=True)
    OpenAIChat(model="m", base_url="http://127.0.0.1:8000/v1")  # a local server may need no key
    monkeypatch.setenv("OTHER_KEY", "k2")
    assert OpenAIChat(model="m", base_url="http://127.0.0.1:8000/v1", api_key_env="OTHER_KEY")._key == "k2"


def test_fingerprint_is_model_endpoint_and_seed_not_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "key-one")
    base = {"model": "m", "base_url": "http://127.0.0.1:8000/v1"}
    a = OpenAIChat(**base)
    monkeypatch.setenv("OPENAI_API_KEY", "key-two")
    b = OpenAIChat(**base, concurrency=9, max_retries=1, timeout=5)
    assert a.fingerprint() == b.fingerprint() == quick_fingerprint(base)
    assert OpenAIChat(**base, device="cuda").fingerprint() == a.fingerprint()
    others = [
        {**base, "model": "m2"},
        {**base, "base_url": "http://127.0.0.1:8001/v1"},
        {**base, "base_url": "http://127.0.0.1:8000/v2"},
        {**base, "seed": 1},
    ]
    assert len({a.fingerprint(), *(quick_fingerprint(o) for o in others)}) == 5
    for text in (repr(b), json.dumps(b.describe()), json.dumps(b.args), b.fingerprint()):
        assert "key-two" not in text


# --------------------------------------------------------------------------- requests and answers


def test_request_format_and_answers(server, key, image):
    model = OpenAIChat(model="stub-model", base_url=server.base_url, seed=3)
    request = GenerationRequest(
        images=(image,), prompt="Question: Is the heart enlarged?", temperature=0.7, top_p=0.9, max_new_tokens=17,
        system="You are a radiologist.",
    )  # fmt: skip
    [answer] = model.generate([request])
    [got] = server.received
    assert answer == got.answer == default_answer(got.prompt, got.images) and answer in ("yes", "no")
    assert got.authorization == f"Bearer {SECRET}"
    assert got.prompt == "Question: Is the heart enlarged?" and got.system == "You are a radiologist."
    body = got.body
    assert body["model"] == "stub-model" and body["seed"] == 3
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 17)
    parts = body["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"]  # image first, then the prompt
    assert parts[0]["image_url"]["url"].startswith(DATA_URL_PREFIX)
    sent = Image.open(io.BytesIO(got.images[0]))
    assert sent.format == "PNG" and np.array_equal(np.asarray(sent), np.asarray(Image.open(image.path)))
    other = OpenAIChat(model="m", base_url=server.base_url, max_tokens_param="max_completion_tokens")
    other.generate([request])
    assert server.received[-1].body["max_completion_tokens"] == 17 and "max_tokens" not in server.received[-1].body
    assert model.generate([]) == []


def test_sixteen_bit_images_are_sent_as_8_bit_png():
    arr = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    url = image_data_url(Image.fromarray(arr))
    im = Image.open(io.BytesIO(base64.b64decode(url[len(DATA_URL_PREFIX) :])))
    px = np.asarray(im)
    assert im.mode == "L" and px.min() == 0 and px.max() == 255
    assert np.all(np.diff(px.astype(int).ravel()) >= 0)  # order of intensities kept


def test_retry_after_header_parsing():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a past date
    assert retry_after_seconds({}) is None and retry_after_seconds({"retry-after": "soon"}) is None


def test_transient_failures_are_retried(server, key, image, caplog):
    server.add_faults(
        Fault("429", retry_after="1"), Fault("500"), Fault("timeout", delay=2.0), Fault("malformed"), Fault("503")
    )
    model = OpenAIChat(model="m", base_url=server.base_url, concurrency=3, timeout=1.0, backoff=0.01, max_retries=5)
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="medvlbench.openai"):
        answers = model.generate(_requests(image, 8))
    elapsed = time.perf_counter() - start
    assert sorted(server.faults_served) == ["429", "500", "503", "malformed", "timeout"]
    answered = {r.prompt: r.answer for r in server.answered()}
    assert len(answered) == 8 and server.count == 13  # 8 answers + 5 failed attempts
    assert answers == [answered[f"Question: Is there finding number {i}?"] for i in range(8)]
    assert answers == [default_answer(r.prompt, r.images) for r in _requests_sent(server, 8)]
    stats = model.stats
    assert stats["requests"] == 13 and stats["retries"] == 5 and stats["answers"] == 8
    assert stats["retry:429"] == 1 and stats["retry:5xx"] == 2
    assert stats["retry:timeout"] == 1 and stats["retry:malformed"] == 1
    assert elapsed >= 1.0  # the 429's Retry-After: 1 was honoured
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 5 and any("HTTP 429" in m and "in 1.00 s" in m for m in retries)


def _requests_sent(server: StubServer, n: int) -> list:
    by_prompt = {r.prompt: r for r in server.answered()}
    return [by_prompt[f"Question: Is there finding number {i}?"] for i in range(n)]


def test_client_errors_fail_at_once_without_the_key(server, key, image):
    server.add_faults(Fault("400", message=f"model not found (you sent key {SECRET})"))
    model = OpenAIChat(model="m", base_url=server.base_url, backoff=0.01)
    with pytest.raises(BenchError) as err:
        model.generate(_requests(image, 1))
    msg = str(err.value)
    assert "HTTP 400" in msg and "model not found" in msg and SECRET not in msg and "***" in msg
    assert server.count == 1  # not retried
    strict_key = r"HTTP 401.*invalid API key.*check the key in OPENAI_API_KEY"
    with StubServer(expected_key="another-key") as strict, pytest.raises(BenchError, match=strict_key):
        OpenAIChat(model="m", base_url=strict.base_url).generate(_requests(image, 1))


def test_persistent_failures_end_in_one_clear_error(server, key, image):
    server.add_faults(*[Fault("malformed")] * 3)
    model = OpenAIChat(model="m", base_url=server.base_url, max_retries=2, backoff=0.01)
    with pytest.raises(BenchError, match=r"failed after 3 attempt\(s\): malformed response body"):
        model.generate(_requests(image, 1))
    assert server.count == 3 and model.stats["failures"] == 1
    port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    server.stop()
    down = OpenAIChat(model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.01)
    with pytest.raises(BenchError, match=r"connection error.*is the server running"):
        down.generate(_requests(image, 2))


# --------------------------------------------------------------------------- bench run


def _secret_free(*roots: Path) -> None:
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            assert SECRET.encode() not in f.read_bytes(), f


def test_bench_run_vqa_retries_then_serves_from_cache(server, tmp_path):
    server.add_faults(
        Fault("429", retry_after="1"), Fault("500"), Fault("timeout", delay=3.0), Fault("malformed")
    )  # fmt: skip
    out, cache = tmp_path / "runs", tmp_path / "cache.sqlite"
    args = (
        "run", "--model", "openai", "--task", "synthcxr_vqa", "--limit", "12", "--bootstrap", "100",
        "--model-args", f"model=stub-model,base_url={server.base_url},timeout=2,backoff=0.01,concurrency=4",
        "--output", str(out), "--cache", str(cache), "--no-progress",
    )  # fmt: skip
    env = {"OPENAI_API_KEY": SECRET}
    first = run_bench(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert sorted(server.faults_served) == ["429", "500", "malformed", "timeout"]
    assert server.count == 16 and len(server.answered()) == 12
    assert first.stderr.count("; retry ") == 4 and "HTTP 429" in first.stderr
    assert {r.authorization for r in server.received} == {f"Bearer {SECRET}"}
    run_dir = Path(json.loads(first.stdout)["run_dir"])
    records = [json.loads(line) for line in (run_dir / "samples" / "synthcxr_vqa.jsonl").read_text().splitlines()]
    served = {r.prompt: r.answer for r in server.answered()}
    assert len(records) == 12
    for rec in records:  # the records hold the server's answers to exactly these prompts
        assert rec["inputs"]["prompt"] in served and rec["prediction"] == served[rec["inputs"]["prompt"]]
        assert rec["scores"]["exact"] == (rec["prediction"] == rec["reference"])
    results = json.loads((run_dir / "results.json").read_text())
    task = results["tasks"]["synthcxr_vqa"]
    exact = np.mean([r["prediction"] == r["reference"] for r in records])
    assert task["metrics"]["vqa_exact_match"]["value"] == pytest.approx(exact)
    assert task["calls"]["model_items"] == 12 and task["calls"]["cache_hits"] == 0
    assert results["model"]["args"]["model"] == "stub-model"

    before = server.count
    second = run_bench(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert server.count == before  # zero requests: every answer came from the cache
    again = json.loads((Path(json.loads(second.stdout)["run_dir"]) / "results.json").read_text())
    assert again["tasks"]["synthcxr_vqa"]["calls"] == {
        "model_items": 0, "model_calls": 0, "cache_hits": 12, "reused": 0, "model_seconds": 0.0
    }  # fmt: skip
    assert again["tasks"]["synthcxr_vqa"]["metrics"] == task["metrics"]
    for res in (first, second):
        assert SECRET not in res.stdout and SECRET not in res.stderr
    _secret_free(out, cache)


def test_bench_run_refuses_a_remote_endpoint(tmp_path):
    res = run_bench(
        "run", "--model", "openai", "--task", "synthcxr_vqa", "--output", str(tmp_path),
        "--model-args", "model=gpt-x,base_url=https://api.example.com/v1", "--no-progress",
        env={"OPENAI_API_KEY": SECRET},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Credentialed data" in res.stderr and "allow_remote=true" in res.stderr
    assert "Traceback" not in res.stderr and SECRET not in res.stderr
    assert not list(tmp_path.rglob("results.json"))
