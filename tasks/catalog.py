"""The named task instances: dataset split + protocol + metrics.

A spec whose ``factory`` is None names a protocol that has not been implemented yet; the
runner refuses it with "protocol not implemented" instead of producing numbers.
"""

from __future__ import annotations

from bench.data.vocab import CHEXPERT_COMPETITION, CHEXPERT_LABELS
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
FIVE_CLASSES = CHEXPERT_COMPETITION

ZERO_SHOT = "tasks.zero_shot:ZeroShotClassification"
RETRIEVAL = "tasks.retrieval:ImageTextRetrieval"
VQA = "tasks.vqa:VisualQuestionAnswering"
RRG = "tasks.report_generation:ReportGeneration"
GEN_CLS = "tasks.generative_classification:GenerativeClassification"
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


def generative_classification_tasks() -> list[TaskSpec]:
    """synthcxr label-set diagnosis and generative zero-shot classification, plain and chain-of-thought prompts."""
    gen = dict(
        dataset="synthcxr",
        split="test",
        metrics=("ACC", "F1"),
        requires=frozenset({GENERATE}),
        factory=GEN_CLS,
    )
    specs = []
    for style, suffix, what in (("plain", "", "the answer alone"), ("cot", "_cot", "step-by-step reasoning")):
        specs.append(
            TaskSpec(
                name=f"synthcxr_diag{suffix}",
                protocol="diagnosis",
                family="diagnosis",
                options={"mode": "multilabel", "classes": (*SYNTH_FINDINGS, "No Finding"), "prompt_style": style},
                description="Label-set diagnosis by a generative model answering from a candidate list (the 7 "
                f"findings and No Finding) with {what}; macro ACC/F1 over classes, exact set match, unparseable "
                "answers counted as wrong.",
                **gen,
            )
        )
        specs.append(
            TaskSpec(
                name=f"synthcxr_zs_generative{suffix}",
                protocol="generative_zero_shot",
                family="zero-shot",
                options={"mode": "multiclass", "classes": FIVE_CLASSES, "prompt_style": style},
                description="Generative twin of synthcxr_zs_5class: the model names one of 5 findings from a "
                f"candidate list with {what} (LLaVA-RadZ's MLLM baselines); ACC, macro F1, unparseable answers "
                "counted as wrong.",
                **gen,
            )
        )
    return specs


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
            metrics=("CNR", "CNR-signed", "CNR-per-box", "CNR-unbiased"),
            requires=frozenset({GROUND}),
            factory="tasks.grounding:PhraseGrounding",
            family="grounding",
            description="Phrase grounding: contrast-to-noise ratio of the similarity map of each present finding's "
            "report sentence inside the finding's boxes, per finding and mean.",
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
            factory=VQA,
            family="vqa",
            dataset_options={"view": "vqa"},
            description="Visual question answering on synthcxr's question-answer pairs (closed yes/no and open "
            "location/side/severity/abnormality questions), MultiMedEval metrics.",
        ),
        TaskSpec(
            name="synthcxr_rrg",
            dataset="synthcxr",
            protocol="report_generation",
            split="test",
            metrics=RRG_METRICS,
            requires=frozenset({GENERATE}),
            factory=RRG,
            family="report generation",
            options={"context": "indication"},
            description="Findings generation with the indication as context (LLaVA-Rad stage-3 setting), scored "
            "against the findings section with NLG metrics and the offline rule labeler's F1.",
        ),
        *generative_classification_tasks(),
    ]
    specs += finetune_tasks("synthcxr", "synthcxr", SYNTH_FINDINGS, "the 7 synthcxr findings", "positive", {})
    return specs


