"""Registers the built-in metrics (lazy references: nothing heavy is imported here).

One function per metric family; each returns its MetricSpecs. ``level`` is "corpus" for a
metric computed over the whole set (AUC, corpus BLEU, CIDEr) and "sample" for a mean of
per-sample scores.
"""

from __future__ import annotations

from bench.interfaces import MetricSpec
from bench.plugins import hookimpl

_CLS = "bench.metrics.classification"


def _classification() -> list[MetricSpec]:
    return [
        MetricSpec(
            "AUC", f"{_CLS}:auc", True, "Macro mean over classes of ROC-AUC (scikit-learn).", "corpus", "classification"
        ),
        MetricSpec(
            "F1", f"{_CLS}:f1", True, "Macro F1 over classes at the protocol's threshold.", "corpus", "classification"
        ),
        MetricSpec(
            "ACC",
            f"{_CLS}:accuracy",
            True,
            "Macro accuracy over classes at the protocol's threshold.",
            "corpus",
            "classification",
        ),
        MetricSpec(
            "F1-val-threshold",
            f"{_CLS}:f1_validation_threshold",
            True,
            "Macro F1 at per-class thresholds maximising F1 on the validation split (needs validation scores).",
            "corpus",
            "classification",
        ),
        MetricSpec(
            "ACC-val-threshold",
            f"{_CLS}:accuracy_validation_threshold",
            True,
            "Macro accuracy at per-class thresholds maximising F1 on the validation split (needs validation scores).",
            "corpus",
            "classification",
        ),
        MetricSpec(
            "F1-optimistic",
            f"{_CLS}:f1_optimistic",
            True,
            "Macro max-F1 with thresholds chosen on the test set itself (MAVL/MedKLIP; optimistic).",
            "corpus",
            "classification",
        ),
        MetricSpec(
            "ACC-optimistic",
            f"{_CLS}:accuracy_optimistic",
            True,
            "Macro accuracy at p > the test-set max-F1 threshold (MAVL/MedKLIP; optimistic).",
            "corpus",
            "classification",
        ),
    ]


def _retrieval() -> list[MetricSpec]:
    mod = "bench.metrics.retrieval"
    out = []
    for way, query, item in (("i2t", "image", "report"), ("t2i", "report", "image")):
        for k in (1, 5, 10):
            out.append(
                MetricSpec(
                    f"Recall@{k} {way}",
                    f"{mod}:recall_at_{k}",
                    True,
                    f"Share of {query} queries whose paired {item} ranks in the top {k}.",
                    "sample",
                    "retrieval",
                )
            )
        out.append(
            MetricSpec(
                f"MeanRank {way}",
                f"{mod}:mean_rank",
                False,
                f"Mean rank of the paired {item} for a {query} query.",
                "sample",
                "retrieval",
            )
        )
        out.append(
            MetricSpec(
                f"MedianRank {way}",
                f"{mod}:median_rank",
                False,
                f"Median rank of the paired {item} for a {query} query.",
                "corpus",
                "retrieval",
            )
        )
    for k in (1, 2, 5, 10):
        out.append(
            MetricSpec(
                f"Prec@{k}",
                f"{mod}:precision_at_{k}",
                True,
                f"Mean share of the top {k} retrieved items with the query's class (category level).",
                "sample",
                "retrieval",
            )
        )
    return out


def _grounding() -> list[MetricSpec]:
    mod = "bench.metrics.grounding"
    return [
        MetricSpec(
            "CNR",
            f"{mod}:mean_cnr",
            True,
            "Contrast-to-noise ratio |μin−μout|/sqrt(σ²in+σ²out), union of boxes, population variances; "
            "mean over phrases.",
            "sample",
            "grounding",
        ),
        MetricSpec(
            "CNR-signed",
            f"{mod}:mean_cnr_signed",
            True,
            "Signed CNR (μin−μout)/sqrt(σ²in+σ²out), union of boxes, population variances.",
            "sample",
            "grounding",
        ),
        MetricSpec(
            "CNR-per-box",
            f"{mod}:mean_cnr_per_box",
            True,
            "CNR of each box against the pixels outside all boxes, averaged over the phrase's boxes.",
            "sample",
            "grounding",
        ),
        MetricSpec(
            "CNR-unbiased",
            f"{mod}:mean_cnr_unbiased",
            True,
            "CNR with unbiased (ddof=1) variances, union of boxes.",
            "sample",
            "grounding",
        ),
    ]


def _nlg() -> list[MetricSpec]:
    mod = "bench.metrics.nlg"
    coco = "pycocoevalcap conventions, PTB tokens"
    specs = [
        *((f"bleu{k}", f"Corpus BLEU-{k} ({coco}; 'closest' reference length).", "corpus") for k in range(1, 5)),
        ("rougeL", f"ROUGE-L F (β=1.2, max P/R over references), mean over reports ({coco}).", "sample"),
        ("cider", f"CIDEr-D (σ=6, clipped, ×10; IDF from all references), mean over reports ({coco}).", "corpus"),
        ("meteor", "METEOR 1.5 corpus score via pycocoevalcap's jar (-l en -norm); needs Java.", "corpus"),
        ("sacrebleu", "sacrebleu corpus BLEU-4, default 13a tokens, exp smoothing, 0-100 (LLaVA-Rad).", "corpus"),
        ("sacrebleu1", "sacrebleu corpus BLEU-1 (max n-gram order 1), 0-100 (LLaVA-Rad's BLEU-1).", "corpus"),
        ("rougeL_rouge_score", "rouge-score ROUGE-L F-measure, no stemming, mean over reports (LLaVA-Rad).", "sample"),
        ("bertscore_f1", "BERTScore F1 (bert-score, no IDF/rescaling), model from BENCH_BERTSCORE_MODEL.", "sample"),
    ]
    return [MetricSpec(name, f"{mod}:{name}", True, desc, level, "nlg") for name, desc, level in specs]


