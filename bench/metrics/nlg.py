"""Report-generation text metrics (NLG): BLEU-1…4, ROUGE-L, CIDEr-D, METEOR, sacrebleu BLEU, rouge-score
ROUGE-L, BERTScore.

Definitions (METRICS.md "Report generation"):

* ``bleu1`` … ``bleu4``, ``rougeL``, ``cider`` follow pycocoevalcap exactly, re-implemented here with numpy
  (integer-coded n-grams, sorted-key joins, bit-parallel LCS) instead of per-sentence dictionaries. Texts
  are first put in pycocoevalcap's tokenised form by :mod:`bench.metrics.text_tokenize` (PTB tokens,
  lower-cased, punctuation removed; no Java needed).

  - BLEU-n: *corpus* BLEU: clipped n-gram matches and candidate n-gram counts summed over the corpus,
    geometric mean of the n modified precisions (each smoothed as (matches + 1e-15)/(count + 1e-9)),
    brevity penalty exp(1 − r/c) when c < r, where r sums per sample the reference length closest to the
    candidate length (ties → the shorter one). Tokens = ``str.split()``.
  - ROUGE-L: per sample, LCS-based precision and recall against each reference, the maximum of each over
    references, F_β with β = 1.2; the corpus value is the mean over samples. Tokens = ``str.split(" ")``.
  - CIDEr: CIDEr-D: TF-IDF vectors of 1…4-grams with IDF log(N / max(1, df)) where df counts the samples
    whose references contain the n-gram (N = number of samples), cosine with clipping
    min(w_cand, w_ref)·w_ref, Gaussian length penalty exp(−Δ²/2σ²) with σ = 6 on the bigram counts,
    averaged over n and references, ×10; the corpus value is the mean over samples.
* ``meteor``: METEOR 1.5 from the jar shipped with pycocoevalcap (``-l en -norm``), run once per call in
  one Java process on the tokenised texts; its per-sample sufficient statistics are summed and scored
  with METEOR's own formula (α 0.85, β 0.2, γ 0.6, δ 0.75, module weights 1/0.6/0.8/0.6), which equals the
  jar's corpus ``EVAL`` score. Without Java it is reported as unavailable, never 0.
* ``sacrebleu`` / ``sacrebleu1``: sacrebleu's default corpus BLEU (13a tokeniser, case-sensitive, ``exp``
  smoothing), 4-gram and 1-gram, on sacrebleu's 0–100 scale (LLaVA-Rad's BLEU-4 / BLEU-1). sacrebleu's
  tokeniser and scoring formula are used; the n-gram statistics are counted here.
* ``rougeL_rouge_score``: rouge-score's ROUGE-L F-measure (its default tokenisation — lower case, runs of
  [a-z0-9] — re-implemented and checked against it; no stemming), mean over samples (LLaVA-Rad's ROUGE-L).
  The LCS is computed here.
* ``bertscore_f1``: bert-score's F1 (no IDF, no baseline rescaling) with a model read from a local
  directory named by ``BENCH_BERTSCORE_MODEL`` (never downloaded); mean over samples.

Every metric object below follows the additive-statistics protocol of :mod:`bench.metrics.stats`:
``stats(predictions, references)`` → ``[n, k]`` per-sample sufficient statistics, ``aggregate(totals, n)`` →
the metric from their column sums, so bootstrap intervals resample the statistics instead of re-scoring
text. What a resample holds fixed:

* BLEU, sacrebleu and METEOR: nothing — per sample they keep the candidate length, the chosen reference
  length, n-gram counts and clipped matches (METEOR: its 23 alignment statistics), which add up over a
  resample exactly as over a real corpus of those reports;
* ROUGE-L, rouge-score ROUGE-L, BERTScore: nothing — they are means of per-sample scores;
* CIDEr-D: the document frequencies and N of the *full* reference corpus (the IDF is not re-fitted on each
  resample), so a resample is the mean of the per-sample CIDEr-D scores computed once.

A reference may be a string or a list of strings (several references per sample).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from bench.interfaces import BenchError
from bench.metrics.text_tokenize import ptb_tokenize
from bench.metrics.unavailable import MetricUnavailable

MAX_N = 4
BLEU_SMALL = 1e-9  # pycocoevalcap's smoothing of modified precisions and of the length ratio
BLEU_TINY = 1e-15
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0

# --------------------------------------------------------------------------- inputs


def check_inputs(predictions: Sequence[Any], references: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """Validate text inputs: one string prediction and one or more string references per sample."""
    if len(predictions) != len(references):
        raise BenchError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise BenchError("no samples to score")
    preds: list[str] = []
    refs: list[list[str]] = []
    for i, (p, r) in enumerate(zip(predictions, references)):
        if not isinstance(p, str):
            raise BenchError(f"sample {i}: the prediction must be a string for text metrics, got {type(p).__name__}")
        rr = [r] if isinstance(r, str) else r
        if not isinstance(rr, (list, tuple)) or not rr or not all(isinstance(x, str) for x in rr):
            raise BenchError(
                f"sample {i}: the reference must be a string or a non-empty list of strings for text metrics, "
                f"got {type(r).__name__}"
            )
        preds.append(p)
        refs.append(list(rr))
    return preds, refs


@lru_cache(maxsize=8)
def _ptb_all(texts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(ptb_tokenize(t) for t in texts)


def coco_tokenize(predictions: Sequence[Any], references: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    """pycocoevalcap's tokenised form of predictions and references (PTB, lower case, no punctuation)."""
    preds, refs = check_inputs(predictions, references)
    flat = _ptb_all(tuple(preds) + tuple(chain.from_iterable(refs)))
    tok_preds = list(flat[: len(preds)])
    out_refs: list[list[str]] = []
    pos = len(preds)
    for rr in refs:
        out_refs.append(list(flat[pos : pos + len(rr)]))
        pos += len(rr)
    return tok_preds, out_refs