FINETUNE = "tasks.finetune:FineTuneClassification"
FINETUNE_METRICS = ("AUC", "F1-val-threshold", "ACC-val-threshold", "F1-optimistic", "ACC-optimistic")
# suffix -> (mode, init, what)
FINETUNE_VARIANTS = {
    "": ("linear", "pretrained", "linear probe: a linear head on the frozen image backbone"),
    "_full": ("full", "pretrained", "full fine-tuning: the image backbone and a new linear head trained end to end"),
    "_scratch": ("linear", "scratch", "Scratch baseline, linear probe: the same backbone architecture, randomly "
                 "initialised and frozen"),
    "_full_scratch": ("full", "scratch", "Scratch baseline (LLaVA-RadZ Table 3 'Scratch' row): the same backbone "
                      "architecture randomly initialised, trained end to end"),
}  # fmt: skip


def finetune_tasks(
    key: str, dataset: str, classes: tuple[str, ...], what: str, uncertain: str, dataset_options: dict[str, str]
) -> list[TaskSpec]:
    """``<key>_ft_<pct>pct[_full][_scratch]``: 1 / 10 / 100 % of the training split, four variants each."""
    specs = []
    for pct in (1, 10, 100):
        seeds = "mean ± sd over 3 seeds" if pct < 100 else "1 seed"
        for suffix, (mode, init, how) in FINETUNE_VARIANTS.items():
            specs.append(
                TaskSpec(
                    name=f"{key}_ft_{pct}pct{suffix}",
                    dataset=dataset,
                    protocol="finetune",
                    split="test",
                    metrics=FINETUNE_METRICS,
                    requires=frozenset({BACKBONE}),
                    factory=FINETUNE,
                    family="fine-tune",
                    options={
                        "fraction": pct / 100,
                        "classes": classes,
                        "mode": mode,
                        "init": init,
                        "uncertain": uncertain,
                    },
                    dataset_options=dict(dataset_options),
                    description=f"{how}, on {pct} % of the training split (seeded, stratified; {seeds}), model "
                    f"selection on the val split; test AUC of {what}, F1/ACC at validation thresholds.",
                )
            )
    return specs


