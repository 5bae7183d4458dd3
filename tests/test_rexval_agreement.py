"""rexval_agreement: the CheXprompt judge (here the `openai` model against a real server on 127.0.0.1) on a fixture in
ReXVal's on-disk format, with Kendall tau-b and the leave-one-rater-out differences computed by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from bench import api
from bench.metrics.judge import LETTERS
from tests.openai_stub_server import Received, StubServer, judged_pair

CANDIDATES = ("radgraph", "bertscore", "s_emb", "bleu")
REPORTS = [
    ["s50000001", "Moderate right pleural effusion.", "c0-radgraph", "c0-bertscore", "c0-s_emb", "c0-bleu"],
    ["s50000002", "Small left apical pneumothorax.", "c1-radgraph", "c1-bertscore", "c1-s_emb", "c1-bleu"],
]
# (study, candidate) -> the six raters' (significant, insignificant) error counts
RATERS = {
    (0, "radgraph"): [(0, 0)] * 6,
    (0, "bertscore"): [(0, 1), (1, 0), (0, 1), (0, 0), (0, 0), (0, 0)],
    (0, "s_emb"): [(1, 1), (1, 0), (1, 1), (0, 1), (1, 1), (0, 1)],
    (0, "bleu"): [(0, 1)] * 6,
    (1, "radgraph"): [(2, 0), (2, 0), (1, 1), (1, 1), (1, 1), (1, 1)],
    (1, "bertscore"): [(0, 0), (0, 0), (0, 0), (1, 0), (0, 1), (0, 1)],
    (1, "s_emb"): [(2, 1)] * 6,
    (1, "bleu"): [(1, 0), (1, 0), (0, 1), (0, 1), (0, 1), (0, 1)],
}


def _counts(sig: dict[str, int], insig: dict[str, int]) -> dict[str, dict[str, int]]:
    return {"significant": {x: sig.get(x, 0) for x in LETTERS}, "insignificant": {x: insig.get(x, 0) for x in LETTERS}}


def _by_type(sig: dict[str, int], insig: dict[str, int]) -> str:
    lines = [", ".join(f"({x}, {d.get(x, 0)})" for x in LETTERS) for d in (sig, insig)]
    return f"Number of clinically significant errors by type: [{lines[0]}]\n" + (
        f"Number of clinically insignificant errors by type: [{lines[1]}]"
    )


# the judge's replies by candidate: (total, significant) = c0: (0,0) (1,0) (2,1) (1,0); c1: (3,2) fail (4,2) (2,1)
REPLIES = {
    "c0-radgraph": json.dumps(_counts({}, {})),
    "c0-bertscore": json.dumps(_counts({}, {"A": 1})),
    "c0-s_emb": _by_type({"A": 1}, {"B": 1}),
    "c0-bleu": json.dumps(_counts({}, {"C": 1})),
    "c1-radgraph": json.dumps(_counts({"A": 1, "D": 1}, {"E": 1})),
    "c1-bertscore": "Both reports describe a pneumothorax.",  # unreadable, also after the repair instruction
    "c1-s_emb": _by_type({"B": 2}, {"C": 1, "F": 1}),
    "c1-bleu": "Two errors.",  # unreadable at first, repaired below
}
REPAIRED = {"c1-bleu": json.dumps(_counts({"F": 1}, {"A": 1}))}


def make_rexval(root: Path) -> Path:
    root.mkdir(parents=True)
    with open(root / "50_samples_gt_and_candidates.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "gt_report", *CANDIDATES])
        w.writerows(REPORTS)
    with open(root / "6_valid_raters_per_rater_error_categories.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "study_number", "candidate_type", "rater_index", "error_category", "clinically_significant",
                    "num_errors"])  # fmt: skip
        k = 0
        for (study, cand), per_rater in RATERS.items():
            for rater, (sig, insig) in enumerate(per_rater):
                for category, significant, n in ((1, "True", sig), (2, "False", insig)):
                    if n:
                        w.writerow([k, study, cand, rater, category, significant, n])
                        k += 1
    return root


def responder(item: Received) -> str:
    _, candidate = judged_pair(item.prompt)
    if "Your previous reply:" in item.prompt and candidate in REPAIRED:
        return REPAIRED[candidate]
    return REPLIES[candidate]


def test_rexval_agreement_by_hand(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    make_rexval(tmp_path / "data" / "rexval")
    options = dict(data_root=str(tmp_path / "data"), output=str(tmp_path / "runs"), bootstrap=200, progress=False)
    with StubServer(responder=responder) as server:
        model_args = {"model": "judge-m", "base_url": server.base_url, "concurrency": 4}
        outcome = api.evaluate(
            "openai", ["rexval_agreement"], log=lambda m: None, model_args=model_args,
            cache_path=str(tmp_path / "cache.sqlite"), **options,
        )  # fmt: skip
        assert server.count == 8 + 2  # every pair once, the two unreadable replies sent back once
        repair = next(r for r in server.received if "Your previous reply:" in r.prompt)
        assert "could not be read" in repair.prompt and repair.body["temperature"] == 0.0
        assert [p["type"] for p in repair.body["messages"][-1]["content"]] == ["text"]  # no image
    task = outcome.results["tasks"]["rexval_agreement"]
    m = task["metrics"]
    # Over the 7 judged pairs (c1-bertscore failed):
    #   judge total  J = 0 1 2 1 3 4 2      raters' mean total  M = 0 .5 1.5 1 2 3 1
    #   18 concordant pairs, 0 discordant, 2 tied in J only (J=1,1 and J=2,2), 1 tied in M only (M=1,1):
    #   tau_b = 18 / sqrt((21-2)(21-1)) = 18 / sqrt(380)
    #   judge significant J = 0 0 1 0 2 2 1    raters' mean significant M = 0 1/6 2/3 0 4/3 2 1/3
    #   16 concordant, 0 discordant, ties in J 5 (3 among the zeros, 1 among the ones, 1 among the twos),
    #   ties in M 1 (the two zeros, also tied in J): tau_b = 16 / sqrt((21-5)(21-1)) = 16 / sqrt(320)
    assert m["kendall_tau_b_total"]["value"] == pytest.approx(18 / math.sqrt(380))
    assert m["kendall_tau_b_significant"]["value"] == pytest.approx(16 / math.sqrt(320))
    # Leave one rater out (total errors): only c0-bertscore and c0-s_emb differ between raters; the left-out
    # rater is 0.6 off the others' mean on each of them -> 1.2 / 7 for every rater. The judge is off by
    # 0.6 or 0.4 on those two (rater-dependent) and by 1 on c1-radgraph, c1-s_emb, c1-bleu: per rater
    # 4.2, 4.0, 4.2, 3.8, 4.0, 3.8 (/ 7) -> mean 4.0 / 7
    assert m["mad_rater_vs_raters"]["value"] == pytest.approx(1.2 / 7)
    assert m["mad_judge_vs_raters"]["value"] == pytest.approx(4.0 / 7)
    per_rater = m["mad_judge_vs_raters"]["per_rater"]
    assert [round(per_rater[r]["mad_judge"] * 7, 9) for r in "012345"] == [4.2, 4.0, 4.2, 3.8, 4.0, 3.8]
    assert all(v["p"] is not None and 0 <= v["p"] <= 1 for v in per_rater.values())
    for entry in m.values():
        assert entry["n"] == 7 and entry["n_judge_failed"] == 1
        assert entry["ci95"][0] is not None and entry["ci95"][0] <= entry["value"] + 1e-12
    judge = task["config"]["judge"]
    assert (judge["n_judged"], judge["n_judge_failed"], judge["repairs"]) == (7, 1, 2)

    samples = outcome.run_dir / task["samples_file"]
    records = {r["id"]: r for r in map(json.loads, samples.read_text().splitlines())}
    assert records["rexval-01-bertscore"]["prediction"] is None
    assert records["rexval-01-bertscore"]["judge_failure"] == "unparseable reply"
    assert records["rexval-01-bleu"]["judge_repaired"] is True
    assert records["rexval-00-s_emb"]["prediction"] == {"significant": [1, 0, 0, 0, 0, 0],
                                                         "insignificant": [0, 1, 0, 0, 0, 0]}  # fmt: skip
    assert records["rexval-01-radgraph"]["reference"]["mean_significant_errors"] == pytest.approx(8 / 6)
    # re-scoring the samples file needs no judge calls and gives the same numbers
    rescored = api.score(samples, task="rexval_agreement", bootstrap=200)
    assert {k: v["value"] for k, v in rescored.items()} == {k: v["value"] for k, v in m.items()}
