"""CheXprompt, the LLM-judge metric: the reply parser (JSON and the published two-line format), the aggregates on a
hand-computed set, and the judge against a real OpenAI-compatible server on 127.0.0.1 (tests/openai_stub_server.py):
retries on 429 / 500 / timeouts, an unreadable reply repaired once then counted as a failure, verdicts served from
the cache on re-scoring, the privacy guard, and the key absent from every file a run writes."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import api
from bench.endpoint import is_loopback
from bench.interfaces import BenchError
from bench.metrics import judge_metrics
from bench.metrics.judge import (
    EXAMPLES,
    LETTERS,
    Judgement,
    JudgeParseError,
    metric_names,
    parse_judgement,
    prompt_version,
    render_messages,
)
from bench.metrics.judge_client import JudgeConfig
from tests.conftest import run_bench
from tests.openai_stub_server import Fault, Received, StubServer, default_answer, judged_pair

SECRET = "sk-judge-secret-7f3a"


def _json_reply(sig: dict[str, int], insig: dict[str, int]) -> str:
    return json.dumps(
        {"significant": {x: sig.get(x, 0) for x in LETTERS}, "insignificant": {x: insig.get(x, 0) for x in LETTERS}}
    )


def _by_type_reply(sig: dict[str, int], insig: dict[str, int]) -> str:
    """The published protocol's two lines."""
    line = "Number of clinically {} errors by type: ({})"
    pairs = [", ".join(f"({x}, {d.get(x, 0)})" for x in LETTERS) for d in (sig, insig)]
    return line.format("significant", pairs[0]) + "\n" + line.format("insignificant", pairs[1])


# --------------------------------------------------------------------------- parsing


def test_parse_json_reply():
    j = parse_judgement('```json\n{"significant": {"A": 1, "B": 0, "C": 2, "D": 0, "E": 0, "F": 0},\n'
                        ' "insignificant": {"a": 0, "b": 3, "c": 0, "d": 0, "e": 1, "f": 0}}\n```')  # fmt: skip
    assert j == Judgement((1, 0, 2, 0, 0, 0), (0, 3, 0, 0, 1, 0))
    assert (j.n_significant, j.n_total) == (3, 7)
    prose = 'Counting carefully. {"note": "x"} Result: ' + _json_reply({"F": 1}, {"A": 2.0}) + " Done."
    assert parse_judgement(prose) == Judgement((0, 0, 0, 0, 0, 1), (2, 0, 0, 0, 0, 0))
    for example in EXAMPLES:  # the in-context answers are in the format the parser reads
        assert parse_judgement(example.counts.answer()) == example.counts