def _vqa() -> list[MetricSpec]:
    mod = "bench.metrics.vqa"
    specs = (
        ("vqa_bleu1", "bleu1_mean", "Mean sentence BLEU-1 with brevity penalty on normalised answers (MultiMedEval)."),
        (
            "vqa_closed_acc",
            "closed_accuracy",
            "Share of yes/no questions answered right: recall ≥ 0.4, 'not' counts for 'no' (MultiMedEval).",
        ),
        ("vqa_open_recall", "open_recall", "Mean token recall of the gold answer over open questions (MultiMedEval)."),
        ("vqa_recall", "recall", "Mean token recall of the gold answer over all questions (MultiMedEval)."),
        ("vqa_open_acc", "open_accuracy", "Share of open questions with token recall ≥ 0.75 (MultiMedEval)."),
        ("vqa_f1", "f1", "Mean token-set F1 between answer and gold over all questions (MultiMedEval)."),
        ("vqa_exact_match", "exact_match", "Share of answers equal to the gold answer after normalisation."),
    )
    return [MetricSpec(name, f"{mod}:{attr}", True, desc, "sample", "vqa") for name, attr, desc in specs]


def _clinical() -> list[MetricSpec]:
    # Local weights come from options or BENCH_CHEXBERT_PATH / BENCH_RADGRAPH_PATH / BENCH_BERTSCORE_PATH;
    # without them a metric raises bench.metrics.unavailable.MetricUnavailable (never 0, never a download).
    mod = "bench.metrics.clinical"
    policy = {"uncneg": "uncertain as negative", "uncpos": "uncertain as positive"}
    specs = []
    labelers = (("chexbert", "CheXbert (local chexbert.pth)"), ("chexpert_rules", "the offline rule labeler"))
    for labeler, what in labelers:
        for unc in ("uncneg", "uncpos"):
            for avg in ("micro", "macro"):
                for n in ("14", "5"):
                    name = f"{labeler}_f1_{avg}_{n}_{unc}"
                    desc = f"{avg.capitalize()} F1 over {n} CheXpert observations labelled by {what}, {policy[unc]}."
                    specs.append(MetricSpec(name, f"{mod}:{name}", True, desc, "corpus", "clinical"))
    for level, desc in (
        ("simple", "entities"),
        ("partial", "entities and whether each has a relation"),
        ("complete", "entities and their relations"),
    ):
        specs.append(
            MetricSpec(
                f"radgraph_f1_{level}",
                f"{mod}:radgraph_f1_{level}",
                True,
                f"RadGraph F1 ({level}): mean per-report set-F1 of {desc} (radgraph package, local model).",
                "sample",
                "clinical",
            )
        )
    specs.append(
        MetricSpec(
            "radcliq_v1",
            f"{mod}:radcliq_v1",
            False,
            "RadCliQ-v1: published linear model on RadGraph, BERTScore, CheXbert cosine, BLEU-2 (lower is better).",
            "sample",
            "clinical",
        )
    )
    return specs


def _judge() -> list[MetricSpec]:
    # CheXprompt aggregates: need an LLM judge (`--judge`); without one they are reported unavailable.
    from bench.metrics.judge import FAMILY, METRIC_PREFIX, metric_table

    mod = "bench.metrics.judge_metrics"
    return [
        MetricSpec(
            METRIC_PREFIX + attr,
            f"{mod}:{attr}",
            higher,
            f"CheXprompt (LLM judge, --judge): {desc}; reports the judge failed on are excluded and counted.",
            "corpus",
            FAMILY,
        )
        for attr, higher, desc in metric_table()
    ]


def _agreement() -> list[MetricSpec]:
    mod = "bench.metrics.judge_agreement"
    specs = [
        (
            "kendall_tau_b_total",
            True,
            "Kendall tau-b (scipy) between the judge's total error counts and the raters' mean (ReXVal).",
        ),
        (
            "kendall_tau_b_significant",
            True,
            "Kendall tau-b (scipy) between the judge's significant error counts and the raters' mean (ReXVal).",
        ),
        (
            "mad_judge_vs_raters",
            False,
            "Leave-one-rater-out mean absolute difference of the judge's total errors from the left-in raters' "
            "mean, averaged over raters (LLaVA-Rad Fig. 4A).",
        ),
        (
            "mad_rater_vs_raters",
            False,
            "Leave-one-rater-out mean absolute difference of the left-out rater's total errors from the other "
            "raters' mean, averaged over raters (the human reference for mad_judge_vs_raters).",
        ),
    ]
    return [
        MetricSpec(name, f"{mod}:{name}", higher, desc, "corpus", "judge validation") for name, higher, desc in specs
    ]


@hookimpl
def bench_register_metrics() -> list[MetricSpec]:
    return [*_classification(), *_retrieval(), *_grounding(), *_nlg(), *_vqa(), *_clinical(), *_judge(), *_agreement()]
