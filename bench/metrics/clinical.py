"""Clinical report-generation metrics: CheXbert F1, rule-labeler F1, RadGraph F1, RadCliQ-v1.

Definitions (``METRICS.md``, "Report generation"):

* **CheXbert F1** (LLaVA-Rad): CheXbert (Smit et al. 2020) labels candidate and reference with
  one of blank / positive / negative / uncertain for each of 14 observations. Binarise
  positive -> 1, everything else -> 0 ("uncertain as negative", ``uncneg``) or positive and
  uncertain -> 1 ("uncertain as positive", ``uncpos``); scikit-learn micro and macro F1 over all
  14 observations and over the 5 (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural
  Effusion), ``zero_division=0``. Weights: a local ``chexbert.pth`` (``chexbert_path=`` or
  ``BENCH_CHEXBERT_PATH``); see :mod:`bench.metrics.chexbert`.
* **CheXpert-rules F1**: the same table with the offline rule-based labeler of
  :mod:`bench.metrics.chexpert_rules` (no weights). Named ``chexpert_rules_f1_*`` so it is never
  mistaken for CheXbert.
* **RadGraph F1** (``radgraph`` package, simple / partial / complete): see
  :mod:`bench.metrics.radgraph`. Weights: a local model (``radgraph_path=`` or
  ``BENCH_RADGRAPH_PATH``).
* **RadCliQ-v1** (Yu et al. 2023, CXR-Report-Metric): a linear model on the standardised
  per-report [RadGraph combined, BERTScore, CheXbert embedding cosine, BLEU-2]; lower is better.
  Computed only when all four inputs can be computed (CheXbert, RadGraph and a local
  distilroberta-base for BERTScore, ``bertscore_path=`` or ``BENCH_BERTSCORE_PATH``).

A metric whose weights are not configured raises :class:`~bench.metrics.unavailable.MetricUnavailable`
with the reason: it is never reported as 0 and nothing is ever downloaded. A path that is given but
wrong (file absent, not a CheXbert checkpoint) is a :class:`~bench.interfaces.BenchError`.

RadCliQ-v1 details (CXR-Report-Metric): the RadGraph input is (entity F1 + relation F1) / 2 per
report; BERTScore is bert-score's F1 with distilroberta-base, layer 5, IDF over the references,
rescaled with its baseline; the CheXbert input is the cosine of the two reports' [CLS] states; BLEU-2
is per-report sentence BLEU (``fast_bleu`` = NLTK smoothing method1) on lower-cased tokens with "."
split off. Scaler means / scales, coefficients and intercept are those of ``radcliq-v1.pkl``, in the
column order radgraph, bertscore, semb_score, bleu_score.

Every registered metric is a callable ``metric(predictions, references, **options)`` and also
additive for the bootstrap (``stats`` per report, ``aggregate`` of summed stats, see
:mod:`bench.metrics.stats`): the F1 cells sum per-report TP / FP / FN per observation, RadGraph F1 and
RadCliQ-v1 are means of per-report scores. Models are loaded once and labels cached per text.

Label matrices use CheXbert's class indices: 0 blank, 1 positive, 2 negative, 3 uncertain.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- observations

OBSERVATIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
NO_FINDING = "No Finding"
FIVE: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

# CheXbert's class indices (its CLASS_MAPPING); "No Finding" has only blank and positive.
BLANK, POSITIVE, NEGATIVE, UNCERTAIN = 0, 1, 2, 3
STATE_NAMES = {BLANK: "blank", POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}
# harness label convention (bench.interfaces): 1 positive, 0 negative, -1 uncertain, None not mentioned
_TO_HARNESS = {BLANK: None, POSITIVE: 1, NEGATIVE: 0, UNCERTAIN: -1}

UNCERTAIN_POLICIES = {"uncneg": "negative", "uncpos": "positive"}
AVERAGES = ("micro", "macro")
SUBSETS: dict[str, tuple[str, ...]] = {"14": OBSERVATIONS, "5": FIVE}


def to_harness_labels(row: Sequence[int]) -> dict[str, int | None]:
    """One row of class codes -> {observation: 1 | 0 | -1 | None} (the harness convention)."""
    return {obs: _TO_HARNESS[int(code)] for obs, code in zip(OBSERVATIONS, row, strict=True)}


# ----------------------------------------------------------------------------- F1 table


def binarize(labels: np.ndarray, uncertain: str = "negative") -> np.ndarray:
    """[N, 14] class codes -> [N, 14] 0/1: positive -> 1; uncertain -> 1 only if ``uncertain="positive"``."""
    labels = np.asarray(labels)
    if uncertain not in ("negative", "positive"):
        raise ValueError(f"uncertain must be 'negative' or 'positive', got {uncertain!r}")
    positive = labels == POSITIVE
    if uncertain == "positive":
        positive |= labels == UNCERTAIN
    return positive.astype(np.int64)


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(OBSERVATIONS):
        raise ValueError(f"{name} labels must have shape [N, {len(OBSERVATIONS)}], got {labels.shape}")
    bad = ~np.isin(labels, (BLANK, POSITIVE, NEGATIVE, UNCERTAIN))
    if bad.any():
        raise ValueError(f"{name} labels hold codes other than 0 blank, 1 positive, 2 negative, 3 uncertain")
    return labels


def label_f1(
    candidate: np.ndarray,
    reference: np.ndarray,
    average: str = "micro",
    subset: str = "14",
    uncertain: str = "negative",
) -> float:
    """One cell of the LLaVA-Rad CheXbert F1 table from [N, 14] class-code matrices.

    ``f1_score(binarize(reference), binarize(candidate), average=average, zero_division=0)``
    (scikit-learn, multilabel indicator matrices) over the columns of ``subset`` ("14" or "5").
    """
    from sklearn.metrics import f1_score

    cand = _check_labels(candidate, "candidate")
    ref = _check_labels(reference, "reference")
    if cand.shape != ref.shape:
        raise ValueError(f"candidate labels {cand.shape} and reference labels {ref.shape} differ in shape")
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {tuple(SUBSETS)}, got {subset!r}")
    if cand.shape[0] == 0:
        return float("nan")
    cols = [OBSERVATIONS.index(o) for o in SUBSETS[subset]]
    y_true = binarize(ref, uncertain)[:, cols]
    y_pred = binarize(cand, uncertain)[:, cols]
    return float(f1_score(y_true, y_pred, average=average, zero_division=0))


def f1_table(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The full table: ``{"f1_{micro|macro}_{14|5}_{uncneg|uncpos}": value}`` (8 cells)."""
    return {
        f"f1_{average}_{subset}_{policy}": label_f1(candidate, reference, average, subset, uncertain)
        for policy, uncertain in UNCERTAIN_POLICIES.items()
        for average in AVERAGES
        for subset in SUBSETS
    }