# --------------------------------------------------------------------------- n-gram counting


@dataclass
class NgramTable:
    """Distinct n-grams (orders 1…max_n) of every document, with their counts.

    Documents are the n candidates (0…n−1) followed by all references (n…); ``owner[d]`` is the sample of
    document d. Entries are sorted by (document, n-gram id); n-gram ids are global over orders.
    """

    n: int
    max_n: int
    doc: np.ndarray  # [E] document of each entry
    gid: np.ndarray  # [E] n-gram id
    order: np.ndarray  # [E] n-gram order − 1 (0…max_n−1)
    count: np.ndarray  # [E] float count of the n-gram in the document
    owner: np.ndarray  # [D] sample of each document
    length: np.ndarray  # [D] number of tokens of each document
    n_grams: int  # number of distinct n-gram ids

    @property
    def one_reference_each(self) -> bool:
        """Reference document n + i belongs to sample i, for every sample (the common, faster case)."""
        refs = self.owner[self.n :]
        return len(refs) == self.n and bool(np.array_equal(refs, np.arange(self.n)))


def ngram_table(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], max_n: int = MAX_N
) -> NgramTable:
    """Count the n-grams of tokenised candidates and references with integer-coded, vectorised joins."""
    n = len(candidates)
    docs: list[Sequence[str]] = [*candidates, *chain.from_iterable(references)]
    owner = np.concatenate([np.arange(n), np.repeat(np.arange(n), [len(r) for r in references])]).astype(np.int64)
    lens = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    total = int(lens.sum())
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in chain.from_iterable(docs)), dtype=np.int64, count=total)
    n_vocab = max(len(vocab), 1)
    doc_of = np.repeat(np.arange(len(docs), dtype=np.int64), lens)
    ends = np.cumsum(lens)
    remaining = np.repeat(ends, lens) - np.arange(total, dtype=np.int64)  # tokens left from each position

    docs_parts, gid_parts, order_parts = [], [], []
    offset = 0
    prev = ids  # compact ids of the (k−1)-gram starting at each position (valid where remaining ≥ k−1)
    for k in range(1, max_n + 1):
        pos = np.flatnonzero(remaining >= k)
        if k == 1:
            compact, n_compact = ids, n_vocab
        else:
            keys = prev[pos] * n_vocab + ids[pos + k - 1]
            uniq, inverse = np.unique(keys, return_inverse=True)
            compact = np.empty(total, dtype=np.int64)
            compact[pos] = inverse
            n_compact = len(uniq)
        docs_parts.append(doc_of[pos])
        gid_parts.append(compact[pos] + offset)
        order_parts.append(np.full(len(pos), k - 1, dtype=np.int8))
        offset += n_compact
        prev = compact
    n_grams = max(offset, 1)
    orders = np.concatenate(order_parts) if order_parts else np.zeros(0, dtype=np.int8)
    order_of_gid = np.zeros(n_grams, dtype=np.int8)
    all_gid = np.concatenate(gid_parts) if gid_parts else np.zeros(0, dtype=np.int64)
    order_of_gid[all_gid] = orders
    keys = np.concatenate(docs_parts) * n_grams + all_gid if docs_parts else np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(keys, return_counts=True)
    gid = uniq % n_grams
    return NgramTable(
        n=n,
        max_n=max_n,
        doc=uniq // n_grams,
        gid=gid,
        order=order_of_gid[gid],
        count=counts.astype(np.float64),
        owner=owner,
        length=lens,
        n_grams=n_grams,
    )