def mimic_chexpert_tasks() -> list[TaskSpec]:
    """Tasks on MIMIC-CXR, MS-CXR, MIMIC-5x200, CheXpert and CheXpert-5x200."""
    chexpert_14 = CHEXPERT_LABELS
    # LLaVA-Rad: BLEU-1/4, ROUGE-L, CheXbert F1 (14 / 5 classes, micro / macro, uncertain as negative or
    # positive), RadGraph F1; MedDr adds METEOR, ROUGE-1 and RadCliQ on MIMIC-CXR.
    rrg_metrics = (
        "bleu1",
        "bleu4",
        "rougeL",
        "meteor",
        "cider",
        "sacrebleu1",
        "sacrebleu",
        "rougeL_rouge_score",
        "bertscore_f1",
        "chexbert_f1_micro_14_uncneg",
        "chexbert_f1_macro_14_uncneg",
        "chexbert_f1_micro_5_uncneg",
        "chexbert_f1_macro_5_uncneg",
        "chexbert_f1_micro_14_uncpos",
        "chexbert_f1_macro_14_uncpos",
        "chexbert_f1_micro_5_uncpos",
        "chexbert_f1_macro_5_uncpos",
        "radgraph_f1_simple",
        "radgraph_f1_partial",
        "radgraph_f1_complete",
        "radcliq_v1",
    )
    recall_metrics = tuple(m for m in RETRIEVAL_METRICS if not m.startswith("Prec@"))
    zs = dict(protocol="zero_shot", split="test", requires=frozenset({EMBED}), factory=ZERO_SHOT, family="zero-shot")
    return [
        TaskSpec(
            name="mimic_rrg",
            dataset="mimic_cxr",
            protocol="report_generation",
            split="test",
            metrics=rrg_metrics,
            requires=frozenset({GENERATE}),
            factory=RRG,
            family="report generation",
            dataset_options={"views": ("PA", "AP"), "require_findings": True},
            description="Findings generation on the official MIMIC-CXR test split: AP/PA images whose report has a "
            "findings section (LLaVA-Rad Suppl. Table 3: 2,461 image-report pairs; rule-based sections), scored "
            "against that findings section (LLaVA-Rad Suppl. Table 1, MedDr Table 2).",
        ),
        TaskSpec(
            name="chexpert_rrg",
            dataset="chexpert",
            protocol="report_generation",
            split="val",
            metrics=rrg_metrics,
            requires=frozenset({GENERATE}),
            factory=RRG,
            family="report generation",
            dataset_options={"frontal_only": True, "require_findings": True},
            description="External findings generation on CheXpert validation images (LLaVA-Rad Fig. 3, n=63 "
            "held-out studies from the validation split). Needs the radiologist reports of CheXpert Plus "
            "(df_chexpert_plus_*.csv) in the chexpert folder; ours keeps every frontal validation image whose report "
            "has a findings section (LLaVA-Rad's exact 63-study selection is not published).",
        ),
        TaskSpec(
            name="chexpert_zs",
            metrics=("AUC", "F1", "ACC"),
            dataset="chexpert",
            dataset_options={"frontal_only": True},
            options={"mode": "multilabel", "classes": chexpert_14},
            description="Zero-shot multi-label classification on the official CheXpert test set (500 studies, "
            "5-radiologist majority labels; frontal images), all 14 categories as in LLaVA-RadZ Table 1.",
            **zs,
        ),
        TaskSpec(
            name="chexpert5x200_zs",
            metrics=("ACC", "F1", "AUC"),
            dataset="chexpert5x200",
            options={"mode": "multiclass", "classes": FIVE_CLASSES},
            description="Zero-shot 5-class classification on CheXpert-5x200 (GLoRIA's one-finding rule on the "
            "CheXpert training set, 200 frontal images per class, seeded).",
            **zs,
        ),
        TaskSpec(
            name="mimic5x200_zs",
            metrics=("ACC", "F1", "AUC"),
            dataset="mimic5x200",
            options={"mode": "multiclass", "classes": FIVE_CLASSES},
            description="Zero-shot 5-class classification on MIMIC-5x200 (MedCLIP's rule; LGDEA Table V reports ACC).",
            **zs,
        ),
        TaskSpec(
            name="mscxr_grounding",
            dataset="ms_cxr",
            protocol="grounding",
            split="test",
            metrics=("CNR", "CNR-signed", "CNR-per-box", "CNR-unbiased"),
            requires=frozenset({GROUND}),
            factory="tasks.grounding:PhraseGrounding",
            family="grounding",
            description="Phrase grounding on MS-CXR (all 1,162 phrase-box pairs, 8 categories): contrast-to-noise "
            "ratio of the phrase's similarity map inside its boxes, per category and mean (LGDEA Tables II-III).",
        ),
        TaskSpec(
            name="mimic5x200_retrieval",
            dataset="mimic5x200",
            protocol="retrieval",
            split="test",
            metrics=("Prec@1", "Prec@2", "Prec@5", "Prec@10"),
            requires=frozenset({EMBED}),
            factory=RETRIEVAL,
            family="retrieval",
            options={"classes": FIVE_CLASSES, "text_section": "report"},
            description="Image-to-text retrieval on MIMIC-5x200: class-level Prec@K of the retrieved report texts "
            "(findings + impression, as in MedCLIP; needs the MIMIC-CXR reports) (LGDEA Table IV).",
        ),
        TaskSpec(
            name="mimic_retrieval",
            dataset="mimic_cxr",
            protocol="retrieval",
            split="test",
            metrics=recall_metrics,
            requires=frozenset({EMBED}),
            factory=RETRIEVAL,
            family="retrieval",
            dataset_options={"views": ("PA", "AP"), "require_findings": True},
            options={"text_section": "findings"},
            description="Instance-level image-report retrieval on the official MIMIC-CXR test split (AP/PA images "
            "with a findings section): Recall@1/5/10 both ways, duplicate texts merged (LLaVA-Rad Fig. 2E).",
        ),
    ]