def per_observation_f1(candidate: np.ndarray, reference: np.ndarray, uncertain: str = "negative") -> dict[str, float]:
    """F1 of each observation (for reports; zero_division=0)."""
    from sklearn.metrics import f1_score

    cand = binarize(_check_labels(candidate, "candidate"), uncertain)
    ref = binarize(_check_labels(reference, "reference"), uncertain)
    values = f1_score(ref, cand, average=None, zero_division=0)
    return {obs: float(v) for obs, v in zip(OBSERVATIONS, values, strict=True)}


# ----------------------------------------------------------------------------- options


def _texts(values: Sequence[Any], name: str) -> list[str]:
    out = []
    for v in values:
        if v is None:
            out.append("")
        elif isinstance(v, str):
            out.append(v)
        else:
            raise TypeError(f"{name} must be report strings, got {type(v).__name__}")
    return out


def _pair(predictions: Sequence[Any], references: Sequence[Any]) -> tuple[list[str], list[str]]:
    preds, refs = _texts(predictions, "predictions"), _texts(references, "references")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    return preds, refs


def option_path(options: Mapping[str, Any], key: str, env: str) -> str | None:
    """A local path from the metric options or else from an environment variable ("" = unset)."""
    value = options.get(key)
    if value is None or value == "":
        value = os.environ.get(env) or None
    return None if value is None else os.path.expanduser(str(value))


