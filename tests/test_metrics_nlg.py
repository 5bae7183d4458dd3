"""NLG metrics: hand-worked cases, parity with pycocoevalcap / sacrebleu / rouge-score / METEOR's jar / the
Java PTBTokenizer on real IU X-ray reports, unavailability, and the `bench score --metrics` CLI."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import api
from bench.interfaces import BenchError
from bench.metrics import nlg
from bench.metrics.text_tokenize import PTB_PUNCTUATION, ptb_tokenize, ptb_tokens
from bench.metrics.unavailable import MetricUnavailable
from tests.conftest import run_bench
from tests.real_reports import require_iu_reports

JAVA = shutil.which("java")
needs_java = pytest.mark.skipif(JAVA is None, reason="Java is not installed (METEOR and PTBTokenizer need it)")

# --------------------------------------------------------------------------- real report pairs


def _shuffle_words(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) > 3:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
        del words[rng.randrange(len(words))]
    return " ".join(words)


@pytest.fixture(scope="module")
def report_pairs() -> tuple[list[str], list[str]]:
    """600 (prediction, reference) pairs of real FINDINGS: 450 references paired with another report's
    findings (seeded derangement) and 150 with a perturbed copy of themselves (high n-gram overlap)."""
    reports = [r for r in require_iu_reports() if r.findings][:600]
    refs = [r.findings for r in reports]
    rng = random.Random(0)
    order = list(range(len(refs)))
    rng.shuffle(order)
    preds = [refs[order[(order.index(i) + 1) % len(order)]] for i in range(len(refs))]
    for i in range(0, len(refs), 4):
        preds[i] = _shuffle_words(refs[i], rng)
    preds[5] = ""  # an empty prediction
    preds[7] = refs[7]  # a perfect one
    return preds, refs


@pytest.fixture(scope="module")
def multi_ref_pairs() -> tuple[list[str], list[list[str]]]:
    """300 samples with 1-3 references (findings, impression, another impression)."""
    reports = [r for r in require_iu_reports() if r.findings and r.impression][:300]
    rng = random.Random(1)
    preds, refs = [], []
    for i, r in enumerate(reports):
        other = reports[(i * 7 + 3) % len(reports)]
        refs.append([r.findings, r.impression, other.impression][: rng.choice([1, 2, 3])])
        preds.append(rng.choice([other.findings, r.impression, _shuffle_words(r.findings, rng)]))
    return preds, refs


def _pycoco(cands: list[str], refs: list[list[str]]) -> dict[str, object]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [c] for i, c in enumerate(cands)}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    out: dict[str, object] = {f"bleu{k + 1}": bleu[k] for k in range(4)}
    out.update(rougeL=rouge, cider=cider, cider_each=np.asarray(cider_each), rouge_each=np.asarray(rouge_each))
    return out


# --------------------------------------------------------------------------- tokeniser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "The heart is normal in size. No effusion (small).",
            "the heart is normal in size no effusion -lrb- small -rrb-",
        ),
        (
            "Cannot exclude early pneumonia; patient's XXXX-year-old.",
            "can not exclude early pneumonia patient 's xxxx-year-old",
        ),
        ("1. Stable 1.5 cm nodule, T11-T12 and/or L1.", "1 stable 1.5 cm nodule t11-t12 and/or l1"),
        ("2., mild; V72.84, apex.There is", "2. mild v72 .84 apex.there is"),
        ("Dr. XXXX at 10:30 a.m. e.g. CT. Mass. mass.", "dr. xxxx at 10:30 a.m. e.g. ct. mass. mass"),
        ("hepatitis C. Hepatocellular; vitamin D. The", "hepatitis c. hepatocellular vitamin d the"),
        ("No. 5 but no. The &gt; [x] don't", "no. 5 but no the > -lsb- x -rsb- do n't"),
        ('"quoted" ... -- - ? !', "quoted"),
        ("1 1/2 inches", "1\u00a01/2 inches"),
    ],
)
def test_ptb_tokenizer_hand_cases(text: str, expected: str) -> None:
    assert ptb_tokenize(text) == expected


def test_ptb_tokens_keep_punctuation() -> None:
    assert ptb_tokens("Clear lungs.") == ["clear", "lungs", "."]
    assert "." in PTB_PUNCTUATION and "-lrb-" not in PTB_PUNCTUATION


@needs_java
def test_ptb_tokenizer_matches_stanford_on_all_iu_texts(tmp_path: Path) -> None:
    """Every FINDINGS / IMPRESSION / INDICATION / COMPARISON text of the 3,955 reports, through the real
    Stanford PTBTokenizer (CoreNLP 3.4.1 jar of pycocoevalcap, -preserveLines -lowerCase) + pycocoevalcap's
    punctuation filter, equals ours. Texts are separated by blank lines so that each is tokenised alone."""
    jar = Path(nlg.meteor_jar()).parent.parent / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    texts = sorted({t for r in require_iu_reports() for t in r.sections.values() if t})
    assert len(texts) > 7000
    src = tmp_path / "in.txt"
    src.write_text("\n\n".join(t.replace("\n", " ") for t in texts))
    cmd = [JAVA, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(src)]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode().split("\n")[0::2]
    punct = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
    java = [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in out[: len(texts)]]
    ours = [ptb_tokenize(t) for t in texts]
    bad = [(t, j, o) for t, j, o in zip(texts, java, ours) if j != o]
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"


# --------------------------------------------------------------------------- hand-worked values


def test_bleu_hand_worked() -> None:
    cand, ref = "the cat sat on the mat", "the cat is on the mat"
    s = nlg.bleu_stats_from_table(nlg.ngram_table([cand.split()], [[ref.split()]]))
    # lengths 6/6; n-gram counts 6,5,4,3; clipped matches: the×2 cat on mat = 5; the-cat on-the the-mat = 3;
    # on-the-mat = 1; none of the 4-grams
    np.testing.assert_array_equal(s[0], [6, 6, 6, 5, 4, 3, 5, 3, 1, 0])
    p = [(5 + 1e-15) / (6 + 1e-9), (3 + 1e-15) / (5 + 1e-9), (1 + 1e-15) / (4 + 1e-9), 1e-15 / (3 + 1e-9)]
    # pycocoevalcap's epsilons make the length ratio (6 + 1e-15) / (6 + 1e-9) < 1: a (tiny) brevity penalty
    penalty = math.exp(1 - (6 + 1e-9) / (6 + 1e-15))
    for k in range(1, 5):
        assert nlg.coco_bleu_from_totals(s[0], k) == pytest.approx(math.prod(p[:k]) ** (1 / k) * penalty, rel=1e-12)
    assert nlg.coco_bleu_from_totals(s[0], 2) == pytest.approx(math.sqrt(0.5), abs=1e-9)
    # brevity penalty on the corpus sums: candidate lengths 6 + 2 against references 6 + 6
    two = nlg.bleu_stats_from_table(nlg.ngram_table([cand.split(), ["the", "cat"]], [[ref.split()], [ref.split()]]))
    totals = two.sum(axis=0)
    assert totals[0] == 8 and totals[1] == 12
    assert nlg.coco_bleu_from_totals(totals, 1) == pytest.approx((7 / 8) * math.exp(1 - 12 / 8), rel=1e-9)
    # "closest" reference length: candidate of 5 tokens, references of 4 and 6 -> tie, the shorter (4) wins
    tie = nlg.bleu_stats_from_table(nlg.ngram_table([list("abcde")], [[list("abcd"), list("abcdef")]]))
    assert tie[0, 1] == 4
    # clipping by the maximum count over references
    clip = nlg.bleu_stats_from_table(nlg.ngram_table([["a", "a", "a"]], [[["a", "b"], ["a", "a", "c"]]]))
    assert clip[0, 6] == 2


def test_rouge_l_hand_worked() -> None:
    assert nlg.lcs_length(["a", "b", "c", "d"], ["a", "c", "b", "d"]) == 3
    assert nlg.coco_rouge_l_scores(["a b c d"], [["a c b d"]])[0] == pytest.approx(0.75)
    # P = 1, R = 0.5: F_beta = (1 + 1.44) * 0.5 / (0.5 + 1.44)
    assert nlg.coco_rouge_l_scores(["a b"], [["a b c d"]])[0] == pytest.approx(2.44 * 0.5 / 1.94)
    # max precision and max recall are taken over references separately
    got = nlg.coco_rouge_l_scores(["a b c"], [["a b c d e f", "a x"]])[0]
    p, r = 1.0, 0.5  # P from the first reference (3/3), R from the first (3/6) > second (1/2 = 0.5)
    assert got == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    assert nlg.rouge_score_l_scores([["a", "b"]], [[["a", "b", "c", "d"]]])[0] == pytest.approx(2 * 0.5 / 1.5)


def test_lcs_matches_dynamic_programming() -> None:
    rng = random.Random(3)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randrange(0, 90))]
        b = [rng.choice("abcde") for _ in range(rng.randrange(0, 40))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
        assert nlg.lcs_length(a, b) == table[-1][-1] == nlg.lcs_length(b, a)


def test_cider_hand_worked() -> None:
    # N = 2 samples. Sample 1: candidate = reference "a b": every n-gram has df = 1, weight log 2, cosine 1 for
    # unigrams and bigrams, no 3/4-grams (0), equal bigram counts (no length penalty): 10 * mean(1,1,0,0) = 5.
    # Sample 2 shares nothing with its reference: 0.
    table = nlg.ngram_table([["a", "b"], ["c", "d"]], [[["a", "b"]], [["e", "f"]]])
    np.testing.assert_allclose(nlg.cider_scores_from_table(table), [5.0, 0.0], atol=1e-12)
    # an n-gram in every sample's references has IDF 0 and adds nothing
    table = nlg.ngram_table([["x"], ["x"]], [[["x", "y"]], [["x", "z"]]])
    np.testing.assert_allclose(nlg.cider_scores_from_table(table), [0.0, 0.0], atol=1e-12)
    # length penalty: exp(-delta^2 / 72) with delta = difference of bigram counts (2 - 1)
    table = nlg.ngram_table([["a", "b", "c"], ["q"]], [[["a", "b"]], [["r"]]])
    unigram = 2 / math.sqrt(3 * 2)  # clipped dot / norms, all weights log 2
    expected = 10 * (unigram + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert nlg.cider_scores_from_table(table)[0] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- parity on real reports


def test_coco_parity_on_real_reports(report_pairs: tuple[list[str], list[str]]) -> None:
    preds, refs = report_pairs
    assert len(preds) >= 500
    cands, ref_tok = nlg.coco_tokenize(preds, refs)
    ours = nlg.coco_scores(cands, ref_tok)
    ref = _pycoco(cands, ref_tok)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider"):
        assert abs(ours[k] - ref[k]) <= 1e-6, k  # type: ignore[operator]
    assert ours["bleu4"] > 0.05 and ours["cider"] > 0.3  # the perturbed copies give real 4-gram overlap
    table = nlg.ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in ref_tok])
    np.testing.assert_allclose(nlg.cider_scores_from_table(table), ref["cider_each"], atol=1e-9)
    np.testing.assert_allclose(nlg.coco_rouge_l_scores(cands, ref_tok), ref["rouge_each"], atol=1e-12)
    # the registered metric objects (raw text in) give the same numbers
    for k in ("bleu1", "bleu4", "rougeL", "cider"):
        assert getattr(nlg, k)(preds, refs) == pytest.approx(ours[k], abs=1e-12)


def test_coco_parity_with_several_references(multi_ref_pairs: tuple[list[str], list[list[str]]]) -> None:
    preds, refs = multi_ref_pairs
    cands, ref_tok = nlg.coco_tokenize(preds, refs)
    assert {len(r) for r in ref_tok} == {1, 2, 3}
    ours = nlg.coco_scores(cands, ref_tok)
    ref = _pycoco(cands, ref_tok)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider"):
        assert abs(ours[k] - ref[k]) <= 1e-6, k  # type: ignore[operator]


def test_sacrebleu_parity(report_pairs: tuple[list[str], list[str]]) -> None:
    import sacrebleu
    from sacrebleu.metrics import BLEU

    preds, refs = report_pairs
    assert nlg.sacrebleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    one = BLEU(max_ngram_order=1).corpus_score(preds, [refs]).score
    assert nlg.sacrebleu1(preds, refs) == pytest.approx(one, abs=1e-9)
    # two reference streams
    second = [r[::-1] for r in refs]
    both = [[a, b] for a, b in zip(refs, second)]
    assert nlg.sacrebleu(preds, both) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs, second]).score, abs=1e-9)


def test_rouge_score_parity(report_pairs: tuple[list[str], list[str]]) -> None:
    from rouge_score import rouge_scorer
    from rouge_score.tokenizers import DefaultTokenizer

    preds, refs = report_pairs
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = float(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]))
    assert nlg.rougeL_rouge_score(preds, refs) == pytest.approx(expected, abs=1e-12)
    tok = DefaultTokenizer(use_stemmer=False)
    assert all(nlg.rouge_score_tokens(t) == tok.tokenize(t) for t in preds + refs + ["Naïve 3.5-cm K\u212a x"])
    multi = [[r, p[:40]] for p, r in zip(preds, refs)][:100]
    expected = float(np.mean([scorer.score_multi(m, p)["rougeL"].fmeasure for p, m in zip(preds, multi)]))
    assert nlg.rougeL_rouge_score(preds[:100], multi) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- METEOR


@pytest.fixture(scope="module")
def cli_samples(
    report_pairs: tuple[list[str], list[str]], multi_ref_pairs: tuple[list[str], list[list[str]]]
) -> tuple[list[str], list[object]]:
    """40 samples for the CLI: real single-reference pairs, two with several references, an empty prediction
    and a perfect one."""
    preds, refs = report_pairs
    mpreds, mrefs = multi_ref_pairs
    out_preds: list[str] = [*preds[8:44], mpreds[0], mpreds[1], "", mrefs[2][0]]
    out_refs: list[object] = [*refs[8:44], mrefs[0], mrefs[1], refs[0], mrefs[2]]
    return out_preds, out_refs


@pytest.fixture(scope="module")
def pycoco_meteor(cli_samples: tuple[list[str], list[object]]) -> dict[str, object]:
    """pycocoevalcap's own METEOR (its Meteor wrapper: one SCORE line per sample, then EVAL) on the CLI
    samples, with the statistics lines it exchanged with the jar."""
    if JAVA is None:
        pytest.skip("Java is not installed (METEOR needs it)")
    from pycocoevalcap.meteor.meteor import Meteor

    cands, refs = nlg.coco_tokenize(*cli_samples)
    scorer = Meteor()
    try:
        lines = [scorer._stat(c, r) for c, r in zip(cands, refs)]
        score, each = scorer.compute_score({i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)})
    finally:
        del scorer
    return {"cands": cands, "refs": refs, "lines": lines, "score": score, "each": np.asarray(each)}


def test_meteor_statistics_aggregate_like_the_jar(pycoco_meteor: dict[str, object]) -> None:
    """Our METEOR formula on the jar's per-sample statistics gives the jar's per-sample and corpus scores."""
    stats = nlg.parse_meteor_stats(pycoco_meteor["lines"])  # type: ignore[arg-type]
    assert nlg.meteor_from_totals(stats.sum(axis=0)) == pytest.approx(pycoco_meteor["score"], abs=1e-9)
    each = np.asarray(pycoco_meteor["each"])
    np.testing.assert_allclose(nlg.meteor_from_totals(stats), each, atol=1e-9)
    assert each[-1] > 0.99 and each[-2] == 0.0  # the perfect and the empty prediction
    # the perfect match's chunk is dropped from the sum, as METEOR does
    assert stats[-1, 20] == 0 and stats[0, 20] > 0


def test_meteor_sends_what_pycocoevalcap_sends() -> None:
    lines = nlg._score_lines(["a b  c |||", "x"], [["r one", "r two"], ["s"]])
    assert lines == ["SCORE ||| r one ||| r two ||| a b c", "SCORE ||| s ||| x"]


def _write_predictions(path: Path, preds: list[str], refs: list[object]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "prediction": p, "reference": r}) + "\n"
            for i, (p, r) in enumerate(zip(preds, refs))
        )
    )
    return path


def test_meteor_without_java_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, report_pairs: tuple[list[str], list[str]]
) -> None:
    monkeypatch.setattr(nlg.shutil, "which", lambda name: None)
    with pytest.raises(MetricUnavailable, match="Java"):
        nlg.meteor(["a b"], ["a b"])
    preds, refs = report_pairs
    file = _write_predictions(tmp_path / "p.jsonl", preds[:30], refs[:30])
    out = api.score(file, metrics=["meteor", "bleu4"], bootstrap=50)
    assert out["meteor"]["value"] is None and out["meteor"]["ci95"] == [None, None] and out["meteor"]["n"] == 30
    assert "Java" in out["meteor"]["unavailable"]
    assert out["bleu4"]["value"] is not None and "unavailable" not in out["bleu4"]


# --------------------------------------------------------------------------- BERTScore


def test_bertscore_unavailable_without_a_local_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(nlg.BERTSCORE_ENV, raising=False)
    file = _write_predictions(tmp_path / "p.jsonl", ["clear lungs"], ["lungs are clear"])
    out = api.score(file, metrics=["bertscore_f1"], bootstrap=0)["bertscore_f1"]
    assert out["value"] is None and nlg.BERTSCORE_ENV in out["unavailable"]
    monkeypatch.setenv(nlg.BERTSCORE_ENV, str(tmp_path / "missing"))
    out = api.score(file, metrics=["bertscore_f1"], bootstrap=0)["bertscore_f1"]
    assert out["value"] is None and "config.json" in out["unavailable"]


def _tiny_bert(folder: Path) -> Path:
    """A 2-layer random BERT with a small WordPiece vocabulary, saved locally (no download)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    words = "the heart is normal size lungs are clear no pleural effusion or pneumothorax mild cardiomegaly".split()  # noqa: SIM905
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=64)
    tok.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def test_bertscore_with_a_local_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bert_score = pytest.importorskip("bert_score")
    model = _tiny_bert(tmp_path / "tiny-bert")
    monkeypatch.setenv(nlg.BERTSCORE_ENV, str(model))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preds = ["the heart is normal", "no pleural effusion", "mild cardiomegaly"]
    refs = ["the heart is normal size", "lungs are clear", "mild cardiomegaly"]
    stats = nlg.bertscore_f1.stats(preds, refs)[:, 0]
    _, _, f1 = bert_score.score(preds, refs, model_type=str(model), num_layers=2, lang=None, verbose=False)
    np.testing.assert_allclose(stats, f1.numpy(), atol=1e-6)
    assert stats[2] == pytest.approx(1.0, abs=1e-5)  # identical texts
    assert nlg.bertscore_f1(preds, refs) == pytest.approx(float(f1.mean()), abs=1e-6)


