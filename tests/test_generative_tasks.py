"""The generative protocols: VQA, report generation, generative classification / label-set diagnosis.

Scoring is checked on hand-made records (answer mapping, CoT extraction, unparseable answers, metric
values worked out by hand); the protocols then run end to end through `bench run --model openai`
against a local server whose "model" is an oracle that answers from the synthcxr ground truth with
known mistakes, so every metric has a value the test can work out independently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from bench import api
from bench.data.synthcxr import load as load_synthcxr
from bench.interfaces import BenchError, ImageRef, Sample, TaskSpec
from bench.plugins import registry
from models.openai_chat import image_data_url
from tasks import prompts
from tasks.catalog import FIVE_CLASSES, SYNTH_FINDINGS
from tasks.generative_classification import (
    GenerativeClassification,
    extract_answer,
    map_to_label,
    parse_label_list,
)
from tasks.report_generation import ReportGeneration
from tasks.vqa import VisualQuestionAnswering
from tests.conftest import run_bench
from tests.openai_stub_server import DATA_URL_PREFIX, Received, StubServer

LIMIT = 12


def _spec(name: str, **changes) -> TaskSpec:
    spec = registry().get("tasks", name)
    return TaskSpec(**{**spec.__dict__, **changes})


# --------------------------------------------------------------------------- answer mapping


def test_extract_answer_from_plain_and_cot_text():
    cot = "The heart is large.\nNo fluid is seen.\nAnswer: Cardiomegaly\n"
    assert extract_answer(cot, "cot") == ("Cardiomegaly", True)
    assert extract_answer("Reasoning...\nThe answer is: Edema.", "cot") == ("Edema.", True)
    assert extract_answer("Step one.\nanswer: first\nMore thought.\nFinal answer: Edema\nThanks", "cot")[0] == "Edema"
    assert extract_answer("Thinking it over.\nCardiomegaly", "cot") == ("Cardiomegaly", False)
    assert extract_answer("  Pleural effusion on the left  ", "plain") == ("Pleural effusion on the left", False)
    assert extract_answer("Answer: Edema", "plain") == ("Edema", True)
    assert extract_answer("", "cot") == ("", False)


def test_answer_to_label_mapping():
    classes = list(FIVE_CLASSES)
    exact = map_to_label("Pleural Effusion", classes)
    assert (exact.label, exact.method, exact.score) == ("Pleural Effusion", "exact", 1.0)
    normalised = map_to_label("  the EDEMA. ", classes)  # case, article and period are normalised away
    assert (normalised.label, normalised.method) == ("Edema", "exact")
    fuzzy = map_to_label("There is a small pleural effusion", classes)
    # normalised "there is small pleural effusion": 2 of 5 tokens match, no brevity penalty
    assert (fuzzy.label, fuzzy.method, fuzzy.tie) == ("Pleural Effusion", "bleu1", False)
    assert fuzzy.score == pytest.approx(0.4)
    for text in ("I am not sure.", "", "   "):
        assert map_to_label(text, classes).label is None
    tie = map_to_label("edema or atelectasis", classes)  # one token each: the first candidate wins (MultiMedEval)
    assert (tie.label, tie.tie) == ("Atelectasis", True)


def test_label_list_parsing():
    classes = [*SYNTH_FINDINGS, "No Finding"]
    labels, counts = parse_label_list("Cardiomegaly, pleural effusion and Edema.", classes)
    assert labels == ["Cardiomegaly", "Edema", "Pleural Effusion"]  # class order
    assert counts["mapped"] == 3 and counts["unmapped"] == 0
    assert parse_label_list("No Finding", classes)[0] == ["No Finding"]
    labels, counts = parse_label_list("- no pneumothorax\n- nodule in the right upper lobe\n- ???", classes)
    assert labels == ["Nodule"] and counts["negated"] == 1
    labels, counts = parse_label_list("cannot determine", classes)
    assert labels == [] and counts["unmapped"] == 1


# --------------------------------------------------------------------------- scoring hand-made records


def _records(texts, refs):
    return [{"id": str(i), "inputs": {}, "prediction": t, "reference": r} for i, (t, r) in enumerate(zip(texts, refs))]


@pytest.mark.parametrize("style", ["plain", "cot"])
def test_multiclass_scoring_counts_unparseable_as_wrong(style):
    classes = ("Edema", "Cardiomegaly", "Pneumothorax")
    task = GenerativeClassification(
        _spec("synthcxr_zs_generative", options={"mode": "multiclass", "classes": classes, "prompt_style": style})
    )
    answers = ["Edema", "cardiomegaly.", "Small left pneumothorax", "Cardiomegaly", "no idea"]
    if style == "cot":
        answers = [f"Looking at the lungs and heart.\nAnswer: {a}" for a in answers]
    refs = ["Edema", "Cardiomegaly", "Pneumothorax", "Edema", "Pneumothorax"]
    out = task.score(_records(answers, refs), bootstrap=200, seed=0)
    assert set(out) == {"ACC", "F1"}
    acc, f1 = out["ACC"], out["F1"]
    assert acc["value"] == pytest.approx(3 / 5) and acc["n"] == 5
    assert acc["recall"] == {"Edema": 0.5, "Cardiomegaly": 1.0, "Pneumothorax": 0.5}
    # per class (tp, fp, fn): Edema (1, 0, 1), Cardiomegaly (1, 1, 0), Pneumothorax (1, 0, 1): F1 = 2/3 each
    assert f1["value"] == pytest.approx(2 / 3) and f1["per_class"]["Cardiomegaly"] == pytest.approx(2 / 3)
    assert acc["unparseable"] == f1["unparseable"] == 1 and acc["unparseable_rate"] == pytest.approx(0.2)
    assert acc["ci95"][0] <= acc["value"] <= acc["ci95"][1]
    assert task.config()["prompt"].count("Candidates: Edema; Cardiomegaly; Pneumothorax") == 1
    assert ("step by step" in task.config()["prompt"]) == (style == "cot")


def test_multilabel_scoring_by_hand():
    classes = ("Edema", "Cardiomegaly", "No Finding")
    task = GenerativeClassification(_spec("synthcxr_diag", options={"mode": "multilabel", "classes": classes}))
    refs = [
        {"Edema": 1, "Cardiomegaly": 1, "No Finding": 0},
        {"Edema": -1, "Cardiomegaly": 0, "No Finding": 0},  # hedged edema counts as positive (default)
        {"Edema": 0, "Cardiomegaly": 0, "No Finding": 1},
        {"Edema": 0, "Cardiomegaly": 1, "No Finding": 0},
    ]
    answers = ["Edema and cardiomegaly", "No Finding", "no finding", "I cannot tell"]
    out = task.score(_records(answers, refs), bootstrap=100, seed=0)
    # predictions: {E, C}, {NF}, {NF}, {} (unparseable)
    # Edema:   y 1 1 0 0, p 1 0 0 0 -> acc 3/4, F1 2/3
    # Cardio:  y 1 0 0 1, p 1 0 0 0 -> acc 3/4, F1 2/3
    # NoFind:  y 0 0 1 0, p 0 1 1 0 -> acc 3/4, F1 2/3
    assert out["ACC"]["value"] == pytest.approx(0.75) and out["F1"]["value"] == pytest.approx(2 / 3)
    assert out["ACC"]["exact_set_match"]["value"] == pytest.approx(0.5)
    assert out["F1"]["unparseable"] == 1 and "threshold" not in out["F1"]
    negative = GenerativeClassification(
        _spec("synthcxr_diag", options={"mode": "multilabel", "classes": classes, "uncertain": "negative"})
    )
    # hedged edema as negative: Edema y 1 0 0 0 = p -> acc 1; the other two classes unchanged (3/4)
    assert negative.score(_records(answers, refs), 0, 0)["ACC"]["value"] == pytest.approx((1 + 0.75 + 0.75) / 3)
    with pytest.raises(BenchError, match="expected the model's text"):
        task.score(_records([{"Edema": 1.0}], refs[:1]), 0, 0)


def test_vqa_prompts_and_scores():
    task = VisualQuestionAnswering(_spec("synthcxr_vqa"))
    image = [ImageRef(key="k", path="/x.png")]
    closed = Sample("a", "d", "test", image, question="Is there  edema?", answer="yes", answer_type="closed")
    open_ = Sample("b", "d", "test", image, question="Where is the nodule?", answer="left upper", answer_type="open")
    choice = Sample("c", "d", "test", image, question="Which organ?", answer="liver", answer_type="closed")
    choice.meta["choices"] = {"A": "liver", "B": "spleen"}
    assert task.prompt(closed) == prompts.VQA_CLOSED.format(question="Is there edema?")
    assert task.prompt(open_) == prompts.VQA_OPEN.format(question="Where is the nodule?")
    assert "Options:\nA: liver\nB: spleen\n" in task.prompt(choice)
    no_question = Sample("d", "d", "test", image, question=None, answer="yes")
    assert task.prepare([closed, no_question]) == [closed] and task.config()["skipped_without_question_or_answer"] == 1
    records = _records(["Yes.", "upper left", "no"], ["yes", "left upper", "no"])
    out = task.score(records, bootstrap=50, seed=0)
    assert list(out) == list(task.spec.metrics)
    assert out["vqa_closed_acc"]["value"] == 1.0 and out["vqa_closed_acc"]["n"] == 2
    assert out["vqa_open_acc"]["value"] == 1.0 and out["vqa_exact_match"]["value"] == pytest.approx(2 / 3)


def test_report_generation_prepare_prompt_and_scoring(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_CHEXBERT_PATH", raising=False)
    image = [ImageRef(key="k", path="/x.png")]
    with_ind = Sample("a", "d", "test", image, sections={"indication": "Cough.\n  Fever.", "findings": "Lungs clear."})
    no_ind = Sample("b", "d", "test", image, sections={"findings": "Small  effusion."})
    no_findings = Sample("c", "d", "test", image, sections={"impression": "Normal."})
    task = ReportGeneration(_spec("synthcxr_rrg"))
    assert task.prepare([with_ind, no_ind, no_findings]) == [with_ind, no_ind]
    assert task.prompt(with_ind) == (prompts.RRG_WITH_INDICATION.format(indication="Cough. Fever."), "Cough. Fever.")
    assert task.prompt(no_ind) == (prompts.RRG_IMAGE_ONLY, None)
    assert task.reference(no_ind) == "Small effusion."
    assert task.config()["skipped_without_reference"] == 1
    image_only = ReportGeneration(_spec("synthcxr_rrg", options={"context": "none"}))
    assert image_only.prompt(with_ind) == (prompts.RRG_IMAGE_ONLY, None)
    with pytest.raises(BenchError, match="context must be one of"):
        ReportGeneration(_spec("synthcxr_rrg", options={"context": "history"}))

    names = ("bleu1", "bleu4", "rougeL", "chexbert_f1_micro_14_uncneg")
    spec = _spec("synthcxr_rrg", metrics=names)
    preds = ["The lungs are clear.", "Small left pleural effusion.", "No pneumothorax."]
    refs = ["Lungs are clear.", "Small left pleural effusion.", "Large right pneumothorax."]
    records = _records(preds, refs)
    out = ReportGeneration(spec).score(records, bootstrap=100, seed=0)
    assert list(out) == list(names)
    assert out["chexbert_f1_micro_14_uncneg"]["value"] is None and out["chexbert_f1_micro_14_uncneg"]["unavailable"]
    assert 0 < out["bleu4"]["value"] < out["bleu1"]["value"] < 1
    assert out["bleu1"]["ci95"][0] <= out["bleu1"]["value"] <= out["bleu1"]["ci95"][1]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert api.score(path, metrics=list(names), bootstrap=100, seed=0) == out  # the same scorer as `bench score`


# --------------------------------------------------------------------------- end to end against an oracle server


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sent_sha(image: ImageRef) -> str:
    return _sha(base64.b64decode(image_data_url(image)[len(DATA_URL_PREFIX) :]))


def _index(sample: Sample) -> int:
    return int(sample.meta["index"])


def _mc_answer(sample: Sample) -> str:
    """Multi-class oracle: right (exactly / in a sentence), unsure, or wrong, by image index."""
    label = next(c for c in FIVE_CLASSES if sample.labels.get(c) == 1)
    kind = _index(sample) % 4
    if kind == 0:
        return label
    if kind == 1:
        return f"There is {label.lower()} on this film."
    if kind == 2:
        return "I am not sure."
    return FIVE_CLASSES[(FIVE_CLASSES.index(label) + 1) % len(FIVE_CLASSES)]


def _ml_answer(sample: Sample) -> str:
    """Multi-label oracle: the stated findings (hedged ones left out) or No Finding; every third unsure."""
    if _index(sample) % 3 == 0:
        return "unsure"
    present = [c for c in SYNTH_FINDINGS if sample.labels.get(c) == 1] or ["No Finding"]
    text = ", ".join(present)
    return text.lower() if _index(sample) % 3 == 2 else text


def _vqa_answer(sample: Sample) -> str:
    return sample.answer if (_index(sample) + int(sample.meta["qa_index"])) % 2 == 0 else "maybe"


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory):
    images = {_sent_sha(s.image): s for s in load_synthcxr(None, "test")}
    vqa = {(s.meta["image_id"], s.question): s for s in load_synthcxr(None, "test", view="vqa")}

    def respond(item: Received) -> str:
        sample = images[_sha(item.images[0])]
        if "Candidates:" in item.prompt:
            answer = _ml_answer(sample) if "comma-separated" in item.prompt else _mc_answer(sample)
            return f"The image shows features.\nAnswer: {answer}" if "step by step" in item.prompt else answer
        question = re.search(r"^Question: (.*)$", item.prompt, re.MULTILINE)
        if question:
            return _vqa_answer(vqa[(sample.id, question.group(1))])
        return sample.sections["findings"]

    out = tmp_path_factory.mktemp("oracle")
    tasks = "synthcxr_vqa,synthcxr_rrg,synthcxr_diag,synthcxr_zs_generative,synthcxr_zs_generative_cot"
    with StubServer(responder=respond) as server:
        res = run_bench(
            "run", "--model", "openai", "--task", tasks, "--limit", str(LIMIT), "--bootstrap", "100",
            "--model-args", f"model=oracle,base_url={server.base_url}", "--output", str(out), "--no-progress",
            env={"OPENAI_API_KEY": ""},
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        received = list(server.received)
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    records = {
        name: [json.loads(line) for line in (run_dir / "samples" / f"{name}.jsonl").read_text().splitlines()]
        for name in tasks.split(",")
    }
    results = json.loads((run_dir / "results.json").read_text())
    return {"results": results, "records": records, "received": received, "images": images}


def _samples(oracle_run, name: str) -> list[Sample]:
    by_id = {s.id: s for s in oracle_run["images"].values()}
    return [by_id[r["id"]] for r in oracle_run["records"][name]]


def test_generative_zero_shot_end_to_end(oracle_run):
    for name in ("synthcxr_zs_generative", "synthcxr_zs_generative_cot"):
        samples = _samples(oracle_run, name)
        assert len(samples) == LIMIT
        assert all([s.labels.get(c) for c in FIVE_CLASSES].count(1) == 1 for s in samples)  # one-hot subset
        kinds = np.array([_index(s) % 4 for s in samples])
        truth = [FIVE_CLASSES.index(next(c for c in FIVE_CLASSES if s.labels.get(c) == 1)) for s in samples]
        pred = [t if k < 2 else (-1 if k == 2 else (t + 1) % 5) for t, k in zip(truth, kinds)]
        metrics = oracle_run["results"]["tasks"][name]["metrics"]
        assert metrics["ACC"]["value"] == pytest.approx(np.mean(kinds < 2))
        expected_f1 = f1_score(truth, pred, labels=list(range(5)), average="macro", zero_division=0)
        assert metrics["F1"]["value"] == pytest.approx(expected_f1)
        assert metrics["ACC"]["unparseable"] == int((kinds == 2).sum())
        config = oracle_run["results"]["tasks"][name]["config"]
        assert config["prompt_style"] == ("cot" if name.endswith("cot") else "plain")
        assert all(r["inputs"]["prompt"] == config["prompt"] for r in oracle_run["records"][name])


def test_label_set_diagnosis_end_to_end(oracle_run):
    classes = [*SYNTH_FINDINGS, "No Finding"]
    samples = _samples(oracle_run, "synthcxr_diag")
    y = np.array([[int(s.labels[c] in (1, -1)) for c in classes] for s in samples])  # uncertain = positive
    p = np.zeros_like(y)
    for i, s in enumerate(samples):
        if _index(s) % 3:
            for c in [c for c in SYNTH_FINDINGS if s.labels.get(c) == 1] or ["No Finding"]:
                p[i, classes.index(c)] = 1
    metrics = oracle_run["results"]["tasks"]["synthcxr_diag"]["metrics"]
    assert metrics["ACC"]["value"] == pytest.approx((y == p).mean(axis=0).mean())
    f1 = np.mean([f1_score(y[:, j], p[:, j], zero_division=0) for j in range(len(classes))])
    assert metrics["F1"]["value"] == pytest.approx(f1)
    assert metrics["ACC"]["exact_set_match"]["value"] == pytest.approx((y == p).all(axis=1).mean())
    assert metrics["F1"]["unparseable"] == sum(_index(s) % 3 == 0 for s in samples)


def test_vqa_end_to_end(oracle_run):
    records = oracle_run["records"]["synthcxr_vqa"]
    assert len(records) == LIMIT
    right = [r["prediction"] == r["reference"] for r in records]
    assert 0 < sum(right) < LIMIT and all(r["prediction"] == "maybe" for r, ok in zip(records, right) if not ok)
    metrics = oracle_run["results"]["tasks"]["synthcxr_vqa"]["metrics"]
    assert metrics["vqa_exact_match"]["value"] == pytest.approx(np.mean(right))
    closed = [ok for r, ok in zip(records, right) if r["reference"] in ("yes", "no")]
    assert metrics["vqa_closed_acc"]["value"] == pytest.approx(np.mean(closed))
    assert metrics["vqa_closed_acc"]["n"] == len(closed)
    assert oracle_run["results"]["tasks"]["synthcxr_vqa"]["config"]["prompts"]["closed"] == prompts.VQA_CLOSED


def test_report_generation_end_to_end(oracle_run):
    task = oracle_run["results"]["tasks"]["synthcxr_rrg"]
    records = oracle_run["records"]["synthcxr_rrg"]
    samples = _samples(oracle_run, "synthcxr_rrg")
    prompts_sent = {r.prompt for r in oracle_run["received"]}
    for rec, s in zip(records, samples):
        indication = s.sections["indication"]
        assert rec["inputs"]["indication"] == indication
        assert rec["inputs"]["prompt"] == prompts.RRG_WITH_INDICATION.format(indication=indication)
        assert rec["inputs"]["prompt"] in prompts_sent  # the indication reached the model
        assert rec["prediction"] == rec["reference"] == s.sections["findings"]
    metrics = task["metrics"]
    assert list(metrics) == list(registry().get("tasks", "synthcxr_rrg").metrics)
    for name in ("bleu1", "bleu4", "rougeL"):  # the oracle copies the reference
        assert metrics[name]["value"] == pytest.approx(1.0), name
    assert task["config"]["context"] == "indication" and task["config"]["prompted_without_indication"] == 0
    assert task["config"]["prompts"]["with_indication"] == prompts.RRG_WITH_INDICATION