# ----------------------------------------------------------------------------- CheXbert F1


def label_counts(
    candidate: np.ndarray, reference: np.ndarray, subset: str = "14", uncertain: str = "negative"
) -> np.ndarray:
    """Per-report [TP | FP | FN] of each observation of ``subset``: an [N, 3 * C] 0/1 matrix whose column
    sums give the F1 table (see :func:`f1_from_counts`)."""
    cand = _check_labels(candidate, "candidate")
    ref = _check_labels(reference, "reference")
    cols = [OBSERVATIONS.index(o) for o in SUBSETS[subset]]
    y_true = binarize(ref, uncertain)[:, cols].astype(bool)
    y_pred = binarize(cand, uncertain)[:, cols].astype(bool)
    return np.concatenate([y_true & y_pred, ~y_true & y_pred, y_true & ~y_pred], axis=1).astype(np.float64)


def f1_from_counts(totals: np.ndarray, average: str) -> np.ndarray:
    """Micro or macro F1 from summed [TP | FP | FN] counts (``[..., 3 * C]``); F1 = 2TP / (2TP + FP + FN),
    0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    totals = np.asarray(totals, dtype=np.float64)
    tp, fp, fn = np.split(totals, 3, axis=-1)
    if average == "micro":
        tp, fp, fn = tp.sum(axis=-1), fp.sum(axis=-1), fn.sum(axis=-1)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0)
    return f1 if average == "micro" else f1.mean(axis=-1)


def _labels(
    labeler: str, preds: list[str], refs: list[str], options: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    if labeler == "chexbert":
        from bench.metrics import chexbert

        model = chexbert.labeler_from_options(options)
        return model.label(preds), model.label(refs)
    from bench.metrics import chexpert_rules

    return chexpert_rules.label_reports(preds), chexpert_rules.label_reports(refs)


class LabelF1:
    """One cell of the F1 table for one labeler ("chexbert" or "chexpert_rules").

    Callable as ``metric(predictions, references, **options)`` (scikit-learn's value) and additive for
    the bootstrap: ``stats`` gives per-report TP/FP/FN counts per observation (labels computed once,
    shared by the micro and macro cells of the same subset and policy through ``stats_key``),
    ``aggregate`` the F1 of summed counts.
    """

    def __init__(self, labeler: str, average: str, subset: str, policy: str) -> None:
        self.labeler, self.average, self.subset, self.policy = labeler, average, subset, policy
        self.uncertain = UNCERTAIN_POLICIES[policy]
        self.name = f"{labeler}_f1_{average}_{subset}_{policy}"
        self.stats_key = f"{labeler}_f1_counts_{subset}_{policy}"

    def __call__(self, predictions: Sequence[Any], references: Sequence[Any], **options: Any) -> float:
        preds, refs = _pair(predictions, references)
        cand, ref = _labels(self.labeler, preds, refs, options)
        return label_f1(cand, ref, self.average, self.subset, self.uncertain)

    def stats(self, predictions: Sequence[Any], references: Sequence[Any], **options: Any) -> np.ndarray:
        preds, refs = _pair(predictions, references)
        cand, ref = _labels(self.labeler, preds, refs, options)
        return label_counts(cand, ref, self.subset, self.uncertain)

    def aggregate(self, totals: np.ndarray, n: int) -> np.ndarray:
        return f1_from_counts(totals, self.average)

    def __repr__(self) -> str:
        return f"LabelF1({self.name})"


class MeanScore:
    """A mean of per-report scores, additive for the bootstrap (``stats``: [N, 1] scores)."""

    def __init__(self, name: str, scores: Any) -> None:
        self.name = self.stats_key = name
        self._scores = scores  # (preds, refs, options) -> per-report scores

    def __call__(self, predictions: Sequence[Any], references: Sequence[Any], **options: Any) -> float:
        scores = self.stats(predictions, references, **options)
        return float(scores.mean()) if scores.size else float("nan")

    def stats(self, predictions: Sequence[Any], references: Sequence[Any], **options: Any) -> np.ndarray:
        preds, refs = _pair(predictions, references)
        if not preds:
            return np.zeros((0, 1))
        return np.asarray(self._scores(preds, refs, options), dtype=np.float64).reshape(-1, 1)

    def aggregate(self, totals: np.ndarray, n: int) -> np.ndarray:
        return np.asarray(totals, dtype=np.float64)[..., 0] / n

    def __repr__(self) -> str:
        return f"MeanScore({self.name})"


# The registered metrics, one per table cell: {labeler}_f1_{average}_{14|5}_{uncneg|uncpos}.
chexbert_f1_micro_14_uncneg = LabelF1("chexbert", "micro", "14", "uncneg")
chexbert_f1_macro_14_uncneg = LabelF1("chexbert", "macro", "14", "uncneg")
chexbert_f1_micro_5_uncneg = LabelF1("chexbert", "micro", "5", "uncneg")
chexbert_f1_macro_5_uncneg = LabelF1("chexbert", "macro", "5", "uncneg")
chexbert_f1_micro_14_uncpos = LabelF1("chexbert", "micro", "14", "uncpos")
chexbert_f1_macro_14_uncpos = LabelF1("chexbert", "macro", "14", "uncpos")
chexbert_f1_micro_5_uncpos = LabelF1("chexbert", "micro", "5", "uncpos")
chexbert_f1_macro_5_uncpos = LabelF1("chexbert", "macro", "5", "uncpos")

chexpert_rules_f1_micro_14_uncneg = LabelF1("chexpert_rules", "micro", "14", "uncneg")
chexpert_rules_f1_macro_14_uncneg = LabelF1("chexpert_rules", "macro", "14", "uncneg")
chexpert_rules_f1_micro_5_uncneg = LabelF1("chexpert_rules", "micro", "5", "uncneg")
chexpert_rules_f1_macro_5_uncneg = LabelF1("chexpert_rules", "macro", "5", "uncneg")
chexpert_rules_f1_micro_14_uncpos = LabelF1("chexpert_rules", "micro", "14", "uncpos")
chexpert_rules_f1_macro_14_uncpos = LabelF1("chexpert_rules", "macro", "14", "uncpos")
chexpert_rules_f1_micro_5_uncpos = LabelF1("chexpert_rules", "micro", "5", "uncpos")
chexpert_rules_f1_macro_5_uncpos = LabelF1("chexpert_rules", "macro", "5", "uncpos")

F1_METRICS: tuple[tuple[str, str, str], ...] = tuple(
    (average, subset, policy) for policy in UNCERTAIN_POLICIES for average in AVERAGES for subset in SUBSETS
)


def chexbert_embedding_cosine(predictions: Sequence[Any], references: Sequence[Any], **options: Any) -> float:
    """Mean cosine similarity of the CheXbert [CLS] embeddings of candidate and reference (RadCliQ's s_emb)."""
    return float(np.mean(_semb_scores(*_pair(predictions, references), options)))


def _semb_scores(preds: list[str], refs: list[str], options: Mapping[str, Any]) -> np.ndarray:
    from bench.metrics import chexbert

    labeler = chexbert.labeler_from_options(options)
    return cosine_rows(labeler.embed(preds), labeler.embed(refs))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (CXR-Report-Metric's s_emb: (a·b) / (|a| |b|))."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("nd,nd->n", a, b) / np.where(norms > 0, norms, 1.0)


# ----------------------------------------------------------------------------- RadGraph F1


def _radgraph_scores(level: str) -> Any:
    def scores(preds: list[str], refs: list[str], options: Mapping[str, Any]) -> list[float]:
        from bench.metrics import radgraph

        return radgraph.rewards_from_options(preds, refs, level, options)

    return scores


radgraph_f1_simple = MeanScore("radgraph_f1_simple", _radgraph_scores("simple"))
radgraph_f1_partial = MeanScore("radgraph_f1_partial", _radgraph_scores("partial"))
radgraph_f1_complete = MeanScore("radgraph_f1_complete", _radgraph_scores("complete"))


# ----------------------------------------------------------------------------- BLEU-2 (RadCliQ input)


def radcliq_tokens(text: str) -> list[str]:
    """CXR-Report-Metric's ``prep_reports``: lower case, "." -> " .", split on single spaces, drop empties."""
    return [t for t in str(text).lower().replace(".", " .").split(" ") if t != ""]


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(
    references: Sequence[Sequence[str]], hypothesis: Sequence[str], max_n: int = 2, epsilon: float = 0.1
) -> float:
    """Sentence BLEU with uniform weights and NLTK's smoothing ``method1`` (what ``fast_bleu.BLEU``
    computes by default): clipped n-gram precisions, a zero numerator replaced by ``epsilon``,
    brevity penalty against the closest reference length; 0 when no unigram matches."""
    hyp_len = len(hypothesis)
    numerators, denominators = [], []
    for n in range(1, max_n + 1):
        counts = _ngrams(hypothesis, n)
        max_ref: Counter[tuple[str, ...]] = Counter()
        for ref in references:
            for gram, c in _ngrams(ref, n).items():
                max_ref[gram] = max(max_ref[gram], c)
        numerators.append(sum(min(c, max_ref[g]) for g, c in counts.items()))
        denominators.append(max(1, sum(counts.values())))
    if numerators[0] == 0:
        return 0.0
    ref_lens = [len(r) for r in references]
    closest = min(ref_lens, key=lambda r: (abs(r - hyp_len), r))
    bp = 1.0 if hyp_len > closest else (math.exp(1 - closest / hyp_len) if hyp_len > 0 else 0.0)
    logs = [math.log((num if num > 0 else epsilon) / den) for num, den in zip(numerators, denominators, strict=True)]
    return bp * math.exp(sum(logs) / max_n)


def radcliq_bleu2(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-report BLEU-2 as CXR-Report-Metric computes it (``radcliq_tokens`` + ``sentence_bleu``)."""
    return np.array(
        [sentence_bleu([radcliq_tokens(r)], radcliq_tokens(p), 2) for p, r in zip(predictions, references, strict=True)]
    )


# ----------------------------------------------------------------------------- RadCliQ-v1

# CXR-Report-Metric's radcliq-v1.pkl: a StandardScaler and a linear model over these columns,
# in this order, with the intercept last (checked against the reference's COLS order).
RADCLIQ_V1_COLUMNS = ("radgraph_combined", "bertscore", "semb_score", "bleu_score")
RADCLIQ_V1_MEAN = np.array([0.53792312, 0.61757256, 0.76479421, 0.44738335])
RADCLIQ_V1_SCALE = np.array([0.30282584, 0.22430938, 0.25394391, 0.29892717])
RADCLIQ_V1_COEF = np.array([-3.77083683e-01, -3.70300100e-01, -2.52616218e-01, 4.31504841e-12])
RADCLIQ_V1_INTERCEPT = 2.46655256e-10


def radcliq_v1_from_inputs(
    radgraph_combined: Sequence[float],
    bertscore: Sequence[float],
    semb_score: Sequence[float],
    bleu_score: Sequence[float],
) -> np.ndarray:
    """Per-report RadCliQ-v1 from its four per-report inputs: ``((x - mean) / scale) @ coef + intercept``."""
    x = np.column_stack(
        [np.asarray(v, dtype=np.float64) for v in (radgraph_combined, bertscore, semb_score, bleu_score)]
    )
    return ((x - RADCLIQ_V1_MEAN) / RADCLIQ_V1_SCALE) @ RADCLIQ_V1_COEF + RADCLIQ_V1_INTERCEPT


BERTSCORE_ENV = "BENCH_BERTSCORE_PATH"
RADCLIQ_BERTSCORE_LAYERS = 5  # bert-score's default layer for distilroberta-base


def radcliq_bertscore(predictions: Sequence[str], references: Sequence[str], options: Mapping[str, Any]) -> np.ndarray:
    """Per-report BERTScore F1 as RadCliQ-v1 uses it: the ``bert-score`` package with a local
    distilroberta-base (``bertscore_path=`` / ``BENCH_BERTSCORE_PATH``), layer 5, IDF weights from the
    references, rescaled with bert-score's published distilroberta-base baseline."""
    import importlib.util

    from bench.metrics.unavailable import MetricUnavailable

    model_dir = option_path(options, "bertscore_path", BERTSCORE_ENV)
    if model_dir is None:
        raise MetricUnavailable(
            f"BERTScore model not configured: give bertscore_path= or set {BERTSCORE_ENV} to a local "
            "distilroberta-base folder (nothing is downloaded)"
        )
    if importlib.util.find_spec("bert_score") is None:
        raise MetricUnavailable("BERTScore needs the bert-score package (pip install bert-score)")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        from bench.interfaces import BenchError

        raise BenchError(f"BERTScore model folder {model_dir} has no config.json (bertscore_path / {BERTSCORE_ENV})")
    import bert_score

    baseline = os.path.join(os.path.dirname(bert_score.__file__), "rescale_baseline", "en", "distilroberta-base.tsv")
    cands = [re.sub(r" +", " ", t) for t in predictions]
    refs = [re.sub(r" +", " ", t) for t in references]
    _, _, f1 = bert_score.score(
        cands,
        refs,
        model_type=model_dir,
        num_layers=RADCLIQ_BERTSCORE_LAYERS,
        idf=True,
        lang="en",
        rescale_with_baseline=True,
        baseline_path=baseline,
        device=str(options.get("device") or "cpu"),
        verbose=False,
    )
    return np.asarray(f1.detach().cpu().numpy(), dtype=np.float64)


def radcliq_v1_inputs(predictions: Sequence[Any], references: Sequence[Any], **options: Any) -> dict[str, np.ndarray]:
    """The four per-report inputs of RadCliQ-v1 (``RADCLIQ_V1_COLUMNS``).

    Raises MetricUnavailable naming every input that cannot be computed here (missing weights or
    packages); BLEU-2 needs nothing.
    """
    from bench.metrics import radgraph
    from bench.metrics.unavailable import MetricUnavailable

    preds, refs = _pair(predictions, references)
    computed: dict[str, np.ndarray] = {"bleu_score": radcliq_bleu2(preds, refs)}
    reasons = []
    steps = {
        "radgraph_combined": lambda: np.asarray(radgraph.combined_from_options(preds, refs, options)),
        "bertscore": lambda: radcliq_bertscore(preds, refs, options),
        "semb_score": lambda: _semb_scores(preds, refs, options),
    }
    for name, step in steps.items():
        try:
            computed[name] = step()
        except MetricUnavailable as exc:
            reasons.append(f"{name}: {exc.reason}")
    if reasons:
        raise MetricUnavailable("RadCliQ-v1 needs all four inputs; " + "; ".join(reasons))
    return computed


def radcliq_v1_scores(predictions: Sequence[Any], references: Sequence[Any], **options: Any) -> np.ndarray:
    """Per-report RadCliQ-v1 (lower is better)."""
    inputs = radcliq_v1_inputs(predictions, references, **options)
    return radcliq_v1_from_inputs(*(inputs[c] for c in RADCLIQ_V1_COLUMNS))


# mean over reports; lower is better (ReXrank ranks by 1 / RadCliQ-v1)
radcliq_v1 = MeanScore("radcliq_v1", lambda preds, refs, options: radcliq_v1_scores(preds, refs, **options))
