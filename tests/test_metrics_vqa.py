"""VQA metrics against cases worked by hand from MultiMedEval's published rules.

The ``multimedeval`` package does not import with current transformers, so parity is checked on
fixed cases. Each case comment shows the normalisation (N), the token sets P (prediction) and
G (gold), then precision p, recall r, F1, BLEU-1 (c = prediction length, r_len = reference
length, BP = 1 if c > r_len else exp(1 − r_len/c)) and the closed/open decision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.interfaces import BenchError, resolve
from bench.metrics import vqa as V

E = math.exp

# (prediction, gold, normalised prediction, normalised gold, closed, p, r, f1, bleu1, correct, exact)
# ``correct`` is the closed decision for closed questions and the open decision for open ones.
# fmt: off
CASES = [
    # 1. N: "yes" / "yes". P=G={yes}: p=r=1, F1=1. BLEU: 1 match/1, c=r_len=1 → BP=e^0=1 → 1.
    #    closed; recall 1 ≥ 0.4 → correct.
    ("Yes", "yes", "yes", "yes", True, 1, 1, 1, 1, True, True),
    # 2. N: "no." → "no" (period stripped). p=r=F1=BLEU=1. closed G'={no,not}: |{no}|/2 = 0.5 ≥ 0.4 → correct.
    ("No.", "no", "no", "no", True, 1, 1, 1, 1, True, True),
    # 3. P={there,is,not,any,effusion}, G={no}: ∩=∅ → p=r=F1=0, BLEU 0 (no match).
    #    closed G'={no,not}: ∩={not} → 1/2 = 0.5 ≥ 0.4 → correct ("not" joins G for gold "no").
    ("There is not any effusion", "No", "there is not any effusion", "no", True, 0, 0, 0, 0, True, False),
    # 4. P={yes}, G={no}: all 0; closed G'={no,not}: 0/2 → wrong.
    ("yes", "no", "yes", "no", True, 0, 0, 0, 0, False, False),
    # 5. P={no}, G={yes}: all 0; closed recall 0/1 → wrong (no "not" rule for gold "yes").
    ("no", "yes", "no", "yes", True, 0, 0, 0, 0, False, False),
    # 6. "yes, there is a mass.": ", " → comma deleted; final period deleted; "a" dropped →
    #    "yes there is mass". P has 4 tokens, ∩={yes}: p=1/4, r=1, F1=2·¼·1/(5/4)=0.4.
    #    BLEU: 1 match/4, c=4 > r_len=1 → BP=1 → 0.25. closed r=1 → correct.
    ("Yes, there is a mass.", "yes", "yes there is mass", "yes", True, 0.25, 1, 0.4, 0.25, True, False),
    # 7. "left lung" both: p=r=F1=1; BLEU 2/2, c=r_len → BP=1 → 1. open r=1 ≥ 0.75 → correct.
    ("left lung", "Left lung", "left lung", "left lung", False, 1, 1, 1, 1, True, True),
    # 8. P={left}, G={left,lung}: p=1, r=1/2, F1=2·½/(3/2)=2/3. BLEU: 1/1 · BP=exp(1−2/1)=e^−1.
    #    open r=0.5 < 0.75 → wrong.
    ("left", "left lung", "left", "left lung", False, 1, 0.5, 2 / 3, E(-1), False, False),
    # 9. "the lower lobe" → "lower lobe" (article). G={right,lower,lobe}: p=1, r=2/3, F1=2·⅔/(5/3)=0.8.
    #    BLEU: 2/2 · exp(1−3/2)=e^−0.5. open 0.667 < 0.75 → wrong.
    ("the lower lobe", "right lower lobe", "lower lobe", "right lower lobe",
     False, 1, 2 / 3, 0.8, E(-0.5), False, False),
    # 10. G={upper,left,lung,zone}, P={upper,left,lung}: p=1, r=3/4, F1=2·¾/(7/4)=6/7.
    #     BLEU: 3/3 · exp(1−4/3)=e^(−1/3). open r=0.75 ≥ 0.75 → correct (boundary is inclusive).
    ("upper left lung", "upper left lung zone", "upper left lung", "upper left lung zone",
     False, 1, 0.75, 6 / 7, E(-1 / 3), True, False),
    # 11. number word: "Two" → "2" = gold "2": all 1, open correct.
    ("Two", "2", "2", "2", False, 1, 1, 1, 1, True, True),
    # 12. "none" → "0" and "zero" → "0": equal, all 1.
    ("none", "zero", "0", "0", False, 1, 1, 1, 1, True, True),
    # 13. contraction: "dont" → "don't"; gold keeps its apostrophe ("'" is not punctuation here). Equal.
    ("dont know", "don't know", "don't know", "don't know", False, 1, 1, 1, 1, True, True),
    # 14. articles dropped on both sides: "a fracture" / "the fracture" → "fracture". All 1.
    ("A fracture", "the fracture", "fracture", "fracture", False, 1, 1, 1, 1, True, True),
    # 15. "-" with no space beside it → replaced by a space: "x-ray" → "x ray" = gold. All 1.
    ("x-ray", "x ray", "x ray", "x ray", False, 1, 1, 1, 1, True, True),
    # 16. " -" occurs → "-" deleted: "x -ray" → "x ray". All 1.
    ("x -ray", "x ray", "x ray", "x ray", False, 1, 1, 1, 1, True, True),
    # 17. digit,comma,digit anywhere → every punctuation mark is deleted, not spaced:
    #     "cm/s 1,5" → "cms 15" = gold. All 1.
    ("cm/s 1,5", "cms 15", "cms 15", "cms 15", False, 1, 1, 1, 1, True, True),
    # 18. without a digit-comma group "/" becomes a space: "cm/s" → "cm s"; G={cms}: ∩=∅ → all 0, open wrong.
    ("cm/s", "cms", "cm s", "cms", False, 0, 0, 0, 0, False, False),
    # 19. decimal point kept (followed by a digit), final period deleted: "3.5 cm." → "3.5 cm". All 1.
    ("3.5 cm.", "3.5 cm", "3.5 cm", "3.5 cm", False, 1, 1, 1, 1, True, True),
    # 20. a period after a digit is deleted too (VQA-eval's look-behind never matches): "5." → "5". All 1.
    ("5.", "5", "5", "5", False, 1, 1, 1, 1, True, True),
    # 21. periods inside a word are deleted without a space: "e.g. edema" → "eg edema". All 1.
    ("e.g. edema", "eg edema", "eg edema", "eg edema", False, 1, 1, 1, 1, True, True),
    # 22. ":" is not in the punctuation list: P={ratio:,0.5}, G={ratio,0.5}: ∩={0.5} → p=r=F1=½.
    #     BLEU: 1 match/2, c=r_len=2 → BP=1 → 0.5. open ½ < 0.75 → wrong.
    ("ratio: 0.5", "ratio 0.5", "ratio: 0.5", "ratio 0.5", False, 0.5, 0.5, 0.5, 0.5, False, False),
    # 23. sets vs counts: P={lung} → p=r=F1=1; BLEU counts "lung"×3, clipped to 1 match of c=3,
    #     c > r_len=1 → BP=1 → 1/3. open correct; not an exact match.
    ("lung lung lung", "lung", "lung lung lung", "lung", False, 1, 1, 1, 1 / 3, True, False),
    # 24. empty prediction: P=∅ → p=0 (empty set), r=0, F1=0, BLEU 0; open wrong.
    ("", "heart", "", "heart", False, 0, 0, 0, 0, False, False),
    # 25. prediction that normalises to nothing: "The." → "the" → article dropped → "". Closed, wrong.
    ("The.", "yes", "", "yes", True, 0, 0, 0, 0, False, False),
    # 26. gold that normalises to nothing: G=∅ → r=0 by rule, P=∅ → p=0; F1=0; BLEU 0 (empty prediction).
    #     "" is not yes/no → open, wrong. Exact match of "" and "" is true (an extra, not MultiMedEval).
    ("the", "the", "", "", False, 0, 0, 0, 0, False, True),
    # 27. "not" alone against gold "No": plain r=0 → p=r=F1=0, BLEU 0; closed G'={no,not}: ½ → correct.
    ("not", "No", "not", "no", True, 0, 0, 0, 0, True, False),
    # 28. hedging "yes and no" vs gold "no": P={yes,and,no}: p=1/3, r=1, F1=2·⅓/(4/3)=0.5.
    #     BLEU 1/3 (c=3 > 1). closed G'={no,not}: ∩={no} → ½ → correct.
    ("yes and no", "no", "yes and no", "no", True, 1 / 3, 1, 0.5, 1 / 3, True, False),
    # 29. gold "Yes." normalises to "yes" → closed. P={y}: all 0 → wrong.
    ("y", "Yes.", "y", "yes", True, 0, 0, 0, 0, False, False),
    # 30. gold "yes, left side" → "yes left side" is not exactly yes/no → open. P={yes}: p=1, r=1/3,
    #     F1=2·⅓/(4/3)=0.5; BLEU 1/1 · exp(1−3/1)=e^−2. open wrong.
    ("yes", "yes, left side", "yes", "yes left side", False, 1, 1 / 3, 0.5, E(-2), False, False),
    # 31. P={small,left,effusion}, G={left,pleural,effusion}: ∩={left,effusion}: p=r=F1=2/3.
    #     BLEU: 2/3, c=r_len=3 → BP=1. open ⅔ < 0.75 → wrong.
    ("small left effusion", "left pleural effusion", "small left effusion", "left pleural effusion",
     False, 2 / 3, 2 / 3, 2 / 3, 2 / 3, False, False),
    # 32. "the liver is enlarged" → "liver is enlarged"; G={liver}: p=1/3, r=1, F1=0.5; BLEU 1/3 (c=3 > 1).
    #     open correct.
    ("the liver is enlarged", "liver", "liver is enlarged", "liver", False, 1 / 3, 1, 0.5, 1 / 3, True, False),
    # 33. "One nodule" → "1 nodule" = gold. All 1.
    ("One nodule", "1 nodule", "1 nodule", "1 nodule", False, 1, 1, 1, 1, True, True),
    # 34. "MRI?" → "?" not beside a space → space → "mri". All 1.
    ("MRI?", "mri", "mri", "mri", False, 1, 1, 1, 1, True, True),
    # 35. "t1 / t2": " /" occurs → "/" deleted → "t1  t2" → "t1 t2". All 1.
    ("t1 / t2", "t1 t2", "t1 t2", "t1 t2", False, 1, 1, 1, 1, True, True),
    # 36. "wont" → "won't" (contraction table); gold "won't" kept. All 1.
    ("wont", "won't", "won't", "won't", False, 1, 1, 1, 1, True, True),
    # 37. "No, it is not." → "no it is not"; G={no}: p=1/4, r=1, F1=0.4; BLEU 1/4 (c=4 > 1).
    #     closed G'={no,not}: ∩={no,not} → 2/2 → correct.
    ("No, it is not.", "no", "no it is not", "no", True, 0.25, 1, 0.4, 0.25, True, False),
    # 38. "an eight-year old" → "-" spaced → "an eight year old" → "an" dropped, "eight" → "8".
    #     G={8,year,old}: all 1.
    ("an eight-year old", "8 year old", "8 year old", "8 year old", False, 1, 1, 1, 1, True, True),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[f"case{i + 1}" for i in range(len(CASES))])
def test_hand_worked_case(case):
    pred, gold, n_pred, n_gold, closed, p, r, f1, bleu, correct, exact = case
    s = V.score_answer(pred, gold)
    assert (s.prediction, s.reference) == (n_pred, n_gold)
    assert s.closed is closed
    assert s.precision == pytest.approx(p, abs=1e-12)
    assert s.recall == pytest.approx(r, abs=1e-12)
    assert s.f1 == pytest.approx(f1, abs=1e-12)
    assert s.bleu1 == pytest.approx(bleu, abs=1e-12)
    assert s.exact is exact
    if closed:
        assert s.closed_correct is correct and s.open_correct is None
    else:
        assert s.open_correct is correct and s.closed_correct is None


def test_at_least_thirty_hand_cases():
    assert len(CASES) >= 30


def test_period_limit_quirk():
    # MultiMedEval passes re.UNICODE (32) as ``count``: of the 40 periods in x.x.….x (41 x's) only the
    # first 32 are deleted → 33 x's run together, then ".x" eight times, one token.
    text = ".".join(["x"] * 41)
    assert V.normalize_answer(text) == "x" * 33 + ".x" * 8


def test_punctuation_decision_is_per_mark_for_the_whole_text():
    # One "-" beside a space makes every "-" of the text be deleted, joined ones included:
    # "x-y -z" contains " -" → "xy z"; alone, "x-y" has no "-" beside a space → "x y".
    assert V.normalize_answer("x-y -z") == "xy z"
    assert V.normalize_answer("x-y") == "x y"
    # A digit-comma-digit group anywhere deletes every mark: "x-y 1,2" → "xy 12".
    assert V.normalize_answer("x-y 1,2") == "xy 12"


def test_corpus_metrics_hand_computed():
    # cases 1, 3, 4 (closed: correct, correct, wrong) and 8, 10, 23 (open: r = 0.5, 0.75, 1).
    picked = [CASES[i] for i in (0, 2, 3, 7, 9, 22)]
    preds = [c[0] for c in picked]
    golds = [c[1] for c in picked]
    # Closed Q Acc = 2/3. Open Q Recall = (0.5+0.75+1)/3 = 0.75. Open Q Acc = 2/3 (0.75 and 1 pass).
    assert V.closed_accuracy(preds, golds) == pytest.approx(2 / 3)
    assert V.open_recall(preds, golds) == pytest.approx(0.75)
    assert V.open_accuracy(preds, golds) == pytest.approx(2 / 3)
    # Recall over all six uses the plain G (no "not"): (1 + 0 + 0 + 0.5 + 0.75 + 1)/6 = 3.25/6.
    assert V.recall(preds, golds) == pytest.approx(3.25 / 6)
    # F1: (1 + 0 + 0 + 2/3 + 6/7 + 1)/6 = (74/21)/6 = 37/63.
    assert V.f1(preds, golds) == pytest.approx(37 / 63)
    # BLEU-1: (1 + 0 + 0 + e^−1 + e^(−1/3) + 1/3)/6.
    assert V.bleu1_mean(preds, golds) == pytest.approx((1 + E(-1) + E(-1 / 3) + 1 / 3) / 6)
    # exact: only case 1 → 1/6.
    assert V.exact_match(preds, golds) == pytest.approx(1 / 6)


def test_empty_subset_is_nan_not_zero():
    preds, golds = ["left lung"], ["left lung"]  # open only
    assert math.isnan(V.closed_accuracy(preds, golds))
    assert V.open_accuracy(preds, golds) == 1.0
    assert math.isnan(V.open_recall(["yes"], ["yes"]))  # closed only


def test_report_intervals_come_from_per_sample_values():
    rng = np.random.default_rng(0)
    golds = [str(x) for x in rng.choice(["yes", "no", "left lung", "right upper lobe", "2"], 300)]
    preds = [g if rng.random() < 0.6 else str(rng.choice(["yes", "no", "left", "lobe"])) for g in golds]
    rep = V.vqa_report(preds, golds, resamples=200, seed=1)
    assert set(rep) == set(V.METRICS)
    scores = V.score_answers(preds, golds)
    closed = [s for s in scores if s.closed]
    assert rep["vqa_closed_acc"]["n"] == len(closed)
    assert rep["vqa_closed_acc"]["value"] == pytest.approx(np.mean([s.closed_correct for s in closed]))
    assert rep["vqa_f1"]["value"] == pytest.approx(np.mean([s.f1 for s in scores]))
    for name in V.METRICS:
        low, high = rep[name]["ci95"]
        assert low <= rep[name]["value"] <= high and low < high
    # the same statistic recomputed on one resample from the sufficient statistics
    stats = V.sufficient_statistics(preds, golds)
    idx = np.arange(0, 300, 3)
    sub = V.score_answers([preds[i] for i in idx], [golds[i] for i in idx])
    assert V.aggregate("vqa_open_recall", stats, idx) == pytest.approx(np.mean([s.recall for s in sub if not s.closed]))


def test_bad_input_is_refused():
    with pytest.raises(BenchError, match="2 predictions but 1 references"):
        V.f1(["a", "b"], ["a"])
    with pytest.raises(BenchError, match="prediction 0 is NoneType"):
        V.f1([None], ["a"])
    with pytest.raises(BenchError, match="unknown VQA metric"):
        V.aggregate("BLEU-9", {})


def test_registered_metrics_resolve_and_follow_the_scorer_signature():
    from bench.plugins import registry

    reg = registry()
    names = [
        "vqa_bleu1",
        "vqa_closed_acc",
        "vqa_open_recall",
        "vqa_recall",
        "vqa_open_acc",
        "vqa_f1",
        "vqa_exact_match",
    ]
    for name in names:
        spec = reg.get("metrics", name)
        assert spec.family == "vqa" and spec.level == "sample" and spec.higher_is_better
        value = resolve(spec.fn)(["yes", "left lung"], ["yes", "left lung"])
        assert value == 1.0