def _split(table: NgramTable) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of candidate entries and reference entries."""
    cand = table.doc < table.n
    return cand, ~cand


def _closest_ref_length(table: NgramTable) -> np.ndarray:
    """Per sample, the reference length closest to the candidate length (ties → shorter)."""
    n = table.n
    cand_len = table.length[:n]
    ref_owner = table.owner[n:]
    ref_len = table.length[n:]
    if table.one_reference_each:
        return ref_len.astype(np.float64)
    diff = np.abs(ref_len - cand_len[ref_owner])
    order = np.lexsort((ref_len, diff, ref_owner))
    first = np.ones(len(order), dtype=bool)
    first[1:] = ref_owner[order][1:] != ref_owner[order][:-1]
    out = np.zeros(n, dtype=np.float64)
    out[ref_owner[order][first]] = ref_len[order][first]
    return out


def bleu_stats_from_table(table: NgramTable) -> np.ndarray:
    """Per-sample BLEU statistics ``[n, 2 + 2·max_n]``: candidate length, closest reference length,
    candidate n-gram counts (orders 1…max_n), clipped matches (orders 1…max_n)."""
    n, max_n, g = table.n, table.max_n, table.n_grams
    cand, ref = _split(table)
    c_key = table.doc[cand] * g + table.gid[cand]  # sorted; candidate doc = sample
    r_key = table.owner[table.doc[ref]] * g + table.gid[ref]
    r_count = table.count[ref]
    if not table.one_reference_each:  # max count over a sample's references
        r_key, inverse = np.unique(r_key, return_inverse=True)
        max_count = np.zeros(len(r_key))
        np.maximum.at(max_count, inverse, r_count)
        r_count = max_count
    idx = np.searchsorted(r_key, c_key)
    idx_ok = np.minimum(idx, max(len(r_key) - 1, 0))
    found = (idx < len(r_key)) & (r_key[idx_ok] == c_key) if len(r_key) else np.zeros(len(c_key), dtype=bool)
    matched = np.minimum(table.count[cand], np.where(found, r_count[idx_ok] if len(r_key) else 0.0, 0.0))
    correct = np.bincount(table.doc[cand] * max_n + table.order[cand], weights=matched, minlength=n * max_n)
    cand_len = table.length[:n].astype(np.float64)
    guess = np.maximum(cand_len[:, None] - np.arange(max_n)[None, :], 0.0)
    return np.column_stack([cand_len, _closest_ref_length(table), guess, correct.reshape(n, max_n)])


def coco_bleu_from_totals(totals: np.ndarray, order: int, max_n: int = MAX_N) -> np.ndarray:
    """pycocoevalcap's corpus BLEU-``order`` from summed BLEU statistics (any leading shape)."""
    t = np.asarray(totals, dtype=np.float64)
    test_len, ref_len = t[..., 0], t[..., 1]
    guess, correct = t[..., 2 : 2 + max_n], t[..., 2 + max_n : 2 + 2 * max_n]
    precision = (correct[..., :order] + BLEU_TINY) / (guess[..., :order] + BLEU_SMALL)
    bleu = np.prod(precision, axis=-1) ** (1.0 / order)
    ratio = (test_len + BLEU_TINY) / (ref_len + BLEU_SMALL)
    with np.errstate(over="ignore", divide="ignore"):
        penalty = np.where(ratio < 1.0, np.exp(1.0 - 1.0 / ratio), 1.0)
    return bleu * penalty


