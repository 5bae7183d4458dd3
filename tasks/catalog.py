"""The named task instances: dataset split + protocol + metrics.

A spec whose ``factory`` is None names a protocol that has not been implemented yet; the
runner refuses it with "protocol not implemented" instead of producing numbers.
"""

from __future__ import annotations

from bench.interfaces import BACKBONE, EMBED, GENERATE, GROUND, TaskSpec

SYNTH_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
    "Pneumothorax",
    "Nodule",
)
FIVE_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

ZERO_SHOT = "tasks.zero_shot:ZeroShotClassification"
RETRIEVAL = "tasks.retrieval:ImageTextRetrieval"
RETRIEVAL_METRICS = (
    "Recall@1 i2t",
    "Recall@5 i2t",
    "Recall@10 i2t",
    "Recall@1 t2i",
    "Recall@5 t2i",
    "Recall@10 t2i",
    "MeanRank i2t",
    "MedianRank i2t",
    "MeanRank t2i",
    "MedianRank t2i",
    "Prec@1",
    "Prec@2",
    "Prec@5",
    "Prec@10",
)

VQA_METRICS = (
    "vqa_bleu1",
    "vqa_closed_acc",
    "vqa_open_recall",
    "vqa_recall",
    "vqa_open_acc",
    "vqa_f1",
    "vqa_exact_match",
)
# synthcxr has no CheXbert/RadGraph weights: its clinical metric is the offline rule labeler's F1
RRG_METRICS = (
    "bleu1",
    "bleu4",
    "rougeL",
    "meteor",
    "cider",
    "chexpert_rules_f1_micro_14_uncneg",
    "chexpert_rules_f1_macro_14_uncneg",
    "chexpert_rules_f1_micro_5_uncneg",
    "chexpert_rules_f1_macro_5_uncneg",
)


def synthcxr_tasks() -> list[TaskSpec]:
    zs = dict(
        dataset="synthcxr",
        protocol="zero_shot",
        split="test",
        requires=frozenset({EMBED}),
        factory=ZERO_SHOT,
        family="zero-shot",
    )
    specs = [
        TaskSpec(
            name="synthcxr_zs",
            metrics=("AUC", "F1", "ACC"),
            description="Zero-shot multi-label classification of 7 findings (CheXzero prompts).",
            options={"mode": "multilabel", "classes": SYNTH_FINDINGS, "uncertain": "positive"},
            **zs,
        ),
        TaskSpec(
            name="synthcxr_zs_5class",
            metrics=("ACC", "F1", "AUC"),
            description="Zero-shot 5-class classification on one-finding images (CheXpert-5x200 rule).",
            options={"mode": "multiclass", "classes": FIVE_CLASSES},
            **zs,
        ),
        TaskSpec(
            name="synthcxr_grounding",
            dataset="synthcxr",
            protocol="grounding",
            split="test",
            metrics=("CNR",),
            requires=frozenset({GROUND}),
            factory=None,
            family="grounding",
            description="Phrase grounding: contrast-to-noise ratio of similarity maps inside finding boxes.",
        ),
        TaskSpec(
            name="synthcxr_retrieval",
            dataset="synthcxr",
            protocol="retrieval",
            split="test",
            metrics=RETRIEVAL_METRICS,
            requires=frozenset({EMBED}),
            factory=RETRIEVAL,
            family="retrieval",
            options={"classes": FIVE_CLASSES, "text_section": "findings"},
            description="Image-text retrieval: instance-level Recall@K both ways (findings texts, duplicates "
            "merged) and class-level Prec@K on the one-finding subset.",
        ),
        TaskSpec(
            name="synthcxr_vqa",
            dataset="synthcxr",
            protocol="vqa",
            split="test",
            metrics=VQA_METRICS,
            requires=frozenset({GENERATE}),
            factory=None,
            family="vqa",
            dataset_options={"view": "vqa"},
            description="Visual question answering (MultiMedEval metrics).",
        ),
        TaskSpec(
            name="synthcxr_rrg",
            dataset="synthcxr",
            protocol="report_generation",
            split="test",
            metrics=RRG_METRICS,
            requires=frozenset({GENERATE}),
            factory=None,
            family="report generation",
            description="Findings generation scored with NLG and clinical metrics.",
        ),
        TaskSpec(
            name="synthcxr_diag",
            dataset="synthcxr",
            protocol="diagnosis",
            split="test",
            metrics=("ACC", "F1"),
            requires=frozenset({GENERATE}),
            factory=None,
            family="diagnosis",
            description="Label-set diagnosis by a generative model answering from a candidate list.",
        ),
    ]
    for pct in (1, 10, 100):
        specs.append(
            TaskSpec(
                name=f"synthcxr_ft_{pct}pct",
                dataset="synthcxr",
                protocol="finetune",
                split="test",
                metrics=("AUC", "F1", "ACC"),
                requires=frozenset({BACKBONE}),
                factory=None,
                family="fine-tune",
                options={"fraction": pct / 100},
                description=f"Fine-tuning / linear probe on {pct} % of the training labels.",
            )
        )
    return specs


def all_tasks() -> list[TaskSpec]:
    return synthcxr_tasks()