# --------------------------------------------------------------------------- inputs and the CLI


def test_bad_text_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="sample 1: the prediction must be a string"):
        nlg.bleu1(["a", 3], ["a", "b"])
    with pytest.raises(BenchError, match="sample 0: the reference must be a string or a non-empty list"):
        nlg.cider(["a"], [[]])
    with pytest.raises(BenchError, match="2 predictions but 1 references"):
        nlg.rougeL(["a", "b"], ["a"])
    file = _write_predictions(tmp_path / "p.jsonl", ["fine", "also fine"], ["ok", {"not": "text"}])
    res = run_bench("score", "--metrics", "bleu1", "--predictions", str(file))
    assert res.returncode == 2 and "sample 1: the reference must be a string" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_score_nlg_metrics(
    tmp_path: Path, cli_samples: tuple[list[str], list[object]], request: pytest.FixtureRequest
) -> None:
    preds, refs = cli_samples
    file = _write_predictions(tmp_path / "pred.jsonl", preds, refs)
    res = run_bench(
        "score",
        "--metrics",
        "bleu1,bleu4,rougeL,cider,meteor",
        "--predictions",
        str(file),
        "--bootstrap",
        "200",
        "--output",
        str(tmp_path / "out"),
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert list(out) == ["bleu1", "bleu4", "rougeL", "cider", "meteor"]
    assert json.loads((tmp_path / "out" / "scores.json").read_text()) == out
    cands, ref_tok = nlg.coco_tokenize(preds, refs)
    expected = nlg.coco_scores(cands, ref_tok)
    for k in ("bleu1", "bleu4", "rougeL", "cider"):
        m = out[k]
        assert m["n"] == 40 and m["value"] == pytest.approx(expected[k], abs=1e-12)
        assert m["ci95"][0] < m["value"] < m["ci95"][1]
    if JAVA is None:
        assert out["meteor"]["value"] is None and "Java" in out["meteor"]["unavailable"]
    else:  # one batch through the jar = pycocoevalcap's METEOR on the same samples
        expected_meteor = request.getfixturevalue("pycoco_meteor")["score"]
        m = out["meteor"]
        assert m["value"] == pytest.approx(expected_meteor, abs=1e-9) and m["ci95"][0] < m["value"] < m["ci95"][1]
    # the same seed gives the same intervals, whichever other metrics are scored alongside
    again = json.loads(
        run_bench("score", "--metrics", "bleu4", "--predictions", str(file), "--bootstrap", "200").stdout
    )
    assert again["bleu4"] == out["bleu4"]


def test_metrics_are_listed_without_importing_them() -> None:
    code = (
        "import sys, json; from bench import api; names = {m['name'] for m in api.list_items('metrics')}; "
        "print(json.dumps([sorted(names), 'bench.metrics.nlg' in sys.modules, 'sacrebleu' in sys.modules]))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    names, nlg_loaded, sacre_loaded = json.loads(res.stdout)
    assert {
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "rougeL",
        "cider",
        "meteor",
        "sacrebleu",
        "sacrebleu1",
        "rougeL_rouge_score",
        "bertscore_f1",
    } <= set(names)
    assert not nlg_loaded and not sacre_loaded