# --------------------------------------------------------------------------- CIDEr-D


def cider_scores_from_table(table: NgramTable, sigma: float = CIDER_SIGMA) -> np.ndarray:
    """Per-sample CIDEr-D (pycocoevalcap) with document frequencies from all the table's references."""
    n, max_n, g = table.n, table.max_n, table.n_grams
    if n == 0:
        return np.zeros(0)
    cand, ref = _split(table)
    r_sample = table.owner[table.doc[ref]]
    r_key = r_sample * g + table.gid[ref]
    # document frequency: number of samples whose references contain the n-gram
    df_keys = r_key if table.one_reference_each else np.unique(r_key)
    df = np.bincount(df_keys % g, minlength=g).astype(np.float64)
    log_n = np.log(float(n))
    weight = table.count * (log_n - np.log(np.maximum(1.0, df[table.gid])))
    n_docs = len(table.owner)
    norm = np.sqrt(np.bincount(table.doc * max_n + table.order, weights=weight**2, minlength=n_docs * max_n))
    norm = norm.reshape(n_docs, max_n)
    bigrams = np.maximum(table.length - 1, 0).astype(np.float64)  # pycocoevalcap's "length"

    c_key = table.doc[cand] * g + table.gid[cand]
    c_weight = weight[cand]
    idx = np.searchsorted(c_key, r_key)
    idx_ok = np.minimum(idx, max(len(c_key) - 1, 0))
    if len(c_key):
        found = (idx < len(c_key)) & (c_key[idx_ok] == r_key)
        w_cand = np.where(found, c_weight[idx_ok], 0.0)
    else:
        w_cand = np.zeros(len(r_key))
    w_ref = weight[ref]
    contrib = np.minimum(w_cand, w_ref) * w_ref
    ref_doc = table.doc[ref] - n
    n_refs = n_docs - n
    val = np.bincount(ref_doc * max_n + table.order[ref], weights=contrib, minlength=n_refs * max_n)
    val = val.reshape(n_refs, max_n)
    owner = table.owner[n:]
    denom = norm[owner] * norm[n:]
    val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
    delta = bigrams[owner] - bigrams[n:]
    val = val * np.exp(-(delta**2) / (2.0 * sigma**2))[:, None]
    per_sample = np.bincount(owner, weights=val.mean(axis=1), minlength=n)
    return per_sample / np.bincount(owner, minlength=n) * 10.0


# --------------------------------------------------------------------------- ROUGE-L


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (bit-parallel, Hyyrö 2004): O(len(b)) big-integer steps."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def coco_rouge_l_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = ROUGE_BETA
) -> np.ndarray:
    """Per-sample ROUGE-L of pycocoevalcap on tokenised strings (tokens = ``split(" ")``)."""
    out = np.zeros(len(candidates))
    b2 = beta**2
    for i, (cand, refs) in enumerate(zip(candidates, references)):
        c = cand.split(" ")
        prec_max = rec_max = 0.0
        for r in refs:
            rt = r.split(" ")
            lcs = lcs_length(c, rt)
            prec_max = max(prec_max, lcs / len(c))
            rec_max = max(rec_max, lcs / len(rt))
        if prec_max != 0 and rec_max != 0:
            out[i] = ((1 + b2) * prec_max * rec_max) / float(rec_max + b2 * prec_max)
    return out


