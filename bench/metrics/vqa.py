"""Visual question answering metrics with MultiMedEval's definitions (used by MedDr, Table 1).

Every metric is a mean of per-sample values, so bootstrap intervals resample per-sample
values (see :func:`sufficient_statistics` and :func:`vqa_report`).

Normalisation (:func:`normalize_answer`) follows the VQA-eval answer processing that
MultiMedEval's ``clean_str`` applies to both the answer and the gold answer, in this order:

1. lowercase;
2. punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when the text
   contains it next to a space (``"p "`` or ``" p"``) or when the text contains a digit-comma-digit
   group anywhere; otherwise it is replaced by a space. The test is made on the lowercased input,
   not on the partly processed text. Other characters (``: ' % # & *`` …) are kept;
3. periods not followed by a digit are deleted (``"3.5"`` keeps its period, ``"end."`` loses it).
   VQA-eval's pattern ``(?!<=\\d)(\\.)(?!\\d)`` was meant to also spare a period preceded by a digit,
   but its look-behind is written as a look-ahead and never matches, so ``"5."`` becomes ``"5"``.
   MultiMedEval passes ``re.UNICODE`` (= 32) where ``Pattern.sub`` expects ``count``, so only the
   first 32 periods of a text are deleted; this module does the same, for parity;
4. split on whitespace; number words ``none zero one … ten`` become digits (``none`` → ``0``);
   the articles ``a an the`` are dropped (after the number-word step);
5. contraction spellings without the apostrophe become the apostrophe form (``dont`` → ``don't``,
   ``wont`` → ``won't``), with VQA-eval's table;
6. words joined with single spaces; any remaining comma deleted.

Per sample, with P and G the *sets* of whitespace tokens of the normalised prediction and gold:

- precision = |P∩G|/|P|, recall = |P∩G|/|G| (0 when the set is empty), F1 = 2pr/(p+r) (0 when
  p+r = 0). MultiMedEval divides by p+r+1e-8; the difference is below 1e-8 and is not reproduced.
- BLEU-1 = BP · (clipped unigram matches / prediction length) on the normalised strings, tokens
  split on whitespace with repetitions (torchmetrics ``BLEUScore(n_gram=1)``, one sentence at a
  time), BP = 1 if c > r else exp(1 − r/c); 0 when nothing matches. torchmetrics computes in
  float32; values here are float64 (differences below 1e-7).
- closed question ⇔ normalised gold is exactly ``"yes"`` or ``"no"`` (the dataset's
  ``answer_type`` is not used, as in MultiMedEval). For closed questions with gold ``"no"``,
  ``"not"`` joins G for the closed decision only; closed correct ⇔ that recall ≥ 0.4. The
  ``Recall``/``F1`` means use the plain G.
- open correct ⇔ recall ≥ 0.75.
- exact match ⇔ normalised prediction == normalised gold (not a MultiMedEval metric; an extra).

Corpus values: BLEU-1, Recall, F1, exact match = means over all samples; Closed Q Acc = share of
closed questions that are correct; Open Q Recall / Open Q Acc = mean recall / share correct over
open questions. A subset mean over an empty subset (no closed, or no open, questions) is NaN:
MultiMedEval reports 0 there, which would read as a real score.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.interfaces import BenchError

# --------------------------------------------------------------------------- normalisation tables

# VQA-eval's contraction table: apostrophe-less spelling → apostrophe form. Its capitalised
# entries (Id've, I'dve, Im, Ive) can never match lowercased text and its identity entries
# (let's, she's) change nothing, so they are left out. "somebody'd" → "somebodyd" is reversed in
# the original table and kept as is, for parity.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip

NUMBER_WORDS: dict[str, str] = {
    word: str(i)
    for i, word in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))
}
NUMBER_WORDS["none"] = "0"

ARTICLES = frozenset({"a", "an", "the"})

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")  # the effective VQA-eval rule (see the module docstring)
_PERIOD_LIMIT = 32  # MultiMedEval's re.UNICODE passed as ``count``

CLOSED_ANSWERS = ("yes", "no")
CLOSED_THRESHOLD = 0.4  # closed correct ⇔ recall (with "not" for gold "no") ≥ 0.4
OPEN_THRESHOLD = 0.75  # open correct ⇔ recall ≥ 0.75


def normalize_answer(text: str) -> str:
    """MultiMedEval / VQA-eval answer normalisation (see the module docstring for the rules)."""
    lowered = text.lower()
    delete_all = _DIGIT_COMMA_DIGIT.search(lowered) is not None
    out = lowered
    for p in PUNCTUATION:
        beside_space = (p + " ") in lowered or (" " + p) in lowered
        out = out.replace(p, "" if delete_all or beside_space else " ")
    out = _PERIOD.sub("", out, count=_PERIOD_LIMIT)
    words = []
    for word in out.split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words).replace(",", "")


def answer_tokens(normalized: str) -> set[str]:
    """The set of whitespace tokens of a normalised answer."""
    return set(normalized.split())


# --------------------------------------------------------------------------- per-sample scores


def bleu1(prediction: str, reference: str) -> float:
    """Sentence BLEU-1 with brevity penalty on whitespace tokens (torchmetrics' rule, one reference)."""
    pred = prediction.split()
    ref = reference.split()
    if not pred:
        return 0.0
    matches = sum((Counter(pred) & Counter(ref)).values())
    if matches == 0:
        return 0.0
    c, r = len(pred), len(ref)
    penalty = 1.0 if c > r else math.exp(1.0 - r / c)
    return penalty * matches / c


@dataclass(frozen=True)
class VQAScore:
    """One sample's scores; ``closed_correct`` is None for an open question, ``open_correct`` for a closed one."""

    prediction: str  # normalised
    reference: str  # normalised
    closed: bool
    precision: float
    recall: float
    f1: float
    bleu1: float
    exact: bool
    closed_correct: bool | None
    open_correct: bool | None

    def to_json(self) -> dict[str, Any]:
        return {
            "normalized_prediction": self.prediction,
            "normalized_reference": self.reference,
            "closed": self.closed,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "bleu1": self.bleu1,
            "exact": self.exact,
            "closed_correct": self.closed_correct,
            "open_correct": self.open_correct,
        }


def _overlap_ratio(pred: set[str], gold: set[str], denominator: set[str]) -> float:
    return len(pred & gold) / len(denominator) if denominator else 0.0


def score_answer(prediction: str, reference: str) -> VQAScore:
    """Score one answer against its gold answer (raw strings; both are normalised here)."""
    pred_norm = normalize_answer(prediction)
    gold_norm = normalize_answer(reference)
    pred_tokens = answer_tokens(pred_norm)
    gold_tokens = answer_tokens(gold_norm)
    precision = _overlap_ratio(pred_tokens, gold_tokens, pred_tokens)
    recall = _overlap_ratio(pred_tokens, gold_tokens, gold_tokens)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    closed = gold_norm in CLOSED_ANSWERS
    closed_correct = open_correct = None
    if closed:
        closed_gold = gold_tokens | {"not"} if gold_norm == "no" else gold_tokens
        closed_correct = _overlap_ratio(pred_tokens, closed_gold, closed_gold) >= CLOSED_THRESHOLD
    else:
        open_correct = recall >= OPEN_THRESHOLD
    return VQAScore(
        prediction=pred_norm,
        reference=gold_norm,
        closed=closed,
        precision=precision,
        recall=recall,
        f1=f1,
        bleu1=bleu1(pred_norm, gold_norm),
        exact=pred_norm == gold_norm,
        closed_correct=closed_correct,
        open_correct=open_correct,
    )


def _check_texts(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise BenchError(f"VQA: {len(predictions)} predictions but {len(references)} references; expected one each")
    for kind, values in (("prediction", predictions), ("reference", references)):
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise BenchError(f"VQA: {kind} {i} is {type(v).__name__} ({v!r}); expected the answer text as a string")


def score_answers(predictions: Sequence[str], references: Sequence[str]) -> list[VQAScore]:
    """Per-sample scores, in order."""
    _check_texts(predictions, references)
    return [score_answer(p, r) for p, r in zip(predictions, references, strict=True)]


# --------------------------------------------------------------------------- corpus metrics

# metric name → (numerator statistic, denominator statistic); value = Σ numerator / Σ denominator.
METRICS: dict[str, tuple[str, str]] = {
    "vqa_bleu1": ("bleu1", "count"),
    "vqa_closed_acc": ("closed_correct", "closed"),
    "vqa_open_recall": ("open_recall", "open"),
    "vqa_recall": ("recall", "count"),
    "vqa_open_acc": ("open_correct", "open"),
    "vqa_f1": ("f1", "count"),
    "vqa_exact_match": ("exact", "count"),
}


def statistics_of(scores: Sequence[VQAScore]) -> dict[str, np.ndarray]:
    """Per-sample sufficient statistics [N] (every metric is a ratio of two of their sums)."""
    closed = np.array([s.closed for s in scores], dtype=float)
    recall = np.array([s.recall for s in scores], dtype=float)
    return {
        "count": np.ones(len(scores)),
        "bleu1": np.array([s.bleu1 for s in scores], dtype=float),
        "recall": recall,
        "f1": np.array([s.f1 for s in scores], dtype=float),
        "exact": np.array([s.exact for s in scores], dtype=float),
        "closed": closed,
        "closed_correct": np.array([bool(s.closed_correct) for s in scores], dtype=float),
        "open": 1.0 - closed,
        "open_recall": recall * (1.0 - closed),
        "open_correct": np.array([bool(s.open_correct) for s in scores], dtype=float),
    }


def sufficient_statistics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-sample statistics from raw texts; see :data:`METRICS` for how each metric combines them."""
    return statistics_of(score_answers(predictions, references))


def aggregate(name: str, stats: Mapping[str, np.ndarray], index: np.ndarray | None = None) -> float:
    """Metric ``name`` from per-sample statistics (optionally on resampled indices). NaN when the
    subset it averages over is empty (e.g. Closed Q Acc without closed questions)."""
    if name not in METRICS:
        raise BenchError(f"unknown VQA metric {name!r}; known: {', '.join(METRICS)}")
    num_key, den_key = METRICS[name]
    num, den = stats[num_key], stats[den_key]
    if index is not None:
        num, den = num[index], den[index]
    total = float(den.sum())
    return float(num.sum()) / total if total > 0 else float("nan")


def vqa_report(
    predictions: Sequence[str], references: Sequence[str], resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """All VQA metrics with percentile-bootstrap intervals over samples, and subset sizes."""
    from bench.metrics.stats import bootstrap_ci

    scores = score_answers(predictions, references)
    stats = statistics_of(scores)
    n = len(scores)
    n_closed = int(stats["closed"].sum())
    out: dict[str, dict[str, Any]] = {}
    for name, (_, den_key) in METRICS.items():
        value = aggregate(name, stats) if n else float("nan")
        low, high = bootstrap_ci(lambda idx, name=name: aggregate(name, stats, idx), n, resamples, seed)
        subset = {"closed": n_closed, "open": n - n_closed}.get(den_key, n)
        out[name] = {
            "value": value if math.isfinite(value) else None,
            "ci95": [low, high],
            "n": subset,
            "definition": "MultiMedEval" if name != "vqa_exact_match" else "normalised exact match",
        }
    return out


# --------------------------------------------------------------------------- registered callables
# ``fn(predictions, references) -> float`` for ``bench score --metrics``: predictions and references
# are the answer texts of the JSONL records.


def _metric(name: str, predictions: Sequence[str], references: Sequence[str]) -> float:
    return aggregate(name, sufficient_statistics(predictions, references))


def bleu1_mean(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean sentence BLEU-1 (with brevity penalty) on normalised answers."""
    return _metric("vqa_bleu1", predictions, references)


def closed_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of closed (gold yes/no) questions answered correctly (recall ≥ 0.4, "not" counts for "no")."""
    return _metric("vqa_closed_acc", predictions, references)


def open_recall(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean token recall over open questions."""
    return _metric("vqa_open_recall", predictions, references)


def recall(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean token recall over all questions."""
    return _metric("vqa_recall", predictions, references)


def open_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of open questions with token recall ≥ 0.75."""
    return _metric("vqa_open_acc", predictions, references)


def f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean token-set F1 over all questions."""
    return _metric("vqa_f1", predictions, references)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of answers equal to the gold answer after normalisation."""
    return _metric("vqa_exact_match", predictions, references)
