"""meddr-rag: retrieval-augmented diagnosis (voting and prompt injection) over an embed model's database."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import api
from bench.cli import parse_model_args
from bench.interfaces import EMBED, GENERATE, BenchError, GenerationRequest, ImageRef, ModelAdapter, Sample
from models.reference.meddr_rag import NO_FINDING, MedDrRAG, quick_fingerprint
from tasks import prompts
from tasks.catalog import SYNTH_FINDINGS
from tasks.generative_classification import parse_label_list
from tests.openai_stub_server import StubServer

# --------------------------------------------------------------------------- hand-built models


class KeyEmbed(ModelAdapter):
    """Embeds an image by looking its key up in a table (no pixels read)."""

    name = "key-embed"
    capabilities = frozenset({EMBED})

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        super().__init__()
        self.table = table
        self.calls = 0

    def fingerprint(self) -> str:
        return "key-embed-v1"

    def encode_images(self, images: Sequence[ImageRef]) -> np.ndarray:
        self.calls += len(images)
        v = np.array([self.table[im.key] for im in images], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class Echo(ModelAdapter):
    name = "echo"
    capabilities = frozenset({GENERATE})

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def fingerprint(self) -> str:
        return "echo"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.prompts.extend(r.prompt for r in requests)
        return ["ok"] * len(requests)


def _sample(key: str, labels: dict[str, int], report: str = "") -> Sample:
    return Sample(
        id=key,
        dataset="toy",
        split="train",
        images=[ImageRef(key=key)],
        labels=labels,
        sections={"findings": report},
    )


# database: angle of a 2-D unit vector; neighbours of a query at angle 0 are ordered by |angle|
ANGLES = {"a": 0.1, "b": -0.2, "c": 0.35, "d": 1.2, "e": 2.5, "q": 0.0}
TABLE = {k: (float(np.cos(t)), float(np.sin(t))) for k, t in ANGLES.items()}
DB = [
    _sample("a", {"Edema": 1, "Nodule": 0, NO_FINDING: 0}, "Mild edema."),
    _sample("b", {"Edema": 1, "Nodule": 1, NO_FINDING: 0}, "Edema and a nodule."),
    _sample("c", {"Edema": -1, "Nodule": 0, NO_FINDING: 0}, "Possible edema."),
    _sample("d", {"Edema": 0, "Nodule": 1, NO_FINDING: 0}, "Nodule."),
    _sample("e", {"Edema": 0, "Nodule": 0, NO_FINDING: 1}, "Normal."),
]


def _request(prompt: str = "Describe.", key: str = "q") -> GenerationRequest:
    return GenerationRequest(images=(ImageRef(key=key),), prompt=prompt)


def _toy(tmp_path: Path, **kw: Any) -> MedDrRAG:
    kw.setdefault("mode", "voting")
    return MedDrRAG(embedder=KeyEmbed(TABLE), database_samples=DB, cache_dir=str(tmp_path), **kw)


# --------------------------------------------------------------------------- (3) retrieval and voting


def test_retrieval_order_and_self_exclusion(tmp_path: Path) -> None:
    model = _toy(tmp_path, k=3)
    [found] = model.retrieve([_request()])
    assert [model.db.ids[i] for i, _ in found] == ["a", "b", "c"]
    sims = [s for _, s in found]
    assert sims == sorted(sims, reverse=True) and sims[0] == pytest.approx(np.cos(0.1), abs=1e-5)
    # a query that is itself in the database never retrieves itself
    [found] = model.retrieve([_request(key="a")])
    assert "a" not in [model.db.ids[i] for i, _ in found]


def test_voting_majority_rule(tmp_path: Path) -> None:
    multi = prompts.CLASSIFY_MULTI.format(image_kind="chest X-ray", candidates="Edema; Nodule; No Finding")
    # k=3 -> a, b, c: Edema 3/3 (c uncertain counts as positive), Nodule 1/3
    assert _toy(tmp_path, k=3).generate([_request(multi)]) == ["Edema"]
    # uncertain as negative: Edema 2/3 still a majority
    assert _toy(tmp_path, k=3, uncertain="negative").generate([_request(multi)]) == ["Edema"]
    # k=4 -> a, b, c, d: Edema 3/4, Nodule 2/4 (not > k/2)
    assert _toy(tmp_path, k=4).generate([_request(multi)]) == ["Edema"]
    # k=5, uncertain negative: Edema 2/5, Nodule 2/5 -> nothing has a majority
    assert _toy(tmp_path, k=5, uncertain="negative").generate([_request(multi)]) == [NO_FINDING]
    # the answer is in the format the diagnosis task parses
    labels, _ = parse_label_list("Edema, Nodule", ["Edema", "Nodule", NO_FINDING])
    assert labels == ["Edema", "Nodule"]
    # a one-candidate prompt gets the most-voted candidate
    single = prompts.CLASSIFY_SINGLE.format(image_kind="chest X-ray", candidates="Nodule; Edema")
    assert _toy(tmp_path, k=4).generate([_request(single)]) == ["Edema"]


def test_database_is_cached(tmp_path: Path) -> None:
    first = _toy(tmp_path, k=2)
    assert first.embedder.calls == len(DB)  # type: ignore[attr-defined]
    again = _toy(tmp_path, k=2)
    assert again.embedder.calls == 0  # type: ignore[attr-defined]
    np.testing.assert_allclose(again.db.embeddings, first.db.embeddings)
    assert again.fingerprint() == first.fingerprint()
    assert _toy(tmp_path, k=3).fingerprint() != first.fingerprint()


def test_rag_injection_with_instances(tmp_path: Path) -> None:
    echo = Echo()
    model = _toy(tmp_path, k=2, mode="rag", generator=echo, inject="both")
    assert model.generate([_request("Question: what?")]) == ["ok"]
    prompt = echo.prompts[0]
    assert "Case 1 (similarity" in prompt and "findings: Edema" in prompt and "findings: Edema, Nodule" in prompt
    assert "report: Mild edema." in prompt and prompt.endswith("Question: what?")


# --------------------------------------------------------------------------- (4) bad arguments


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"embedder": "clip-baseline", "mode": "vote"}, "mode must be one of rag|voting"),
        ({"embedder": "clip-baseline", "k": 0, "mode": "voting"}, "k must be a positive integer"),
        ({"embedder": "clip-baseline", "colour": "red"}, "unknown argument(s) colour"),
        ({"mode": "voting"}, "embedder is required"),
        ({"embedder": "clip-baseline", "mode": "rag"}, "mode=rag needs generator=NAME"),
        ({"embedder": "clip-baseline", "mode": "voting", "database": "synthcxr"}, "database must be DATASET:SPLIT"),
        ({"embedder": "openai", "mode": "voting"}, "lacks the embed capability"),
        ({"embedder": "clip-baseline", "embedder_args": "checkpoint", "mode": "voting"}, "key=value pairs"),
    ],
)
def test_bad_args(args: dict[str, Any], needle: str) -> None:
    with pytest.raises(BenchError) as err:
        MedDrRAG(**args)
    assert needle in str(err.value)
    if "embedder is required" in needle or "unknown" in needle:
        assert "Accepted: embedder=NAME" in str(err.value)


def test_cli_argument_syntax() -> None:
    args = parse_model_args(
        "embedder=clip-baseline,embedder_args=checkpoint=/x;batch_size=8,generator=openai,"
        "generator_args=model=m;base_url=http://127.0.0.1:1/v1,k=3,mode=rag"
    )
    assert args["embedder_args"] == "checkpoint=/x;batch_size=8"
    from models.reference.meddr_rag import parse_nested_args

    assert parse_nested_args(args["embedder_args"], "x") == {"checkpoint": "/x", "batch_size": 8}
    assert parse_nested_args(args["generator_args"], "x") == {"model": "m", "base_url": "http://127.0.0.1:1/v1"}
    assert parse_nested_args('{"a": 1}', "x") == {"a": 1} and args["k"] == 3


# --------------------------------------------------------------------------- (1)/(2) end to end on synthcxr


def test_voting_accuracy_on_synthcxr_diag(trained_clip: Path, tmp_path: Path) -> None:
    outcome = api.evaluate(
        "meddr-rag",
        ["synthcxr_diag"],
        model_args={
            "embedder": "clip-baseline",
            "embedder_args": f"checkpoint={trained_clip}",
            "mode": "voting",
            "k": 5,
        },
        output=str(tmp_path / "runs"),
        bootstrap=20,
        progress=False,
        device="cpu",
        log=lambda m: None,
    )
    task = outcome.results["tasks"]["synthcxr_diag"]
    acc = task["metrics"]["ACC"]["value"]
    print(f"meddr-rag voting k=5 synthcxr_diag ACC={acc:.4f} F1={task['metrics']['F1']['value']:.4f}")
    assert task["metrics"]["ACC"]["unparseable"] == 0
    assert acc >= 0.8
    assert outcome.results["model"]["description"]["kind"] == "retrieval-augmented"


def test_rag_prompt_reaches_openai_stub(trained_clip: Path, tmp_path: Path) -> None:
    with StubServer() as server:
        args: dict[str, Any] = {
            "embedder": "clip-baseline",
            "embedder_args": {"checkpoint": str(trained_clip)},
            "generator": "openai",
            "generator_args": f"model=stub-model;base_url={server.base_url}",
            "mode": "rag",
            "k": 3,
        }
        model = MedDrRAG(**args, device="cpu")
        assert quick_fingerprint(args) == model.fingerprint()
        from bench.data import synthcxr

        test = synthcxr.load(None, "test")[:4]
        prompt = prompts.CLASSIFY_MULTI.format(
            image_kind="chest X-ray", candidates="; ".join((*SYNTH_FINDINGS, NO_FINDING))
        )
        requests = [GenerationRequest(images=(s.image,), prompt=prompt, sample_id=s.id) for s in test]
        answers = model.generate(requests)
        found = model.retrieve(requests)
        received = server.answered()
    assert len(answers) == 4 and len(received) == 4
    by_prompt = {r.prompt for r in received}
    for neighbours in found:
        expected = [
            f"Case {rank} (similarity {sim:.2f}) findings: {', '.join(model.positive_labels(i))}"
            for rank, (i, sim) in enumerate(neighbours, 1)
        ]
        assert any(all(line in p for line in expected) and p.endswith(prompt) for p in by_prompt)
    assert all(len(r.images) == 1 for r in received)