def rouge_score_l_scores(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]
) -> np.ndarray:
    """Per-sample ROUGE-L F-measure as rouge-score defines it (max F over references) on token lists."""
    out = np.zeros(len(candidates))
    for i, (c, refs) in enumerate(zip(candidates, references)):
        best = 0.0
        for r in refs:
            if not c or not r:
                continue
            lcs = lcs_length(r, c)
            p, rc = lcs / len(c), lcs / len(r)
            f = 2 * p * rc / (p + rc) if p + rc > 0 else 0.0
            best = max(best, f)
        out[i] = best
    return out


# --------------------------------------------------------------------------- pycocoevalcap family


def coco_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1…4, ROUGE-L and CIDEr of pycocoevalcap on already tokenised strings (no caching)."""
    table = ngram_table([c.split() for c in candidates], [[r.split() for r in rr] for rr in references])
    totals = bleu_stats_from_table(table).sum(axis=0)
    out = {f"bleu{k}": float(coco_bleu_from_totals(totals, k)) for k in range(1, MAX_N + 1)}
    out["rougeL"] = float(coco_rouge_l_scores(candidates, references).mean())
    out["cider"] = float(cider_scores_from_table(table).mean())
    return out


@lru_cache(maxsize=4)
def _coco_table(cands: tuple[str, ...], refs: tuple[tuple[str, ...], ...]) -> NgramTable:
    return ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in refs])


def _coco_inputs(
    predictions: Sequence[Any], references: Sequence[Any]
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    cands, refs = coco_tokenize(predictions, references)
    return tuple(cands), tuple(tuple(r) for r in refs)


def _mean_aggregate(totals: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(totals, dtype=np.float64)[..., 0] / n if n else np.full(np.shape(totals)[:-1], np.nan)


class _Metric:
    """Base: a metric object is also callable ``fn(predictions, references) -> float``."""

    name = ""
    stats_key = ""

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        raise NotImplementedError

    def aggregate(self, totals: np.ndarray, n: int) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, predictions: Sequence[Any], references: Sequence[Any]) -> float:
        s = self.stats(predictions, references)
        return float(self.aggregate(s.sum(axis=0), len(s)))

    def __repr__(self) -> str:
        return f"<metric {self.name}>"


class CocoBleu(_Metric):
    """pycocoevalcap corpus BLEU-n. Statistics per sample: lengths, n-gram counts, clipped matches."""

    stats_key = "coco_bleu"

    def __init__(self, order: int) -> None:
        self.order = order
        self.name = f"bleu{order}"

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        return bleu_stats_from_table(_coco_table(*_coco_inputs(predictions, references)))

    def aggregate(self, totals: np.ndarray, n: int) -> np.ndarray:
        return coco_bleu_from_totals(totals, self.order)


class CocoRougeL(_Metric):
    """pycocoevalcap ROUGE-L (β = 1.2). Statistic per sample: its ROUGE-L."""

    name = stats_key = "rougeL"

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        cands, refs = _coco_inputs(predictions, references)
        return coco_rouge_l_scores(cands, refs)[:, None]

    aggregate = staticmethod(_mean_aggregate)  # type: ignore[assignment]


class CocoCider(_Metric):
    """pycocoevalcap CIDEr-D. Statistic per sample: its CIDEr-D with the document frequencies (and N) of the
    full reference corpus held fixed, so a bootstrap resample re-weights samples without recomputing IDF."""

    name = stats_key = "cider"

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        return cider_scores_from_table(_coco_table(*_coco_inputs(predictions, references)))[:, None]

    aggregate = staticmethod(_mean_aggregate)  # type: ignore[assignment]


# --------------------------------------------------------------------------- METEOR (Java jar)

METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.20, 0.60, 0.75
METEOR_WEIGHTS = np.array([1.0, 0.6, 0.8, 0.6])  # exact, stem, synonym, paraphrase (English "rank" task)
METEOR_STATS = 23
METEOR_JAVA_OPTS = ("-Xmx2G",)


def meteor_jar() -> Path:
    """The METEOR 1.5 jar shipped with pycocoevalcap (raises MetricUnavailable when absent)."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable("METEOR needs the pycocoevalcap package (pip install pycocoevalcap)")
    jar = Path(next(iter(spec.submodule_search_locations))) / "meteor" / "meteor-1.5.jar"
    if not jar.is_file():
        raise MetricUnavailable(f"METEOR jar not found at {jar} (reinstall pycocoevalcap)")
    return jar


