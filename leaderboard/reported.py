"""The papers' published numbers, mapped onto the harness's task and metric names.

``data/reported/*.csv`` are the four papers' result tables transcribed cell by cell (long format, the
columns described in ``data/reported/README.md``, kept as they are). This module maps each cell to a
harness task and a registered metric with explicit tables, and converts its value to the scale of that
metric: LGDEA, LLaVA-Rad and LLaVA-RadZ print percentages, MedDr prints fractions, CNR and RadCliQ carry
no unit. A cell keeps what was printed. Cells whose dataset has no harness task (MedDr's MedMNIST sets,
LGDEA's COVID set) become reported-only benchmarks under the paper's names (on a 0-1 scale); a paper metric
with no harness metric (ROUGE-1, CheXbert vector similarity) becomes a reported-only column. Ablation tables
(variants of one model, not models) are left out.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bench.interfaces import BenchError

COLUMNS = ("paper", "table", "model", "setting", "dataset", "task", "metric", "value", "higher_is_better", "note")
FRACTION, PERCENT, RAW = "fraction", "percent", "raw"

PAPERS = {
    "llava_rad": "LLaVA-Rad",
    "llava_radz": "LLaVA-RadZ",
    "lgdea": "LGDEA",
    "meddr": "MedDr",
}
# the scale each paper prints its numbers on; the metrics in UNITLESS are printed as they are everywhere
PRINTED_SCALE = {"llava_rad": PERCENT, "llava_radz": PERCENT, "lgdea": PERCENT, "meddr": FRACTION}
UNITLESS = {"CNR", "RadCliQ"}

# the paper's task column -> leaderboard tab, for cells without a harness task
PAPER_FAMILY = {
    "zero_shot_classification": "zero-shot",
    "finetune_classification": "fine-tune",
    "phrase_grounding": "grounding",
    "retrieval": "retrieval",
    "vqa": "vqa",
    "report_generation": "report generation",
    "diagnosis": "diagnosis",
}

# (paper, paper task, paper dataset) -> harness task; "{pct}" comes from a "1%"-style setting
TASKS: dict[tuple[str, str, str], str] = {
    ("llava_radz", "zero_shot_classification", "CheXpert"): "chexpert_zs",
    ("llava_radz", "zero_shot_classification", "ChestX-ray14"): "chestxray14_zs",
    ("llava_radz", "zero_shot_classification", "COVIDx CXR-2"): "covidx_zs",
    ("llava_radz", "zero_shot_classification", "RSNA Pneumonia"): "rsna_zs",
    ("llava_radz", "zero_shot_classification", "SIIM-ACR Pneumothorax"): "siim_zs",
    ("llava_radz", "finetune_classification", "COVIDx CXR-2"): "covidx_ft_{pct}pct",
    ("llava_radz", "finetune_classification", "RSNA Pneumonia"): "rsna_ft_{pct}pct",
    ("llava_radz", "finetune_classification", "SIIM-ACR Pneumothorax"): "siim_ft_{pct}pct",
    ("lgdea", "phrase_grounding", "MS-CXR"): "mscxr_grounding",
    ("lgdea", "retrieval", "MIMIC-5x200"): "mimic5x200_retrieval",
    ("lgdea", "zero_shot_classification", "MIMIC-5x200"): "mimic5x200_zs",
    # LGDEA's "zero-shot" NIH and RSNA columns come from a classification head trained on the frozen encoder
    ("lgdea", "zero_shot_classification", "NIH Chest X-rays"): "chestxray14_linear_probe",
    ("lgdea", "zero_shot_classification", "RSNA Pneumonia"): "rsna_linear_probe",
    ("llava_rad", "report_generation", "MIMIC-CXR"): "mimic_rrg",
    ("meddr", "report_generation", "MIMIC-CXR"): "mimic_rrg",
    ("meddr", "report_generation", "IU-Xray"): "iu_xray_rrg",
    ("meddr", "vqa", "VQA-RAD"): "vqarad_vqa",
    ("meddr", "vqa", "Slake-VQA"): "slake_vqa",
    ("meddr", "vqa", "Path-VQA"): "pathvqa_vqa",
    ("meddr", "vqa", "PMC-VQA"): "pmcvqa_vqa",
}

_CLASSIFICATION = {"AUC": ("AUC", FRACTION), "F1": ("F1", FRACTION), "ACC": ("ACC", FRACTION)}
# (paper, paper task) -> {paper metric: (registered metric, its scale)}; "{avg}"/"{unc}" come from the setting
METRICS: dict[tuple[str, str], dict[str, tuple[str, str]]] = {
    ("llava_radz", "zero_shot_classification"): _CLASSIFICATION,
    ("llava_radz", "finetune_classification"): {"AUC": ("AUC", FRACTION)},
    ("lgdea", "zero_shot_classification"): {"ACC": ("ACC", FRACTION)},
    ("lgdea", "phrase_grounding"): {"CNR": ("CNR", RAW)},
    ("lgdea", "retrieval"): {f"Prec@{k}": (f"Prec@{k}", FRACTION) for k in (1, 2, 5, 10)},
    # LLaVA-Rad scored BLEU with sacrebleu and ROUGE-L with rouge-score (see the README's metric table)
    ("llava_rad", "report_generation"): {
        "BLEU-1": ("sacrebleu1", PERCENT),
        "BLEU-4": ("sacrebleu", PERCENT),
        "ROUGE-L": ("rougeL_rouge_score", FRACTION),
        "F1-RadGraph": ("radgraph_f1_partial", FRACTION),
        "CheXbert F1-14": ("chexbert_f1_{avg}_14_{unc}", FRACTION),
        "CheXbert F1-5": ("chexbert_f1_{avg}_5_{unc}", FRACTION),
    },
    # MedDr used MultiMedEval; the same metrics the catalog registers for iu_xray_rrg
    ("meddr", "report_generation"): {
        "BLEU-1": ("bleu1", FRACTION),
        "BLEU-4": ("bleu4", FRACTION),
        "ROUGE-L": ("rougeL", FRACTION),
        "METEOR": ("meteor", FRACTION),
        "F1-RadGraph": ("radgraph_f1_partial", FRACTION),
        "RadCliQ": ("radcliq_v1", RAW),
    },
    ("meddr", "vqa"): {
        "BLEU-1": ("vqa_bleu1", FRACTION),
        "Closed Q Acc": ("vqa_closed_acc", FRACTION),
        "Open Q Recall": ("vqa_open_recall", FRACTION),
        "Recall": ("vqa_recall", FRACTION),
        "Open Q Acc": ("vqa_open_acc", FRACTION),
        "F1": ("vqa_f1", FRACTION),
    },
}

# setting parts that select a harness task or metric (the rest stays in the row's label)
_SETTING_KEYS = {
    "uncertain as negative": ("unc", "uncneg"),
    "uncertain as positive": ("unc", "uncpos"),
    "micro-avg": ("avg", "micro"),
    "macro-avg": ("avg", "macro"),
}
MS_CXR_CATEGORIES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Lung Opacity",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
)
CATEGORY_SEPARATOR = " · "


@dataclass(frozen=True)
class ReportedCell:
    """One published number, placed in a leaderboard table."""

    paper: str
    table: str
    model: str
    setting: str  # what is left of the paper's setting after the task/metric/category were taken from it
    dataset: str  # the paper's dataset name
    benchmark: str  # a harness task name, or "reported:<dataset>:<paper task>"
    family: str  # the tab when the benchmark is not a harness task
    column: str  # a registered metric, "<metric> · <category>", or the paper's metric name
    metric: str  # the paper's metric name
    higher_is_better: bool
    value: float | None  # on the column's scale; None: not reported
    printed: str
    printed_scale: str
    scale: str
    note: str
    harness_metric: bool

    @property
    def row_label(self) -> str:
        return f"{self.model} ({self.setting})" if self.setting else self.model


def convert(value: float, printed: str, target: str) -> float:
    """``value`` printed on scale ``printed`` expressed on scale ``target``."""
    if printed == target:
        return value
    if {printed, target} == {PERCENT, FRACTION}:
        return value / 100.0 if printed == PERCENT else value * 100.0
    raise BenchError(f"cannot convert a value printed as {printed} to a {target} scale")


def _setting(parts: list[str], categories: bool) -> tuple[dict[str, str], str | None, list[str]]:
    keys: dict[str, str] = {}
    category = None
    rest = []
    for part in parts:
        pct = re.fullmatch(r"(\d+)%", part)
        if part in _SETTING_KEYS:
            k, v = _SETTING_KEYS[part]
            keys[k] = v
        elif pct:
            keys["pct"] = pct.group(1)
        elif categories and part in MS_CXR_CATEGORIES:
            category = part
        else:
            rest.append(part)
    return keys, category, rest


def _fill(template: str, keys: dict[str, str], where: str) -> str:
    try:
        return template.format(**keys)
    except KeyError as exc:
        raise BenchError(f"{where}: the setting does not say {exc.args[0]!r}, needed for {template!r}") from None


def map_row(row: dict[str, str], where: str) -> ReportedCell | None:
    """One CSV row as a leaderboard cell; None for ablation rows."""
    paper, task, dataset, metric = row["paper"], row["task"], row["dataset"], row["metric"]
    if task == "ablation":
        return None
    if paper not in PRINTED_SCALE:
        raise BenchError(f"{where}: unknown paper {paper!r}; known: {', '.join(PRINTED_SCALE)}")
    if task not in PAPER_FAMILY:
        raise BenchError(f"{where}: unknown task {task!r}; expected one of {', '.join(PAPER_FAMILY)}")
    parts = [p.strip() for p in row["setting"].split(",") if p.strip()]
    harness_task = TASKS.get((paper, task, dataset))
    keys, category, rest = _setting(parts, categories=task == "phrase_grounding")
    printed_scale = RAW if metric in UNITLESS else PRINTED_SCALE[paper]
    target = METRICS.get((paper, task), {}).get(metric) if harness_task else None
    benchmark = _fill(harness_task, keys, where) if harness_task else f"reported:{dataset}:{task}"
    if target is not None:
        column, scale = _fill(target[0], keys, where), target[1]
    else:  # a paper metric no harness metric computes
        column = f"{metric} (reported only)" if harness_task else metric
        scale = RAW if printed_scale == RAW else FRACTION
    if category:
        column = f"{column}{CATEGORY_SEPARATOR}{category}"
    text = row["value"].strip()
    try:
        value = convert(float(text), printed_scale, scale) if text else None
    except ValueError:
        raise BenchError(f"{where}: value {text!r} is not a number") from None
    direction = row["higher_is_better"].strip().lower()
    if direction not in ("true", "false"):
        raise BenchError(f"{where}: higher_is_better must be true or false, got {direction!r}")
    return ReportedCell(
        paper=paper,
        table=row["table"],
        model=row["model"],
        setting=", ".join(rest),
        dataset=dataset,
        benchmark=benchmark,
        family=PAPER_FAMILY[task],
        column=column,
        metric=metric,
        higher_is_better=direction == "true",
        value=value,
        printed=text,
        printed_scale=printed_scale,
        scale=scale,
        note=row["note"],
        harness_metric=target is not None,
    )


def reported_files(folder: str | Path | None = None) -> list[Path]:
    """The CSV files: the bundled ones (package data) or those of ``folder``."""
    base = Path(folder) if folder is not None else Path(str(resources.files("leaderboard") / "data" / "reported"))
    files = sorted(base.glob("*.csv"))
    if not files:
        raise BenchError(f"no reported-results CSV files in {base}")
    return files


def read_csv(path: Path) -> Iterator[tuple[dict[str, str], str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise BenchError(f"{path}: expected the columns {','.join(COLUMNS)}, found {reader.fieldnames}")
        for lineno, row in enumerate(reader, 2):
            yield row, f"{path}:{lineno}"


def load_reported(folder: str | Path | None = None) -> list[ReportedCell]:
    cells = []
    for path in reported_files(folder):
        for row, where in read_csv(path):
            cell = map_row(row, where)
            if cell is not None:
                cells.append(cell)
    return cells
