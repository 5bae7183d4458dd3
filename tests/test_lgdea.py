"""Tests of the ``lgdea`` reference model: the loss functions on hand-computed cases, the evidence
extractors (rules; an LLM behind the OpenAI-compatible stub server on 127.0.0.1), the adapter
(checkpoints, fingerprints, errors, paired fraction, switches) and, once per module, the tiny preset
trained on synthcxr against the must-show numbers."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.interfaces import BACKBONE, EMBED, GROUND, TRAIN, BenchError, ImageRef, Sample, stable_hash
from models.reference import lgdea
from models.reference.clip_baseline import clip_loss
from models.reference.lgdea import (
    LGDEA,
    PRESETS,
    LGDEAModel,
    build_config,
    evidence_alignment_loss,
    evidence_graph,
    kl_divergence,
    knn_consistency_loss,
    paired_evidence_loss,
    pairs_per_batch,
    propagate_relations,
    prototype_assignment,
    prototype_reconstruction_loss,
    quick_fingerprint,
    row_normalize,
    split_pairs,
)
from models.reference.lgdea_evidence import (
    LLM_PROMPT,
    NORMAL_EVIDENCE,
    LLMEvidenceExtractor,
    RuleEvidenceExtractor,
    build_extractor,
    evidence_or_normal,
    parse_extractor_args,
    parse_llm_answer,
)
from tests.conftest import run_bench
from tests.openai_stub_server import Received, StubServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TASKS = ["synthcxr_zs", "synthcxr_grounding"]


def approx(value: float, rel: float = 1e-5, tol: float = 1e-6) -> object:
    return pytest.approx(value, rel=rel, abs=tol)


# --------------------------------------------------------------------------- toy data


def make_image(i: int, positive: bool, size: int = 72) -> Image.Image:
    """Noise; positives carry a bright block in the lower left (a toy "effusion")."""
    rng = np.random.default_rng(i)
    arr = rng.normal(90, 20, (size, size))
    if positive:
        arr[size // 2 :, : size // 2] += 120
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def make_samples(n: int, offset: int = 0) -> list[Sample]:
    out = []
    for i in range(offset, offset + n):
        ref = ImageRef(key=f"lg{i}", loader=lambda i=i: make_image(i, i % 2 == 0))
        if i % 2 == 0:
            sections = {"findings": "Large left pleural effusion.", "impression": "Effusion is present."}
        else:
            sections = {"findings": "No pleural effusion.", "impression": "Normal chest radiograph."}
        out.append(Sample(id=f"s{i}", dataset="toy", split="train", images=[ref], sections=sections))
    return out


TOY_FIT = {"epochs": 2, "batch_size": 8, "lr": 1e-3, "seed": 1}


@pytest.fixture(scope="module")
def untrained() -> LGDEA:
    return LGDEA(device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def toy_trained() -> LGDEA:
    model = LGDEA(device="cpu", batch_size=8)
    lines: list[str] = []
    model.fit(make_samples(24), {**TOY_FIT, "log": lines.append})
    model.log_lines = lines
    return model


# --------------------------------------------------------------------------- loss functions


def test_kl_divergence_and_paired_evidence_loss():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    q = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3); 1 ln 2 + 0 (0 log 0 = 0)
    kl = kl_divergence(p, q)
    assert kl[0].item() == approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert kl[0].item() == approx(0.143841, rel=1e-4)
    assert kl[1].item() == approx(math.log(2))
    assert kl_divergence(q, q).abs().max().item() < 1e-7
    # eq. 9: mean over the paired samples; the report distribution is a detached teacher
    q_report = p.clone().requires_grad_(True)
    q_image = q.clone().requires_grad_(True)
    loss = paired_evidence_loss(q_report, q_image)
    assert loss.item() == approx((0.143841 + math.log(2)) / 2, rel=1e-4)
    loss.backward()
    assert q_report.grad is None
    # d KL(p||q) / dq = -p / q, divided by the 2 rows
    assert torch.allclose(q_image.grad, torch.tensor([[-1.0, -1 / 3], [-1.0, 0.0]]), atol=1e-6)
    assert paired_evidence_loss(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0.0


def test_prototype_assignment_and_reconstruction_loss():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # eq. 4: softmax(z . mu / tau) with tau = 1
    a = math.e / (math.e + 1)
    b0, b1 = math.exp(0.6) / (math.exp(0.6) + math.exp(0.8)), math.exp(0.8) / (math.exp(0.6) + math.exp(0.8))
    p = prototype_assignment(z, mu, 1.0)
    assert torch.allclose(p, torch.tensor([[a, 1 - a], [b0, b1]]), atol=1e-6)
    # eq. 5: the reconstruction is sum_k p(k|z) mu_k = p itself (mu is the identity)
    err0 = (1 - a) ** 2 + (1 - a) ** 2  # ||(1, 0) - (a, 1 - a)||^2
    err1 = (0.6 - b0) ** 2 + (0.8 - b1) ** 2
    norms = 1.0 + 1.0
    assert err0 == approx(0.144658, rel=1e-4) and err1 == approx(0.085033, rel=1e-3)
    assert prototype_reconstruction_loss(z, mu, 1.0).item() == approx(err0 + err1 + norms)
    assert prototype_reconstruction_loss(z, mu, 1.0, "mean").item() == approx((err0 + err1) / 2 + norms / 2)
    # the prototypes are pulled towards the evidence and shrunk by the norm term
    mu2 = mu.clone().requires_grad_(True)
    prototype_reconstruction_loss(z, mu2, 1.0).backward()
    assert mu2.grad is not None and torch.isfinite(mu2.grad).all()
    # no evidence at all: only the prototype norms
    assert prototype_reconstruction_loss(torch.zeros(0, 2), mu, 1.0, "mean").item() == approx(1.0)
    with pytest.raises(BenchError, match="reduction"):
        prototype_reconstruction_loss(z, mu, 1.0, "max")


def test_knn_consistency_loss_with_stop_gradient():
    # cosines: v0.v1 = 0.8, v0.v2 = 0, v1.v2 = 0.6 -> nearest other lesion: 0->1, 1->0, 2->1
    v = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], requires_grad=True)
    q = torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]], requires_grad=True)
    kl01 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl10 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl21 = 0.9 * math.log(0.9 / 0.25) + 0.1 * math.log(0.1 / 0.75)
    loss = knn_consistency_loss(v, q, k=1)
    assert loss.item() == approx((kl01 + kl10 + kl21) / 3)
    assert loss.item() == approx(0.408668, rel=1e-4)
    loss.backward()
    # stop-gradient: Q_j as a target gets no gradient, only each Q_i as the source:
    # d/dQ_i KL(Q_i || Q_j) = log(Q_i / Q_j) + 1, times w_ij = 1, over N = 3
    expected = torch.stack(
        [
            (torch.log(q[0] / q[1]) + 1) / 3,
            (torch.log(q[1] / q[0]) + 1) / 3,
            (torch.log(q[2] / q[1]) + 1) / 3,
        ]
    ).detach()
    assert torch.allclose(q.grad, expected, atol=1e-5)
    assert v.grad is None  # neighbours and weights carry no gradient
    # k = 2: weights = softmax over the two neighbours' cosines (tau = 1)
    w0 = [math.exp(0.8), math.exp(0.0)]
    w1 = [math.exp(0.8), math.exp(0.6)]
    w2 = [math.exp(0.6), math.exp(0.0)]
    kl02 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl12 = 0.25 * math.log(0.25 / 0.9) + 0.75 * math.log(0.75 / 0.1)
    kl20 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    rows = [
        (w0[0] * kl01 + w0[1] * kl02) / sum(w0),
        (w1[0] * kl10 + w1[1] * kl12) / sum(w1),
        (w2[0] * kl21 + w2[1] * kl20) / sum(w2),
    ]
    assert knn_consistency_loss(v, q, k=2).item() == approx(sum(rows) / 3)
    assert knn_consistency_loss(v, q, k=10).item() == approx(sum(rows) / 3)  # k capped at N - 1
    assert knn_consistency_loss(v[:1], q[:1], k=3).item() == 0.0  # no neighbour at all


def test_evidence_graph_is_a_row_softmax_of_cosines():
    h = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    s = evidence_graph(h, tau=1.0)
    row0 = torch.tensor([math.exp(1.0), math.exp(0.0), math.exp(c)])
    assert torch.allclose(s[0], row0 / row0.sum(), atol=1e-6)
    assert torch.allclose(s.sum(dim=1), torch.ones(3), atol=1e-6)
    sharp = evidence_graph(h, tau=0.01)
    assert torch.allclose(sharp, torch.eye(3), atol=1e-6)  # tau -> 0: every node keeps to itself


def test_label_propagation_on_a_3x3_example():
    """Image 0 and report 0 are the only pair; image 1 looks like image 0, report 2 reads like report 0."""
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    s_i = torch.tensor([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0], [0.0, 0.0, 1.0]])
    s_t = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    # step 1: S_I Y S_T = [[.3, 0, .3], [.2, 0, .2], [0, 0, 0]]; + Y
    p1 = propagate_relations(y, s_i, s_t, steps=1)
    assert torch.allclose(p1, torch.tensor([[1.3, 0.0, 0.3], [0.2, 0.0, 0.2], [0.0, 0.0, 0.0]]), atol=1e-6)
    # step 2: S_I P1 = [[.86, 0, .26], [.64, 0, .24], 0]; times S_T = [[.56, 0, .56], [.44, 0, .44], 0]; + Y
    p2 = propagate_relations(y, s_i, s_t, steps=2)
    assert torch.allclose(p2, torch.tensor([[1.56, 0.0, 0.56], [0.44, 0.0, 0.44], [0.0, 0.0, 0.0]]), atol=1e-6)
    p = row_normalize(p2)
    assert torch.allclose(p, torch.tensor([[1.56 / 2.12, 0.0, 0.56 / 2.12], [0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]))
    assert torch.equal(propagate_relations(y, s_i, s_t, steps=0), y)  # P(0) = Y


def test_relation_weighted_contrastive_loss():
    h = torch.eye(2)  # logits = scale * identity
    relation = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    lo, hi = math.log(1 / (1 + math.e)), math.log(math.e / (1 + math.e))  # log softmax([0, 1])
    # image -> report: rows of P = [1, 0] and [.5, .5]
    r_from_i = (-hi + -(0.5 * lo + 0.5 * hi)) / 2
    # report -> image: columns of P normalised: [2/3, 1/3] and [0, 1]
    i_from_r = (-(2 / 3 * hi + 1 / 3 * lo) + -hi) / 2
    assert r_from_i + i_from_r == approx(1.043191, rel=1e-5)
    assert evidence_alignment_loss(h, h, relation, 1.0).item() == approx(r_from_i + i_from_r)
    # a hard one-to-one relation is eq. 1: the two InfoNCE directions summed (clip_loss averages them)
    emb = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    scale = torch.tensor(7.0)
    assert evidence_alignment_loss(emb, txt, torch.eye(5), scale).item() == approx(
        2 * clip_loss(emb, txt, scale).item()
    )
    # rows / columns without any relation are left out of the means
    only = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert evidence_alignment_loss(h, h, only, 1.0).item() == approx(-hi + -hi)
    assert evidence_alignment_loss(h, h, torch.zeros(2, 2), 1.0).item() == 0.0


def test_split_pairs_and_pairs_per_batch():
    paired, unpaired = split_pairs(100, 0.1, seed=0)
    assert len(paired) == 10 and len(unpaired) == 90 and not set(paired) & set(unpaired)
    assert sorted(paired + unpaired) == list(range(100))
    assert split_pairs(100, 0.1, seed=0) == (paired, unpaired)
    assert split_pairs(100, 0.1, seed=1)[0] != paired
    assert split_pairs(100, 0.05, seed=0)[0].__len__() == 5
    assert split_pairs(10, 0.01, seed=0)[0].__len__() == 1  # at least one pair
    assert split_pairs(10, 1.0, seed=0) == (list(range(10)), [])
    assert pairs_per_batch(32, 140, 1400) == 3 and pairs_per_batch(32, 70, 1400) == 2
    assert pairs_per_batch(32, 1400, 1400) == 32 and pairs_per_batch(32, 1, 1400) == 1
    assert pairs_per_batch(32, 140, 1400, share=0.5) == 16 and pairs_per_batch(32, 140, 1400, share=1.0) == 31


# --------------------------------------------------------------------------- evidence extractors


REPORT = (
    "At the right lung base there is large consolidation. No pneumothorax. Heart size is normal. "
    "Possible small left pleural effusion."
)


def test_rule_extractor_keeps_abnormal_findings_only():
    ex = RuleEvidenceExtractor()
    got = ex.extract([REPORT, "The lungs are clear. No pleural effusion or pneumothorax.", ""])
    assert got == [
        ["at the right lung base there is large consolidation", "possible small left pleural effusion"],
        [],
        [],
    ]
    strict = RuleEvidenceExtractor(include_uncertain=False).extract([REPORT])
    assert strict == [["at the right lung base there is large consolidation"]]
    assert evidence_or_normal([]) == [NORMAL_EVIDENCE] and evidence_or_normal(["x"]) == ["x"]
    assert build_extractor("rules", {"include_uncertain": False}).describe() == {
        "kind": "rules",
        "include_uncertain": False,
    }
    with pytest.raises(BenchError, match=r"unknown extractor 'gpt'.*rules, llm"):
        build_extractor("gpt")
    with pytest.raises(BenchError, match=r"unknown extractor_args colour for extractor=rules"):
        build_extractor("rules", {"colour": 1})


def test_llm_answer_parsing():
    answer = (
        "Findings:\n- Right lower lobe consolidation.\n2) small left effusion\n\n* consolidation\n"
        "- right lower lobe consolidation"
    )
    assert parse_llm_answer(answer) == ["Right lower lobe consolidation", "small left effusion", "consolidation"]
    assert parse_llm_answer("NONE") == [] and parse_llm_answer("None.") == [] and parse_llm_answer("") == []
    assert parse_extractor_args("model=m;base_url=http://127.0.0.1:1/v1;timeout=5") == {
        "model": "m",
        "base_url": "http://127.0.0.1:1/v1",
        "timeout": 5,
    }
    assert parse_extractor_args('{"model": "m"}') == {"model": "m"}
    with pytest.raises(BenchError, match=r"^lgdea: extractor_args: expected key=value"):
        parse_extractor_args("model")


def _responder(item: Received) -> str:
    report = item.prompt.split("Report:\n", 1)[1].lower()
    found = [
        f for f in ("pleural effusion", "consolidation", "cardiomegaly") if f in report and f"no {f}" not in report
    ]
    return "\n".join(f"- {f}" for f in found) or "NONE"


def test_llm_extractor_against_the_stub_server_and_its_cache(tmp_path):
    reports = [
        "Large left pleural effusion. Effusion is present.",
        "No pleural effusion. Normal chest radiograph.",
        "Large left pleural effusion. Effusion is present.",  # a repeat is asked once
        "Right lower lobe consolidation and cardiomegaly.",
    ]
    cache = tmp_path / "evidence.json"
    with StubServer(responder=_responder) as server:
        args = {"model": "stub-model", "base_url": server.base_url, "cache": str(cache)}
        ex = LLMEvidenceExtractor(**args)
        got = ex.extract(reports)
        assert got == [["pleural effusion"], [], ["pleural effusion"], ["consolidation", "cardiomegaly"]]
        assert server.count == 3 and ex.stats == {"queried": 3, "cached": 0}
        answered = server.answered()
        assert {r.prompt for r in answered} == {LLM_PROMPT.format(report=r) for r in reports}
        first = answered[0]
        assert first.system and "radiograph" in first.system
        assert first.body["temperature"] == 0.0 and first.images == []
        assert ex.describe()["kind"] == "llm" and ex.describe()["model"] == "stub-model"
        # a second extractor reads the cache: nothing is asked again, one new report is
        again = LLMEvidenceExtractor(**args)
        assert again.extract(reports) == got and server.count == 3
        assert again.extract([*reports, "Mild cardiomegaly."])[-1] == ["cardiomegaly"]
        assert server.count == 4 and again.stats == {"queried": 1, "cached": 3}
    data = json.loads(cache.read_text())
    assert data["identity"]["model"] == "stub-model" and len(data["answers"]) == 4


def test_llm_extractor_default_cache_lives_in_the_bench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    ex = LLMEvidenceExtractor(model="m", base_url="http://127.0.0.1:9/v1")
    assert ex.cache_path.parent == tmp_path / "lgdea-evidence" and ex.cache_path.suffix == ".json"
    other = LLMEvidenceExtractor(model="m2", base_url="http://127.0.0.1:9/v1")
    assert other.cache_path != ex.cache_path  # another model, another cache
    ex.cache_path.parent.mkdir(parents=True)
    ex.cache_path.write_text("{not json")
    with pytest.raises(BenchError, match=r"cannot read the evidence cache .*delete it"):
        ex.extract(["Cardiomegaly."])


def test_llm_extractor_argument_errors_and_privacy_guard():
    with pytest.raises(BenchError, match=r"not a loopback address"):
        LLMEvidenceExtractor(model="m", base_url="https://api.example.com/v1")
    with pytest.raises(BenchError, match=r"needs the endpoint's model id"):
        LLMEvidenceExtractor(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(BenchError, match=r"unknown extractor_args colour for extractor=llm; accepted: model, base_url"):
        LLMEvidenceExtractor(model="m", colour="red")
    with pytest.raises(BenchError, match=r"never a --model-args value"):
        LLMEvidenceExtractor(model="m", base_url="http://127.0.0.1:9/v1", api_key="sk-secret")


def test_llm_extractor_unreachable_server_is_one_clear_error(tmp_path):
    with StubServer() as server:
        url = server.base_url
    ex = LLMEvidenceExtractor(model="m", base_url=url, max_retries=0, timeout=2, cache=str(tmp_path / "c.json"))
    with pytest.raises(BenchError, match=r"failed after 1 attempt.*is the server running"):
        ex.extract(["Cardiomegaly."])


def test_fit_with_the_llm_extractor(tmp_path):
    samples = make_samples(12)
    with StubServer(responder=_responder) as server:
        model = LGDEA(device="cpu", batch_size=8)
        extractor_args = f"model=stub-model;base_url={server.base_url};cache={tmp_path / 'ev.json'}"
        model.fit(samples, {"epochs": 1, "batch_size": 4, "extractor": "llm", "extractor_args": extractor_args})
        assert server.count == 2  # two distinct reports
    evidence = model.config["train"]["evidence"]
    assert evidence["kind"] == "llm" and evidence["model"] == "stub-model"
    assert evidence["reports_with_findings"] == 6 and evidence["phrases"] == 6
    assert model.last_evidence[0] == ["pleural effusion"] and model.last_evidence[1] == []
    assert "base_url" not in json.dumps(model.config)  # the endpoint is named by host/path only


def test_fit_refuses_a_remote_llm_endpoint(untrained):
    args = "model=gpt-x;base_url=https://api.example.com/v1"
    with pytest.raises(BenchError, match=r"lgdea evidence extractor: .*not a loopback address.*allow_remote=true"):
        untrained.fit(make_samples(4), {"extractor": "llm", "extractor_args": args})


def test_cli_train_passes_train_args_to_fit(tmp_path):
    res = run_bench(
        "train", "lgdea", "--output", str(tmp_path / "ck"), "--device", "cpu",
        "--train-args", "paired_fraction=0.1,extractor=rules,colour=blue",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "unknown config key(s) colour; accepted: preset, epochs" in res.stderr
    assert "paired_fraction, extractor, extractor_args" in res.stderr and "use_graph" in res.stderr


# --------------------------------------------------------------------------- the adapter


def test_class_attributes_and_presets():
    assert LGDEA.name == "lgdea"
    assert LGDEA.capabilities == frozenset({EMBED, GROUND, BACKBONE, TRAIN})
    assert set(PRESETS) == {"tiny", "paper"}
    paper = PRESETS["paper"]
    assert (paper["lgdea"]["num_prototypes"], paper["lgdea"]["num_queries"]) == (64, 64)
    assert paper["train"]["phases"] == [
        {"epochs": 2, "batch_size": 128, "lr": 5e-5},
        {"epochs": 5, "batch_size": 64, "lr": 1e-4},
    ]
    assert paper["train"]["weight_decay"] == 1e-6 and paper["train"]["paired_fraction"] == 0.1
    assert paper["train"]["rec_weight"] == 1.0 and PRESETS["tiny"]["train"]["rec_weight"] == 0.1
    assert paper["vision"]["image_size"] == 224 and paper["vision"]["patch_size"] == 16
    assert paper["train"]["augment"]["scale"] == [(224 / 256) ** 2] * 2  # resize 256, random crop 224
    assert all(paper["train"][s] for s in lgdea.SWITCHES)


def test_paper_preset_builds_a_vit_b16_and_a_bert_base_text_tower():
    config = build_config("paper", vocab_size=30000)
    with torch.device("meta"):
        model = LGDEAModel(config)
    vision = sum(p.numel() for p in model.visual.parameters())
    assert 85_500_000 < vision < 86_500_000
    assert model.text.config.width == 768 and model.text.config.depth == 12
    assert tuple(model.prototypes.shape) == (64, 512) and tuple(model.lesion_queries.queries.shape) == (64, 768)


def test_untrained_model_basics(untrained):
    d = untrained.describe()
    assert d["kind"] == "dual encoder" and d["preset"] == "tiny" and d["trained"] is False
    assert (d["num_prototypes"], d["num_queries"]) == (32, 16)
    assert untrained.fingerprint() == stable_hash({"random-init": untrained.config, "seed": 0})
    assert LGDEA(device="cpu", seed=1).fingerprint() != untrained.fingerprint()
    refs = [s.image for s in make_samples(3)]
    img = untrained.encode_images(refs)
    txt = untrained.encode_texts(["pleural effusion", "no pleural effusion"])
    assert img.shape == (3, 128) and txt.shape == (2, 128) and img.dtype == np.float32
    assert np.allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(img, untrained.encode_images(refs))
    assert untrained.encode_texts([]).shape == (0, 128)
    with pytest.raises(BenchError, match="not a single string"):
        untrained.encode_texts("pleural effusion")
    smap = untrained.similarity_map(refs[0], "left pleural effusion")
    assert smap.shape == (8, 8) and smap.dtype == np.float32 and np.isfinite(smap).all()
    backbone, dim = untrained.image_backbone()
    with torch.no_grad():
        assert backbone(untrained.preprocess(refs)).shape == (3, dim) == (3, 160)


def test_lesion_grounding_map_is_a_mixture_of_attention_maps(untrained):
    ref = make_samples(1)[0].image
    untrained.config["lgdea"]["grounding"] = "lesion"
    try:
        smap = untrained.similarity_map(ref, "left pleural effusion")
    finally:
        untrained.config["lgdea"]["grounding"] = "patch"
    assert smap.shape == (8, 8) and smap.min() >= 0 and smap.sum() == pytest.approx(1.0, abs=1e-4)


def test_unknown_arguments_and_bad_fit_options(untrained):
    with pytest.raises(BenchError, match=r"unknown argument\(s\) colour.*accepted: checkpoint, preset"):
        LGDEA(colour="blue")
    with pytest.raises(BenchError, match=r"unknown preset 'huge'.*tiny, paper"):
        LGDEA(preset="huge")
    samples = make_samples(4)
    with pytest.raises(BenchError, match=r"unknown config key\(s\) epoch;.*accepted: preset, epochs.*paired_fraction"):
        untrained.fit(samples, {"epoch": 1})
    with pytest.raises(BenchError, match=r"paired_fraction must be a number > 0.0 and <= 1.0, got 0"):
        untrained.fit(samples, {"paired_fraction": 0})
    with pytest.raises(BenchError, match=r"paired_fraction must be a number"):
        untrained.fit(samples, {"paired_fraction": 1.5})
    with pytest.raises(BenchError, match=r"extractor must be one of rules, llm"):
        untrained.fit(samples, {"extractor": "gpt"})
    with pytest.raises(BenchError, match=r"use_knn must be true or false"):
        untrained.fit(samples, {"use_knn": "maybe"})
    with pytest.raises(BenchError, match=r"num_queries must be an integer >= 1"):
        untrained.fit(samples, {"num_queries": 0})
    with pytest.raises(BenchError, match=r"every loss is switched off"):
        untrained.fit(
            samples, dict.fromkeys(("use_global", "use_rec", "use_evidence_kl", "use_knn", "use_align"), False)
        )
    with pytest.raises(BenchError, match="at least 2 samples"):
        untrained.fit([], {})
    assert untrained.describe()["trained"] is False  # nothing above changed the model


def test_fit_learns_the_toy_task(toy_trained):
    result = toy_trained.last_train_result
    assert result.steps == 2 * 3
    assert any("trained 6 steps" in line for line in toy_trained.log_lines)
    assert any("24 paired (1)" in line for line in toy_trained.log_lines)
    record = toy_trained.config["train"]
    assert record["paired_samples"] == 24 and record["unpaired_images"] == record["unpaired_reports"] == 0
    assert record["evidence"]["kind"] == "rules" and record["evidence"]["reports_with_findings"] == 12
    assert all(record[s] for s in lgdea.SWITCHES) and record["phases"] == [{"epochs": 2, "batch_size": 8, "lr": 1e-3}]
    assert toy_trained.describe()["trained"] is True and toy_trained.describe()["paired_fraction"] == 1.0


def test_fit_is_deterministic(toy_trained):
    again = LGDEA(device="cpu", batch_size=8)
    again.fit(make_samples(24), TOY_FIT)
    assert again.fingerprint() == toy_trained.fingerprint()


def test_init_from_a_clip_baseline_checkpoint(tmp_path):
    from models.reference.clip_baseline import ClipBaseline

    clip = ClipBaseline(device="cpu", seed=5)
    clip.fit(make_samples(16), {"epochs": 1, "batch_size": 8, "seed": 5})
    clip.save(tmp_path / "clip")
    tokenizer, config, model = lgdea._from_clip_baseline(str(tmp_path / "clip"), "tiny", {}, seed=0)
    assert tokenizer.to_str() == clip.tokenizer.to_str() and config["text"]["vocab_size"] == clip.tokenizer.vocab_size
    for name in ("visual", "text", "image_proj", "text_proj"):
        ours, theirs = getattr(model, name).state_dict(), getattr(clip.model, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k].cpu()) for k in theirs)
    assert model.logit_scale.item() == pytest.approx(clip.model.logit_scale.item())
    # fit from it: one epoch, recorded; starting from the checkpoint changes what is learnt
    fitted = LGDEA(device="cpu", batch_size=8)
    lines: list[str] = []
    fitted.fit(make_samples(24), {**TOY_FIT, "epochs": 1, "init": str(tmp_path / "clip"), "log": lines.append})
    assert fitted.config["train"]["init"]["clip-baseline"] == str(tmp_path / "clip")
    assert any("from clip-baseline" in line for line in lines)
    assert fitted.tokenizer.to_str() == clip.tokenizer.to_str()
    with pytest.raises(BenchError, match="differs from the 'paper' preset"):
        lgdea._from_clip_baseline(str(tmp_path / "clip"), "paper", {}, seed=0)
    with pytest.raises(BenchError, match="not both"):
        fitted.fit(make_samples(24), {**TOY_FIT, "init": str(tmp_path / "clip"), "continue": True})


def test_paired_fraction_removes_pairs(monkeypatch):
    seen: list[dict] = []
    real_train = lgdea.train

    def spy(model, batches, *args, **kwargs):
        seen.extend(batches(0))
        return real_train(model, batches, *args, **kwargs)

    monkeypatch.setattr(lgdea, "train", spy)
    model = LGDEA(device="cpu")
    model.fit(make_samples(40), {"epochs": 1, "batch_size": 8, "paired_fraction": 0.1, "seed": 3})
    record = model.config["train"]
    assert record["paired_fraction"] == 0.1
    assert (record["samples"], record["paired_samples"]) == (40, 4)
    assert record["unpaired_images"] == record["unpaired_reports"] == 36
    assert record["pairs_per_batch"] == 1  # round(8 * 4 / 40)
    assert len(seen) == 5
    for batch in seen:
        assert int(batch["n_paired"]) == 1 and batch["images"].shape[0] == 8
        assert not batch["y_global"][1:].any()  # unpaired images have no hard partner
    # pair_share: the 4 pairs fill half of every batch (drawn again and again), the rest is unpaired
    seen.clear()
    model.fit(make_samples(40), {"epochs": 1, "batch_size": 8, "paired_fraction": 0.1, "pair_share": 0.5})
    assert model.config["train"]["paired_samples"] == 4 and model.config["train"]["pairs_per_batch"] == 4
    assert all(int(batch["n_paired"]) == 4 for batch in seen)


@pytest.mark.parametrize("switch", ["use_global", "use_rec", "use_evidence_kl", "use_knn", "use_graph", "use_align"])
def test_each_switch_trains_and_is_recorded(switch):
    model = LGDEA(device="cpu")
    model.fit(make_samples(16), {"epochs": 1, "batch_size": 8, switch: False, "paired_fraction": 0.5})
    record = model.config["train"]
    assert record[switch] is False and all(record[s] for s in lgdea.SWITCHES if s != switch)
    assert math.isfinite(model.last_train_result.final_loss)


def test_architecture_options_are_recorded():
    model = LGDEA(device="cpu")
    model.fit(make_samples(8), {"epochs": 1, "batch_size": 4, "num_prototypes": 5, "num_queries": 3})
    assert tuple(model.model.prototypes.shape) == (5, 128)
    assert (model.config["lgdea"]["num_prototypes"], model.config["lgdea"]["num_queries"]) == (5, 3)


def test_save_load_round_trip_and_quick_fingerprint(toy_trained, tmp_path):
    refs = [s.image for s in make_samples(4, offset=50)]
    texts = ["pleural effusion", "no pleural effusion", "unseen words zebra"]
    toy_trained.save(tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded = LGDEA(checkpoint=str(tmp_path / "ck"), device="cpu")
    assert loaded.fingerprint() == toy_trained.fingerprint() == quick_fingerprint({"checkpoint": str(tmp_path / "ck")})
    assert np.array_equal(loaded.encode_images(refs), toy_trained.encode_images(refs))
    assert np.array_equal(loaded.encode_texts(texts), toy_trained.encode_texts(texts))
    assert np.array_equal(loaded.similarity_map(refs[0], texts[0]), toy_trained.similarity_map(refs[0], texts[0]))
    assert loaded.config["train"] == toy_trained.config["train"]
    loaded.save(tmp_path / "ck2")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (tmp_path / "ck" / name).read_bytes() == (tmp_path / "ck2" / name).read_bytes()
    with torch.no_grad():
        loaded.model.prototypes[0, 0] += 1e-3
    loaded.save(tmp_path / "ck3")
    assert quick_fingerprint({"checkpoint": str(tmp_path / "ck3")}) != loaded.fingerprint()
    assert LGDEA(checkpoint=str(tmp_path / "ck3"), device="cpu").fingerprint() == quick_fingerprint(
        {"checkpoint": str(tmp_path / "ck3")}
    )
    assert quick_fingerprint({"preset": "tiny"}) is None


def test_bad_checkpoints_are_one_clear_error(toy_trained, tmp_path):
    with pytest.raises(BenchError, match=r"lgdea: checkpoint directory not found: .*nowhere"):
        LGDEA(checkpoint=str(tmp_path / "nowhere"))
    ck = tmp_path / "ck"
    toy_trained.save(ck)
    (ck / "tokenizer.json").unlink()
    with pytest.raises(BenchError, match=r"ck is missing tokenizer\.json"):
        LGDEA(checkpoint=str(ck))
    toy_trained.save(ck)
    (ck / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(BenchError, match=r"cannot read model\.safetensors"):
        LGDEA(checkpoint=str(ck))
    toy_trained.save(ck)
    (ck / "config.json").write_text(json.dumps({"model": "clip-baseline"}))
    with pytest.raises(BenchError, match=r"holds model 'clip-baseline', not 'lgdea'"):
        LGDEA(checkpoint=str(ck))
    toy_trained.save(ck)
    config = json.loads((ck / "config.json").read_text())
    config["lgdea"]["num_prototypes"] = 7
    (ck / "config.json").write_text(json.dumps(config))
    with pytest.raises(BenchError, match=r"weights do not match config\.json"):
        LGDEA(checkpoint=str(ck))
    del config["lgdea"]
    (ck / "config.json").write_text(json.dumps(config))
    with pytest.raises(BenchError, match=r"config\.json is incomplete"):
        LGDEA(checkpoint=str(ck))


# --------------------------------------------------------------------------- synthcxr (trains once)


@pytest.fixture(scope="module")
def synthcxr_run(tmp_path_factory: pytest.TempPathFactory, trained_clip: Path) -> dict:
    """The tiny preset trained on synthcxr once (as the demo trains it: from the trained clip-baseline's towers,
    8 epochs), scored next to the untrained model."""
    from bench import api

    out = tmp_path_factory.mktemp("lgdea") / "lgdea-tiny-synthcxr"
    start = time.perf_counter()
    api.train(
        "lgdea", "tiny", "synthcxr", out, seed=0, device="cpu", log=lambda m: None,
        train_args={"init": str(trained_clip), "epochs": 8},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    runs = tmp_path_factory.mktemp("lgdea-runs")
    scores = {}
    for name, args in (("trained", {"checkpoint": str(out)}), ("untrained", {"preset": "tiny"})):
        outcome = api.evaluate(
            "lgdea",
            TASKS,
            log=lambda m: None,
            model_args=args,
            output=str(runs),
            bootstrap=0,
            device="cpu",
            progress=False,
        )
        scores[name] = outcome.results
    return {"checkpoint": out, "seconds": seconds, **scores}


def _metric(results: dict, task: str, name: str) -> float:
    return float(results["tasks"][task]["metrics"][name]["value"])


@pytest.mark.slow
def test_tiny_preset_reaches_the_must_show_numbers(synthcxr_run):
    auc = _metric(synthcxr_run["trained"], "synthcxr_zs", "AUC")
    cnr = _metric(synthcxr_run["trained"], "synthcxr_grounding", "CNR")
    cnr0 = _metric(synthcxr_run["untrained"], "synthcxr_grounding", "CNR")
    print(f"lgdea tiny: {synthcxr_run['seconds']:.0f} s, zs AUC {auc:.3f}, CNR {cnr:.3f} (untrained {cnr0:.3f})")
    assert auc >= 0.85
    assert cnr >= cnr0 + 0.5


@pytest.mark.slow
def test_trained_checkpoint_records_what_was_used(synthcxr_run):
    ck: Path = synthcxr_run["checkpoint"]
    config = json.loads((ck / "config.json").read_text())
    record = config["train"]
    assert (record["samples"], record["paired_samples"], record["paired_fraction"]) == (1400, 1400, 1.0)
    assert record["unpaired_images"] == record["unpaired_reports"] == 0
    assert record["evidence"]["kind"] == "rules" and record["evidence"]["reports_with_findings"] > 900
    assert all(record[s] for s in lgdea.SWITCHES)
    assert record["phases"] == [{"epochs": 8, "batch_size": 32, "lr": 1e-3}] and record["init"]["fingerprint"]
    training = json.loads((ck / "training.json").read_text())
    assert training["model"] == "lgdea" and training["fingerprint"] == quick_fingerprint({"checkpoint": str(ck)})
    described = synthcxr_run["trained"]["model"]["description"]
    assert described["trained"] is True and described["checkpoint"] == str(ck) and described["paired_fraction"] == 1.0
    assert synthcxr_run["untrained"]["model"]["description"]["trained"] is False