def java_executable() -> str:
    java = shutil.which("java")
    if java is None:
        raise MetricUnavailable(
            "METEOR needs Java: the `java` command was not found on PATH (install a Java runtime, e.g. "
            "`apt-get install default-jre-headless`)"
        )
    return java


def _clean_meteor(text: str) -> str:
    return " ".join(text.replace("|||", "").split())


def _meteor_command() -> tuple[list[str], Path]:
    java, jar = java_executable(), meteor_jar()
    return [java, "-jar", *METEOR_JAVA_OPTS, jar.name, "-", "-", "-stdio", "-l", "en", "-norm"], jar.parent


def _score_lines(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[str]:
    return [
        " ||| ".join(["SCORE", *(_clean_meteor(r) for r in refs), _clean_meteor(c)])
        for c, refs in zip(candidates, references)
    ]


def meteor_stats_lines(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[str]:
    """The jar's sufficient-statistics line for each (tokenised) candidate against its references.

    All ``SCORE`` lines go to one ``meteor-1.5.jar -stdio`` process in one batch.
    """
    if not candidates:
        return []
    lines = _score_lines(candidates, references)
    cmd, cwd = _meteor_command()
    try:
        proc = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=cwd, check=False)
    except OSError as exc:
        raise MetricUnavailable(f"METEOR could not start Java: {exc}") from None
    out = proc.stdout.splitlines()
    if proc.returncode != 0 or len(out) < len(lines):
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise MetricUnavailable(f"METEOR jar failed (exit {proc.returncode}): {' | '.join(tail) or 'no output'}")
    return out[: len(lines)]


def parse_meteor_stats(lines: Sequence[str]) -> np.ndarray:
    """``[n, 23]`` statistics; the chunk count (column 20) is zeroed for perfect one-chunk matches, as
    METEOR does when it adds statistics up, so the columns are additive."""
    s = np.array([[float(x) for x in line.split()] for line in lines], dtype=np.float64).reshape(-1, METEOR_STATS)
    test_total = s[:, 4:20:4].sum(axis=1) + s[:, 6:20:4].sum(axis=1)
    ref_total = s[:, 5:20:4].sum(axis=1) + s[:, 7:20:4].sum(axis=1)
    perfect = (test_total == s[:, 0]) & (ref_total == s[:, 1]) & (s[:, 20] == 1)
    s[perfect, 20] = 0.0
    return s


def meteor_from_totals(totals: np.ndarray) -> np.ndarray:
    """METEOR 1.5 score from (summed) sufficient statistics (any leading shape)."""
    t = np.asarray(totals, dtype=np.float64)
    a, b, g, d = METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA
    tl, rl, tfw, rfw = t[..., 0], t[..., 1], t[..., 2], t[..., 3]
    t_content, r_content = t[..., 4:20:4], t[..., 5:20:4]
    t_function, r_function = t[..., 6:20:4], t[..., 7:20:4]
    chunks, t_words, r_words = t[..., 20], t[..., 21], t[..., 22]
    t_weighted_len = d * (tl - tfw) + (1.0 - d) * tfw
    r_weighted_len = d * (rl - rfw) + (1.0 - d) * rfw
    t_matches = (t_content * METEOR_WEIGHTS * d).sum(-1) + (t_function * METEOR_WEIGHTS * (1.0 - d)).sum(-1)
    r_matches = (r_content * METEOR_WEIGHTS * d).sum(-1) + (r_function * METEOR_WEIGHTS * (1.0 - d)).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = t_matches / t_weighted_len
        recall = r_matches / r_weighted_len
        f_mean = 1.0 / ((1.0 - a) / precision + a / recall)
        perfect = ((t_content + t_function).sum(-1) == tl) & ((r_content + r_function).sum(-1) == rl) & (chunks == 1)
        frag = np.where(perfect, 0.0, chunks / ((t_words + r_words) / 2.0))
        score = f_mean * (1.0 - g * frag**b)
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


class Meteor(_Metric):
    """METEOR 1.5 through pycocoevalcap's jar. Statistics per sample: the jar's 23 sufficient statistics."""

    name = stats_key = "meteor"

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        cands, refs = _coco_inputs(predictions, references)
        return parse_meteor_stats(meteor_stats_lines(cands, refs))

    def aggregate(self, totals: np.ndarray, n: int) -> np.ndarray:
        return meteor_from_totals(totals)


# --------------------------------------------------------------------------- sacrebleu / rouge-score


@lru_cache(maxsize=1)
def _sacrebleu_tokenizer() -> Any:
    try:
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    except ImportError:
        raise MetricUnavailable("sacrebleu is not installed (pip install sacrebleu)") from None
    return Tokenizer13a()


class SacreBleu(_Metric):
    """sacrebleu's default corpus BLEU (13a, exp smoothing), 0–100. Statistics per sample: hypothesis length,
    closest reference length, n-gram counts and clipped matches on sacrebleu's tokens."""

    stats_key = "sacrebleu"

    def __init__(self, max_order: int) -> None:
        self.max_order = max_order
        self.name = "sacrebleu" if max_order == 4 else f"sacrebleu{max_order}"

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        preds, refs = check_inputs(predictions, references)
        tok = _sacrebleu_tokenizer()
        table = ngram_table(
            [tok(p.rstrip()).split() for p in preds], [[tok(r.rstrip()).split() for r in rr] for rr in refs]
        )
        return bleu_stats_from_table(table)

    def aggregate(self, totals: np.ndarray, n: int) -> np.ndarray:
        from sacrebleu.metrics.bleu import BLEU

        t = np.asarray(totals, dtype=np.float64)
        k = self.max_order
        flat = t.reshape(-1, t.shape[-1])
        out = np.empty(len(flat))
        for i, row in enumerate(flat):
            correct = [round(x) for x in row[2 + MAX_N : 2 + MAX_N + k]]
            total = [round(x) for x in row[2 : 2 + k]]
            out[i] = BLEU.compute_bleu(
                correct, total, round(row[0]), round(row[1]), smooth_method="exp", max_ngram_order=k
            ).score
        return out.reshape(t.shape[:-1])


_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_score_tokens(text: str, use_stemmer: bool = False) -> list[str]:
    """rouge-score's default tokenisation: lower case, runs of [a-z0-9] (the rest is a separator); with
    ``use_stemmer`` rouge-score's own tokenizer (Porter stemmer on tokens longer than 3) is used."""
    if not use_stemmer:
        return _ROUGE_TOKEN.findall(text.lower())
    return _rouge_score_stemming_tokenizer().tokenize(text)


@lru_cache(maxsize=1)
def _rouge_score_stemming_tokenizer() -> Any:
    try:
        from rouge_score.tokenizers import DefaultTokenizer
    except ImportError:
        raise MetricUnavailable("rouge-score is not installed (pip install rouge-score)") from None
    return DefaultTokenizer(use_stemmer=True)


class RougeScoreL(_Metric):
    """rouge-score's ROUGE-L F-measure, mean over samples. Statistic per sample: its F-measure."""

    name = stats_key = "rougeL_rouge_score"

    def __init__(self, use_stemmer: bool = False) -> None:
        self.use_stemmer = use_stemmer

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        preds, refs = check_inputs(predictions, references)
        stem = self.use_stemmer
        cands = [rouge_score_tokens(p, stem) for p in preds]
        return rouge_score_l_scores(cands, [[rouge_score_tokens(r, stem) for r in rr] for rr in refs])[:, None]

    aggregate = staticmethod(_mean_aggregate)  # type: ignore[assignment]


# --------------------------------------------------------------------------- BERTScore

BERTSCORE_ENV = "BENCH_BERTSCORE_MODEL"
BERTSCORE_LAYERS_ENV = "BENCH_BERTSCORE_LAYERS"


def _bertscore_layers(model_dir: Path) -> int:
    env = os.environ.get(BERTSCORE_LAYERS_ENV)
    if env:
        try:
            return int(env)
        except ValueError:
            raise BenchError(f"{BERTSCORE_LAYERS_ENV}={env!r} is not an integer") from None
    from bert_score.utils import model2layers

    if model_dir.name in model2layers:  # e.g. a folder named "distilroberta-base" or "roberta-large"
        return int(model2layers[model_dir.name])
    import json

    try:
        config = json.loads((model_dir / "config.json").read_text())
        return int(config.get("num_hidden_layers") or config["n_layers"])
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"cannot tell how many layers {model_dir} has ({exc}); set {BERTSCORE_LAYERS_ENV}") from None