def classification_set_tasks() -> list[TaskSpec]:
    """Tasks on ChestX-ray14, RSNA Pneumonia, SIIM-ACR and COVIDx.

    LLaVA-RadZ Table 1-2: zero-shot AUC/F1/ACC on ChestX-ray14 (14 findings, multi-label), COVIDx CXR-2,
    RSNA Pneumonia and SIIM-ACR (binary: one class, CheXzero positive/negative prompts); Table 3:
    fine-tuning AUC with 1/10/100 % of the training split. LGDEA Table V: accuracy of a classification
    head trained on the image encoder (its "zero-shot" column for NIH and RSNA).
    """
    nih14 = (
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Pleural Thickening",
        "Hernia",
    )
    llava_radz = {"split_scheme": "llava_radz"}
    binary = {
        "rsna": ("rsna_pneumonia", "Pneumonia", "RSNA Pneumonia (seeded 0.6/0.2/0.2 patient split, LLaVA-RadZ)"),
        "siim": ("siim_acr", "Pneumothorax", "SIIM-ACR Pneumothorax (seeded 0.6/0.2/0.2 image split, LLaVA-RadZ)"),
        "covidx": ("covidx", "COVID-19", "COVIDx CXR-2 (all images pooled, seeded 0.7/0.2/0.1 patient split)"),
    }
    zs = dict(protocol="zero_shot", split="test", requires=frozenset({EMBED}), factory=ZERO_SHOT, family="zero-shot")
    specs = [
        TaskSpec(
            name="chestxray14_zs",
            dataset="chestxray14",
            metrics=("AUC", "F1", "ACC"),
            description="Zero-shot multi-label classification of the 14 ChestX-ray14 findings on the official "
            "test list (LLaVA-RadZ Table 2 used the 22,433-image CheXNet test list: dataset option "
            "split_scheme='chexnet').",
            options={"mode": "multilabel", "classes": nih14, "uncertain": "negative"},
            **zs,
        ),
    ]
    for key, (dataset, label, where) in binary.items():
        specs.append(
            TaskSpec(
                name=f"{key}_zs",
                dataset=dataset,
                metrics=("AUC", "F1", "ACC"),
                description=f"Zero-shot binary classification of {label} on the test split of {where}; "
                "positive vs negative prompt probability, F1/ACC at p >= 0.5.",
                options={"mode": "multilabel", "classes": (label,), "uncertain": "negative"},
                dataset_options=dict(llava_radz),
                **zs,
            )
        )
    for key, (dataset, label, where) in binary.items():
        specs += finetune_tasks(key, dataset, (label,), f"{label} in {where}", "negative", llava_radz)
    for dataset, classes, name, what in (
        ("chestxray14", nih14, "chestxray14_linear_probe", "NIH ChestX-ray14 (official test list)"),
        ("rsna_pneumonia", ("Pneumonia",), "rsna_linear_probe", "RSNA Pneumonia (seeded 0.6/0.2/0.2 split)"),
    ):
        specs.append(
            TaskSpec(
                name=name,
                dataset=dataset,
                protocol="finetune",
                split="test",
                metrics=("ACC",),
                requires=frozenset({BACKBONE}),
                factory=None,
                family="fine-tune",
                options={"fraction": 1.0, "head": "linear", "classes": classes},
                dataset_options={"split_scheme": "llava_radz"} if dataset == "rsna_pneumonia" else {},
                description=f"LGDEA Table V protocol: a linear classification head trained with cross-entropy on "
                f"the frozen image encoder, accuracy on {what}. LGDEA's RSNA split (MedCLIP's class-balanced "
                "subset) and COVID set (Rahman et al., not COVIDx) are not reproduced.",
            )
        )
    return specs