def test_parse_two_line_by_type_reply():
    published = (
        "Number of clinically significant errors by type: ((A, 1), (B, 1), (C, 0), (D, 0), (E, 0), (F, 1))\n\n"
        "Number of clinically insignificant errors by type: [(A, 0), (B, 2), (C, 0), (D, 0), (E, 3), (F, 0)]\n"
        "Explanation: the candidate misses the effusion."
    )
    assert parse_judgement(published) == Judgement((1, 1, 0, 0, 0, 1), (0, 2, 0, 0, 3, 0))
    # order of the two lines does not matter; "significant" is not mistaken inside "insignificant"
    swapped = "\n".join(reversed(_by_type_reply({"D": 2}, {"C": 1}).splitlines()))
    assert parse_judgement(swapped) == Judgement((0, 0, 0, 2, 0, 0), (0, 0, 1, 0, 0, 0))


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("", "empty"),
        ("The candidate has two errors.", "no JSON object"),
        (json.dumps({"significant": dict.fromkeys(LETTERS, 0)}), 'no "insignificant"'),
        (_json_reply({}, {}).replace('"F": 0}}', '"F": 0, "G": 1}}'), "unknown error type 'G'"),
        (_json_reply({}, {}).replace('"A": 0', '"A": -1', 1), "negative"),
        (_json_reply({}, {}).replace('"A": 0', '"A": 1.5', 1), "not a whole number"),
        (_json_reply({}, {}).replace('"A": 0', '"A": true', 1), "not a count"),
        ('{"significant": {"A": 0, "B": 0, "C": 0, "D": 0, "E": 0}, "insignificant": {}}', "missing error type(s) F"),
        (_by_type_reply({}, {}).splitlines()[0], "insignificant errors by type:' is missing"),
        (_by_type_reply({}, {}).replace("(B, 0), ", "", 1), "significant: missing error type(s) B"),
        (_by_type_reply({}, {}).replace("(B, 0)", "(A, 2)", 1), "error type A given twice"),
    ],
)
def test_unreadable_replies_are_refused(reply, message):
    with pytest.raises(JudgeParseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_judgement(reply)


def test_prompt_holds_the_pair_the_types_and_the_examples():
    system, user = render_messages("Right  pleural\neffusion.", "No effusion.")
    assert system["role"] == "system" and "radiologist" in system["content"]
    text = user["content"]
    assert text.endswith(
        "Reference report: <<<Right pleural effusion.>>>\nCandidate report: <<<No effusion.>>>\nAnswer:"
    )
    assert judged_pair(text) == ("Right pleural effusion.", "No effusion.")
    assert text.count("Example ") == len(EXAMPLES) == 5
    for letter in LETTERS:
        assert f"\n{letter}) " in text
    assert "clinically significant" in text and "JSON" in text
    assert prompt_version().startswith("chexprompt-v1-") and len(prompt_version()) == len("chexprompt-v1-") + 10


# --------------------------------------------------------------------------- aggregates

# Four judged reports and one judge failure (None). By hand, over the 4 judged:
#   significant errors 1, 0, 0, 3 -> mean 1.0; total errors 2, 1, 0, 4 -> mean 1.75
#   no significant error: reports 2, 3 -> 50 %; error-free: report 3 -> 25 %
#   type A: 1+0+0+1 = 2 -> 0.5 (significant 1 -> 0.25); type B: 1+0+0+2 -> 0.75 (significant 2 -> 0.5)
#   type C: 1 -> 0.25 (significant 0.25); type E: 1 -> 0.25 (significant 0); D, F: 0
HAND = [
    Judgement((1, 0, 0, 0, 0, 0), (0, 1, 0, 0, 0, 0)),
    Judgement((0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 1, 0)),
    Judgement((0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0)),
    None,
    Judgement((0, 2, 1, 0, 0, 0), (1, 0, 0, 0, 0, 0)),
]
HAND_VALUES = {
    "chexprompt_mean_significant_errors": 1.0,
    "chexprompt_mean_total_errors": 1.75,
    "chexprompt_pct_no_significant_errors": 50.0,
    "chexprompt_pct_error_free": 25.0,
    "chexprompt_false_finding": 0.5,
    "chexprompt_false_finding_significant": 0.25,
    "chexprompt_omitted_finding": 0.75,
    "chexprompt_omitted_finding_significant": 0.5,
    "chexprompt_wrong_location": 0.25,
    "chexprompt_wrong_location_significant": 0.25,
    "chexprompt_wrong_severity": 0.0,
    "chexprompt_wrong_severity_significant": 0.0,
    "chexprompt_false_comparison": 0.25,
    "chexprompt_false_comparison_significant": 0.0,
    "chexprompt_omitted_comparison": 0.0,
    "chexprompt_omitted_comparison_significant": 0.0,
}


def test_aggregates_on_a_hand_computed_set():
    assert metric_names() == list(HAND_VALUES)
    stats = judge_metrics.judgement_stats(HAND)
    for name, expected in HAND_VALUES.items():
        metric = getattr(judge_metrics, name.removeprefix("chexprompt_"))
        assert float(metric.aggregate(stats.sum(axis=0), len(stats))) == pytest.approx(expected), name
        assert metric.summary(stats) == {"n": 4, "n_judge_failed": 1}
    # a resample holding only the failure has no value (not 0 errors)
    assert np.isnan(judge_metrics.mean_total_errors.aggregate(stats[3], 1))


# --------------------------------------------------------------------------- the judge against a real server

# candidate text -> the judge's reply (the hand-computed set above; "unreadable" never answers in the format)
HAND_REPLIES = {
    "cand one": _json_reply({"A": 1}, {"B": 1}),
    "cand two": _by_type_reply({}, {"E": 1}),
    "cand three": _json_reply({}, {}),
    "cand unreadable": "I would say the report is mostly fine.",
    "cand four": "```json\n" + _json_reply({"B": 2, "C": 1}, {"A": 1}) + "\n```",
}


def judge_responder(replies: dict[str, str], repaired: dict[str, str] | None = None):
    """Answers judge requests from ``replies`` (by candidate text) and, after the repair instruction, from
    ``repaired``; any other request (the model under evaluation) gets the stub's default answer."""

    def respond(item: Received) -> str:
        try:
            _, candidate = judged_pair(item.prompt)
        except ValueError:
            return default_answer(item.prompt, item.images)
        if item.roles[-2:] == ["assistant", "user"] and repaired and candidate in repaired:
            return repaired[candidate]
        return replies[candidate]

    return respond


def _records(replies: dict[str, str]) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prediction": c, "reference": f"reference {i}"} for i, c in enumerate(replies)]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _config(server: StubServer, **extra) -> JudgeConfig:
    return JudgeConfig.from_options({"model": "judge-m", "base_url": server.base_url, "backoff": 0.01, **extra})


def test_scoring_with_the_judge_matches_the_hand_computed_set(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    preds = _write(tmp_path / "p.jsonl", _records(HAND_REPLIES))
    with StubServer(responder=judge_responder(HAND_REPLIES)) as server:
        out = api.score(
            preds, metrics=metric_names(), bootstrap=200, judge={"model": "judge-m", "base_url": server.base_url},
            cache_path=tmp_path / "cache.sqlite",
        )  # fmt: skip
        requests = list(server.received)
        host = server.base_url.split("//")[1].removesuffix("/v1")
    for name, expected in HAND_VALUES.items():
        entry = out[name]
        assert entry["value"] == pytest.approx(expected), name
        assert (entry["n"], entry["n_judge_failed"]) == (4, 1)
        low, high = entry["ci95"]
        assert low is not None and low <= entry["value"] + 1e-12 and high >= entry["value"] - 1e-12
    # five pairs asked once each, the unreadable one sent back once with the repair instruction
    assert len(requests) == 6
    repairs = [r for r in requests if r.roles == ["system", "user", "assistant", "user"]]
    assert len(repairs) == 1 and "could not be read" in repairs[0].prompt
    assert repairs[0].body["messages"][2]["content"] == HAND_REPLIES["cand unreadable"]
    assert {r.body["temperature"] for r in requests} == {0.0} and {r.body["model"] for r in requests} == {"judge-m"}
    judge = out["judge"]
    assert judge["model"] == "judge-m" and judge["prompt_version"] == prompt_version()
    assert judge["host"] == host and judge["remote"] is False
    assert (judge["n_judged"], judge["n_judge_failed"], judge["repairs"]) == (4, 1, 1)
    assert judge["failure_reasons"] == {"unparseable reply": 1}
    # the stub counts whitespace-separated words as tokens
    prompt_tokens = sum(len(r.prompt.split()) for r in requests)
    completion_tokens = sum(len(r.answer.split()) for r in requests)
    assert judge["usage"]["prompt_tokens"] == prompt_tokens
    assert judge["usage"]["completion_tokens"] == completion_tokens
    assert "cost_usd" not in judge  # no prices configured


def test_retries_then_cache_hits_on_rescoring(tmp_path, caplog):
    replies = {f"cand {i}": _json_reply({"A": i % 2}, {"C": 1}) for i in range(6)}
    preds = _write(tmp_path / "p.jsonl", _records(replies))
    cache = tmp_path / "cache.sqlite"
    options = {"model": "judge-m", "timeout": 0.5, "backoff": 0.01, "concurrency": 3, "max_retries": 3}
    options |= {"price_input": 2.0, "price_output": 10.0}
    with StubServer(responder=judge_responder(replies)) as server:
        options["base_url"] = server.base_url
        server.add_faults(Fault("429", retry_after="0.05"), Fault("500"), Fault("timeout", delay=1.5))
        with caplog.at_level(logging.WARNING, logger="medvlbench.judge"):
            first = api.score(preds, metrics=metric_names()[:4], bootstrap=0, judge=options, cache_path=cache)
        assert sorted(server.faults_served) == ["429", "500", "timeout"]
        assert server.count == 6 + 3 and len(server.answered()) == 6
        assert first["chexprompt_mean_total_errors"]["value"] == pytest.approx(1.5)  # A: 3 of 6, C: 1 each
        assert first["chexprompt_mean_significant_errors"]["n_judge_failed"] == 0
        j = first["judge"]
        assert j["http"]["retries"] == 3 and j["http"]["retry:429"] == 1 and j["http"]["retry:timeout"] == 1
        usage = j["usage"]
        assert j["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 10.0) / 1e6)
        assert sum("retry" in r.getMessage() for r in caplog.records) == 3

        second = api.score(preds, metrics=metric_names()[:4], bootstrap=0, judge=options, cache_path=cache)
        assert server.count == 9  # re-scoring asked nothing: every verdict came from the cache
        assert second["judge"]["cache_hits"] == 6 and second["judge"]["usage"]["total_tokens"] == 0
        assert second["judge"]["cost_usd"] == 0.0
        assert {k: v["value"] for k, v in second.items() if k != "judge"} == {
            k: v["value"] for k, v in first.items() if k != "judge"
        }
        # another prompt version or judge model is another cache entry; --no-cache asks again
        api.score(preds, metrics=metric_names()[:1], bootstrap=0, judge={**options, "model": "other"}, cache_path=cache)
        assert server.count == 15
        api.score(preds, metrics=metric_names()[:1], bootstrap=0, judge=options, cache_path=cache, use_cache=False)
        assert server.count == 21


def test_failures_are_counted_not_scored_and_asked_again(tmp_path):
    replies = {"good": _json_reply({"A": 2}, {}), "prose": "no idea", "fixed": "two errors, I think"}
    repaired = {"fixed": _json_reply({}, {"D": 1})}  # "prose" stays unreadable after the repair instruction
    preds = _write(tmp_path / "p.jsonl", _records(replies))
    cache = tmp_path / "cache.sqlite"
    with StubServer(responder=judge_responder(replies, repaired)) as server:
        server.add_faults(*[Fault("503")] * 3)  # "good" fails on every attempt (max_retries=2): a judge failure
        opts = {"model": "m", "base_url": server.base_url, "backoff": 0.01, "max_retries": 2, "concurrency": 1}
        out = api.score(preds, metrics=metric_names(), bootstrap=0, judge=opts, cache_path=cache)
        assert server.count == 3 + 2 + 2  # good: 3 attempts; prose and fixed: asked, then repaired
        assert out["chexprompt_mean_total_errors"]["value"] == 1.0 and out["chexprompt_mean_total_errors"]["n"] == 1
        assert out["chexprompt_pct_error_free"]["value"] == 0.0  # the failures are not error-free reports
        j = out["judge"]
        assert (j["n_judged"], j["n_judge_failed"]) == (1, 2)
        assert j["failure_reasons"] == {"request failed": 1, "unparseable reply": 1}
        again = api.score(preds, metrics=metric_names()[:2], bootstrap=0, judge=opts, cache_path=cache)
        assert server.count == 7 + 1 + 2  # only the failures were asked again (fixed came from the cache)
        assert again["chexprompt_mean_total_errors"]["value"] == pytest.approx(1.5)
        assert again["judge"]["cache_hits"] == 1


def test_unavailable_without_a_judge(tmp_path):
    preds = _write(tmp_path / "p.jsonl", _records({"a": ""}))
    out = api.score(preds, metrics=["chexprompt_pct_error_free", "bleu1"], bootstrap=0)
    assert out["chexprompt_pct_error_free"]["value"] is None
    assert "--judge" in out["chexprompt_pct_error_free"]["unavailable"] and "judge" not in out


def test_client_errors_stop_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    preds = _write(tmp_path / "p.jsonl", _records({"a": ""}))
    with StubServer(expected_key="another-key") as server:
        opts = {"model": "m", "base_url": server.base_url, "api_key_env": "JUDGE_KEY"}
        with pytest.raises(BenchError, match=r"HTTP 401.*check the key in JUDGE_KEY") as err:
            api.score(preds, metrics=metric_names()[:1], bootstrap=0, judge=opts, use_cache=False)
        assert SECRET not in str(err.value) and server.count == 1  # not retried
        port = server.base_url.split(":")[2].split("/")[0]
    down = {"model": "m", "base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 1, "backoff": 0.01}
    with pytest.raises(BenchError, match="is the server running"):
        api.score(preds, metrics=metric_names()[:1], bootstrap=0, judge=down, use_cache=False)


# --------------------------------------------------------------------------- privacy


def test_remote_endpoints_are_refused(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    for url in ("https://api.example.com/v1", "http://10.0.0.7:8000/v1", "http://[2001:db8::1]/v1"):
        with pytest.raises(BenchError) as err:
            JudgeConfig.from_options({"model": "m", "base_url": url})
        msg = str(err.value)
        assert "not a loopback address" in msg and "third-party services" in msg and "MIMIC-CXR" in msg
        assert "--allow-remote-judge" in msg
    allowed = JudgeConfig.from_options({"model": "m", "base_url": "https://api.example.com/v1"}, allow_remote=True)
    assert allowed.describe()["remote"] is True and allowed.describe()["host"] == "api.example.com"
    assert JudgeConfig.from_options({"model": "m", "base_url": "https://api.example.com/v1", "allow_remote": "true"})
    for url in ("http://localhost:8000/v1", "http://127.0.0.9:1/v1", "http://[::1]:8000/v1"):
        assert JudgeConfig.from_options({"model": "m", "base_url": url}).describe()["remote"] is False
    with pytest.raises(BenchError, match="never a --judge value"):
        JudgeConfig.from_options({"model": "m", "base_url": "http://127.0.0.1:1/v1", "api_key": "x"})
    with pytest.raises(BenchError, match=r"unknown option.*temprature"):
        JudgeConfig.from_options({"model": "m", "base_url": "http://127.0.0.1:1/v1", "temprature": 0})
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(BenchError, match="no API key: set the environment variable OPENAI_API_KEY"):
        allowed.read_key()


def test_loopback_names_are_resolved(monkeypatch):
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("[::1]")
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("localhost") and is_loopback("judge.localhost")
    assert not is_loopback("10.0.0.7") and not is_loopback("::ffff:10.0.0.7") and not is_loopback("")
    table = {"judge-box": ["127.0.1.1"], "mixed": ["127.0.0.1", "192.0.2.4"], "far": ["192.0.2.4"]}

    def fake_getaddrinfo(host, *args, **kwargs):  # the resolver is outside the process: stand in for it
        if host not in table:
            raise socket.gaierror("not found")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in table[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert is_loopback("judge-box") and not is_loopback("mixed") and not is_loopback("far")
    assert not is_loopback("nowhere.invalid")


# --------------------------------------------------------------------------- the CLI


def _no_java_env() -> dict[str, str]:
    # METEOR's JVM alone takes ~13 s here: without java on PATH it is reported unavailable (its documented
    # behaviour) and the CLI tests stay fast
    return {"PATH": str(Path(sys.executable).parent)}


def test_bench_score_task_prints_the_chexprompt_aggregates(tmp_path):
    preds = _write(tmp_path / "F.jsonl", _records(HAND_REPLIES))
    cache = tmp_path / "cache.sqlite"
    with StubServer(responder=judge_responder(HAND_REPLIES)) as server:
        args = ("score", "--task", "synthcxr_rrg", "--predictions", str(preds), "--bootstrap", "50",
                "--judge", f"model=m,base_url={server.base_url}", "--cache", str(cache))  # fmt: skip
        res = run_bench(*args, env=_no_java_env())
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["bleu1"]["value"] is not None  # the task's own metrics are still there
    for name, expected in HAND_VALUES.items():
        assert out[name]["value"] == pytest.approx(expected) and out[name]["n_judge_failed"] == 1
    assert out["judge"]["model"] == "m" and out["judge"]["n_judge_failed"] == 1

    remote = ("score", "--task", "synthcxr_rrg", "--predictions", str(preds),
              "--judge", "model=m,base_url=https://api.example.com/v1")  # fmt: skip
    refused = run_bench(*remote, env={"OPENAI_API_KEY": SECRET})
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "not a loopback address" in refused.stderr and "must not be sent to third-party services" in refused.stderr
    # with --allow-remote-judge the privacy rule is waived (here it then stops, before any request, on the key)
    waived = run_bench(*remote, "--allow-remote-judge", env={"OPENAI_API_KEY": ""})
    assert waived.returncode == 2 and "no API key" in waived.stderr and "loopback" not in waived.stderr
    assert SECRET not in refused.stderr and SECRET not in refused.stdout
    local = "model=m,base_url=http://127.0.0.1:9/v1"
    vqa = run_bench("score", "--task", "synthcxr_vqa", "--predictions", str(preds), "--judge", local)
    assert vqa.returncode == 2 and "not a report-generation task" in vqa.stderr


def test_bench_run_with_a_judge_records_it_and_writes_no_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _no_java_env()["PATH"])
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out, cache = tmp_path / "runs", tmp_path / "cache.sqlite"

    # one server plays both the model under evaluation (default answers) and the judge (0 or 1 significant errors)
    def respond(item: Received) -> str:
        try:
            reference, _ = judged_pair(item.prompt)
        except ValueError:
            return default_answer(item.prompt, item.images)
        return _json_reply({"A": int("effusion" in reference.lower())}, {"B": 1})

    logs: list[str] = []
    with StubServer(responder=respond, expected_key=SECRET) as server:
        outcome = api.evaluate(
            "openai", ["synthcxr_rrg"], log=logs.append, model_args={"model": "gen", "base_url": server.base_url},
            output=str(out), cache_path=str(cache), limit=6, bootstrap=50, progress=False,
            judge={"model": "judge-m", "base_url": server.base_url, "api_key_env": "JUDGE_KEY", "price_input": 1.0,
                   "price_output": 1.0},
        )  # fmt: skip
        judge_requests = [r for r in server.received if "Reference report: <<<" in r.prompt]
        assert {r.authorization for r in server.received} == {f"Bearer {SECRET}"}
        task = outcome.results["tasks"]["synthcxr_rrg"]
        rescored = api.score(
            outcome.run_dir / task["samples_file"], task="synthcxr_rrg", bootstrap=50, output=tmp_path / "scored",
            judge={"model": "judge-m", "base_url": server.base_url, "api_key_env": "JUDGE_KEY"}, cache_path=cache,
        )  # fmt: skip
        assert rescored["judge"]["cache_hits"] == 6 and len(server.received) == 12  # 6 generations + 6 verdicts
    records = [json.loads(line) for line in (outcome.run_dir / task["samples_file"]).read_text().splitlines()]
    assert len(judge_requests) == 6 and len(records) == 6
    with_effusion = sum("effusion" in r["reference"].lower() for r in records)
    assert 0 < with_effusion < 6
    assert task["metrics"]["chexprompt_mean_significant_errors"]["value"] == pytest.approx(with_effusion / 6)
    assert task["metrics"]["chexprompt_mean_total_errors"]["value"] == pytest.approx(1 + with_effusion / 6)
    assert task["metrics"]["chexprompt_pct_error_free"]["value"] == 0.0
    j = task["judge"]
    assert (j["model"], j["prompt_version"], j["n_judge_failed"], j["api_key_env"]) == (
        "judge-m", prompt_version(), 0, "JUDGE_KEY"
    )  # fmt: skip
    assert j["host"].startswith("127.0.0.1:") and j["usage"]["total_tokens"] > 0 and j["cost_usd"] > 0
    assert outcome.results["config"]["judge"]["prompt_version"] == prompt_version()
    assert any("judge judge-m judged 6" in m for m in logs)
    assert rescored["chexprompt_mean_total_errors"] == task["metrics"]["chexprompt_mean_total_errors"]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"results.json", "synthcxr_rrg.jsonl", "scores.json", "cache.sqlite"} <= {f.name for f in files}
    for f in files:
        assert SECRET.encode() not in f.read_bytes(), f
    assert not any(SECRET in m for m in logs)