class BertScoreF1(_Metric):
    """bert-score F1 with a local model directory. Statistic per sample: its F1."""

    name = stats_key = "bertscore_f1"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        num_layers: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.device = device

    def _model_dir(self) -> Path:
        raw = self.model_dir or os.environ.get(BERTSCORE_ENV)
        if not raw:
            raise MetricUnavailable(
                f"BERTScore needs a local model directory: set {BERTSCORE_ENV} to a folder with a transformers "
                "model (config.json, weights, tokenizer); nothing is downloaded"
            )
        path = Path(raw).expanduser()
        if not (path / "config.json").is_file():
            raise MetricUnavailable(f"BERTScore model directory {path} has no config.json ({BERTSCORE_ENV})")
        return path

    def stats(self, predictions: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        preds, refs = check_inputs(predictions, references)
        model_dir = self._model_dir()
        if importlib.util.find_spec("bert_score") is None:
            raise MetricUnavailable("BERTScore needs the bert-score package (pip install 'medvlbench[nlg-bertscore]')")
        from bert_score import score as bert_score

        layers = self.num_layers or _bertscore_layers(model_dir)
        cands = list(preds)
        ref_arg: list[Any] = [rr[0] for rr in refs] if all(len(rr) == 1 for rr in refs) else refs
        _, _, f1 = bert_score(
            cands,
            ref_arg,
            model_type=str(model_dir),
            num_layers=layers,
            idf=False,
            batch_size=self.batch_size,
            device=self.device,  # None: bert-score picks CUDA when available
            lang=None,
            verbose=False,
            rescale_with_baseline=False,
        )
        return np.asarray(f1.detach().cpu().numpy(), dtype=np.float64)[:, None]

    aggregate = staticmethod(_mean_aggregate)  # type: ignore[assignment]


# --------------------------------------------------------------------------- registered instances

bleu1 = CocoBleu(1)
bleu2 = CocoBleu(2)
bleu3 = CocoBleu(3)
bleu4 = CocoBleu(4)
rougeL = CocoRougeL()
cider = CocoCider()
meteor = Meteor()
sacrebleu = SacreBleu(4)
sacrebleu1 = SacreBleu(1)
rougeL_rouge_score = RougeScoreL()
bertscore_f1 = BertScoreF1()

__all__ = [
    "BertScoreF1",
    "CocoBleu",
    "CocoCider",
    "CocoRougeL",
    "Meteor",
    "NgramTable",
    "RougeScoreL",
    "SacreBleu",
    "bertscore_f1",
    "bleu1",
    "bleu2",
    "bleu3",
    "bleu4",
    "bleu_stats_from_table",
    "check_inputs",
    "cider",
    "cider_scores_from_table",
    "coco_bleu_from_totals",
    "coco_rouge_l_scores",
    "coco_scores",
    "coco_tokenize",
    "lcs_length",
    "meteor",
    "meteor_from_totals",
    "ngram_table",
    "rougeL",
    "rougeL_rouge_score",
    "rouge_score_l_scores",
    "sacrebleu",
    "sacrebleu1",
]
