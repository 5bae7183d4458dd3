"""Speed of the NLG metrics against the reference packages, on 3,858 real report pairs, in one run.

Pairs: IU X-ray (Open-I) reports (``tests/real_reports.py``; the torchxrayvision wheel's archive) sorted by
id; the first 3,858 whose FINDINGS or IMPRESSION is non-empty. Reference = FINDINGS + IMPRESSION of a
report; prediction = the same text of another report (a seeded derangement), i.e. a plausible but wrong
report. All texts are tokenised once with our PTB tokeniser; both sides then score the same tokenised
strings.

Prints (every ratio is measured in this run, on this machine):
  1. BLEU-1…4 + ROUGE-L + CIDEr: our time vs pycocoevalcap Bleu + Cider + rouge-score ROUGE-L (and vs
     pycocoevalcap Bleu + Cider + Rouge), best of ``--repeat``; target ≥ 5× faster, identical values.
  2. 1,000-resample percentile intervals of BLEU-1…4, ROUGE-L and CIDEr together (from the per-sample
     sufficient statistics); target ≤ 2 s on 2 cores.

    BENCH_TEST_DATA=/tmp/txvcache python benchmarks/metrics_speed.py [--pairs 3858] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.metrics import nlg
from bench.metrics.stats import additive_bootstrap_cis
from bench.metrics.text_tokenize import ptb_tokenize
from tests.real_reports import iu_reports


def report_pairs(n_pairs: int, seed: int = 0) -> tuple[list[str], list[str]]:
    texts = [" ".join(p for p in (r.findings, r.impression) if p) for r in iu_reports()]
    texts = [t for t in texts if t][:n_pairs]
    if len(texts) < n_pairs:
        raise SystemExit(f"only {len(texts)} reports with text, asked for {n_pairs} pairs")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    partner = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}  # a derangement
    return [texts[partner[i]] for i in range(len(texts))], texts


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def ours(cands: list[str], refs: list[list[str]], rouge: str) -> dict[str, float]:
    """BLEU-1..4 + CIDEr (pycocoevalcap definitions) + one ROUGE-L, computed by bench.metrics.nlg."""
    table = nlg.ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in refs])
    totals = nlg.bleu_stats_from_table(table).sum(axis=0)
    out = {f"bleu{k}": float(nlg.coco_bleu_from_totals(totals, k)) for k in range(1, 5)}
    out["cider"] = float(nlg.cider_scores_from_table(table).mean())
    if rouge == "rouge-score":
        tok = nlg.rouge_score_tokens
        scores = nlg.rouge_score_l_scores([tok(c) for c in cands], [[tok(r) for r in rr] for rr in refs])
        out["rougeL_rouge_score"] = float(scores.mean())
    else:
        out["rougeL"] = float(nlg.coco_rouge_l_scores(cands, refs).mean())
    return out


def reference(cands: list[str], refs: list[list[str]], rouge: str) -> dict[str, float]:
    """The same with pycocoevalcap's Bleu and Cider and rouge-score's or pycocoevalcap's ROUGE-L."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [c] for i, c in enumerate(cands)}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap's Bleu prints its totals
        bleu, _ = Bleu(4).compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"bleu{k + 1}": float(bleu[k]) for k in range(4)}
    out["cider"] = float(cider)
    if rouge == "rouge-score":
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        out["rougeL_rouge_score"] = float(
            np.mean([scorer.score(r[0], c)["rougeL"].fmeasure for c, r in zip(cands, refs)])
        )
    else:
        from pycocoevalcap.rouge.rouge import Rouge

        out["rougeL"] = float(Rouge().compute_score(gts, res)[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3858)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    args = parser.parse_args()

    preds, refs = report_pairs(args.pairs)
    start = time.perf_counter()
    cands = [ptb_tokenize(p) for p in preds]
    ref_tok = [[ptb_tokenize(r)] for r in refs]
    t_tok = time.perf_counter() - start
    n_tokens = sum(len(c.split()) for c in cands) + sum(len(r[0].split()) for r in ref_tok)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{len(cands)} report pairs ({n_tokens:,} tokens after PTB tokenisation), {os.cpu_count()} CPUs, "
        f"load average {load:.2f} (the CPU may be shared: ratios are measured in this same run)"
    )
    print(f"PTB tokenisation (ours, pure Python, no JVM): {t_tok:.3f} s for {2 * len(cands)} texts")

    print(f"\n1. BLEU-1..4 + ROUGE-L + CIDEr on the same tokenised strings (best of {args.repeat})")
    worst = 0.0
    v_coco: dict[str, float] = {}
    for rouge, label in (
        ("rouge-score", "pycocoevalcap Bleu + Cider + rouge-score ROUGE-L"),
        ("pycocoevalcap", "pycocoevalcap Bleu + Cider + Rouge"),
    ):
        t_ours, v_ours = best_of(args.repeat, lambda rouge=rouge: ours(cands, ref_tok, rouge))
        t_ref, v_ref = best_of(args.repeat, lambda rouge=rouge: reference(cands, ref_tok, rouge))
        diff = max(abs(v_ours[k] - v_ref[k]) for k in v_ref)
        worst = max(worst, diff)
        v_coco.update(v_ours)
        print(f"   vs {label}:")
        print(
            f"     ours {t_ours:7.3f} s   reference {t_ref:7.3f} s   -> {t_ref / t_ours:5.1f}x faster   "
            f"max abs diff {diff:.1e}"
        )
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "rougeL_rouge_score", "cider"):
        print(f"     {k:20s} {v_coco[k]:.10f}")
    print(f"   values {'identical' if worst <= 1e-9 else 'DIFFERENT'} (max abs diff {worst:.1e})")

    def intervals() -> dict[str, tuple[float | None, float | None]]:
        table = nlg.ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in ref_tok])
        bleu = nlg.bleu_stats_from_table(table)
        stats = {f"bleu{k}": (nlg.CocoBleu(k), bleu) for k in range(1, 5)}
        stats["rougeL"] = (nlg.CocoRougeL(), nlg.coco_rouge_l_scores(cands, ref_tok)[:, None])
        stats["cider"] = (nlg.CocoCider(), nlg.cider_scores_from_table(table)[:, None])
        return additive_bootstrap_cis(stats, args.resamples, 0)

    t_all, cis = best_of(args.repeat, intervals)
    table = nlg.ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in ref_tok])
    bleu = nlg.bleu_stats_from_table(table)
    pre = {f"bleu{k}": (nlg.CocoBleu(k), bleu) for k in range(1, 5)}
    pre["rougeL"] = (nlg.CocoRougeL(), nlg.coco_rouge_l_scores(cands, ref_tok)[:, None])
    pre["cider"] = (nlg.CocoCider(), nlg.cider_scores_from_table(table)[:, None])
    t_resample, _ = best_of(args.repeat, lambda: additive_bootstrap_cis(pre, args.resamples, 0))
    print(
        f"\n2. {args.resamples}-resample 95% intervals of BLEU-1..4, ROUGE-L and CIDEr together (best of {args.repeat})"
    )
    print(f"   statistics from the tokenised texts + resampling   {t_all:.3f} s   (target <= 2 s)")
    print(f"   resampling the statistics only                      {t_resample:.3f} s")
    for k, (low, high) in cis.items():
        print(f"     {k:8s} {v_coco[k]:.4f}  [{low:.4f}, {high:.4f}]")


if __name__ == "__main__":
    main()