def vqa_and_report_tasks() -> list[TaskSpec]:
    """Tasks on VQA-RAD, SLAKE, PathVQA, PMC-VQA, IU X-ray, Open-I and ReXVal."""
    vqa = dict(protocol="vqa", split="test", metrics=VQA_METRICS, requires=frozenset({GENERATE}), factory=VQA)
    # MedDr Table 2/4 (IU-Xray, MultiMedEval metrics): BLEU-1/4, ROUGE-L, METEOR, F1-RadGraph, RadCliQ;
    # ROUGE-1 and the CheXbert vector similarity have no registered metric, CheXbert F1 stands in.
    rrg_metrics = (
        "bleu1",
        "bleu4",
        "rougeL",
        "meteor",
        "radgraph_f1_partial",
        "radcliq_v1",
        "chexbert_f1_micro_14_uncneg",
        "chexbert_f1_macro_14_uncneg",
        "chexbert_f1_micro_5_uncneg",
        "chexbert_f1_macro_5_uncneg",
    )
    rrg = dict(
        protocol="report_generation",
        split="test",
        metrics=rrg_metrics,
        requires=frozenset({GENERATE}),
        factory=RRG,
        family="report generation",
    )
    return [
        TaskSpec(
            name="vqarad_vqa",
            dataset="vqa_rad",
            family="vqa",
            description="VQA-RAD test (451 questions: phrase_type test_freeform + test_para), MultiMedEval metrics "
            "(MedDr Table 1).",
            **vqa,
        ),
        TaskSpec(
            name="slake_vqa",
            dataset="slake",
            family="vqa",
            dataset_options={"language": "en"},
            description="SLAKE 1.0 English test questions (1,061), MultiMedEval metrics (MedDr Tables 1 and 4).",
            **vqa,
        ),
        TaskSpec(
            name="pathvqa_vqa",
            dataset="pathvqa",
            family="vqa",
            description="PathVQA official test split (6,761 questions; 6,719 in the deduplicated Hugging Face "
            "export), MultiMedEval metrics (MedDr Table 1).",
            **vqa,
        ),
        TaskSpec(
            name="pmcvqa_vqa",
            dataset="pmc_vqa",
            family="vqa",
            dataset_options={"version": 2},
            description="PMC-VQA version 2 test_2.csv (33,430 multiple-choice questions; the gold answer is the "
            "correct choice's text), MultiMedEval metrics (MedDr Table 1, whose ~90k-question RadFM split is not "
            "published). The 2,000-question test_clean set is dataset option version=1, test_set=clean.",
            **vqa,
        ),
        TaskSpec(
            name="iu_xray_rrg",
            dataset="iu_xray",
            description="Findings generation on the R2Gen IU X-ray test split (590 studies, two views), scored "
            "against the R2Gen findings text (MedDr Tables 2 and 4).",
            **rrg,
        ),
        TaskSpec(
            name="openi_rrg",
            dataset="openi",
            dataset_options={"require_findings": True, "require_images": True},
            description="Findings generation on the seeded Open-I test split (seed 0, 0.7/0.1/0.2 by report; "
            "reports with a FINDINGS section and at least one image).",
            **rrg,
        ),
        TaskSpec(
            name="rexval_agreement",
            dataset="rexval",
            protocol="agreement",
            split="test",
            metrics=("kendall_tau_b_total", "kendall_tau_b_significant", "mad_judge_vs_raters", "mad_rater_vs_raters"),
            requires=frozenset({GENERATE}),
            factory="tasks.rexval_agreement:RexvalAgreement",
            family="judge validation",
            description="CheXprompt LLM-judge validation on ReXVal (the model under evaluation is the judge, e.g. "
            "openai on a local server): Kendall tau-b between the judge's error counts and the mean of six "
            "radiologists (total and clinically significant errors) over 200 report pairs, and the "
            "leave-one-rater-out mean absolute difference of the judge and of the left-out rater (LLaVA-Rad Fig. 4).",
        ),
    ]


def all_tasks() -> list[TaskSpec]:
    return [*synthcxr_tasks(), *mimic_chexpert_tasks(), *classification_set_tasks(), *vqa_and_report_tasks()]
