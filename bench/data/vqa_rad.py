"""VQA-RAD (Lau et al. 2018): radiology visual question answering, one Sample per question.

Official download (OSF, https://osf.io/89kps/), unpacked as is::

    VQA_RAD Dataset Public.json      list of questions
    VQA_RAD Image Folder/synpic*.jpg 315 images

Each question: ``qid, phrase_type, qid_linked_id, image_case_url, image_name, image_organ, evaluation,
question, question_rephrase, question_relation, question_frame, question_type, answer, answer_type``.
The test split is ``phrase_type`` ∈ {``test_freeform``, ``test_para``} (451 questions); every other
question is train. There is no validation split. ``answer_type`` ``OPEN``/``CLOSED`` becomes
``open``/``closed``; numeric answers are cast to text.

Also read: the Hugging Face export ``flaviagiammarino/vqa-rad`` (``data/train-*.parquet``,
``data/test-*.parquet``; columns ``image, question, answer``: 1,793 train and 451 test questions,
duplicates removed by the exporter). It has no answer type: yes/no answers are ``closed``, the rest
``open`` (the MultiMedEval rule). ``format="auto"`` reads the official files when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.data.common import CheckReport
from bench.data.hf_parquet import (
    ImageSource,
    answer_type_of,
    check_dataset,
    check_split,
    closed_if_yes_no,
    parquet_ref,
    read_json,
    read_parquet_split,
    resolve_format,
    text_field,
)
from bench.interfaces import BenchError, Sample

DATASET = "vqa_rad"
SPLITS = ("train", "test")
JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_FOLDER = "VQA_RAD Image Folder"
TEST_PHRASE_TYPES = frozenset({"test_freeform", "test_para"})
REQUIRED = ("qid", "phrase_type", "image_name", "question", "answer", "answer_type")


def load(root: str | Path, split: str, *, format: str = "auto", check_images: bool = True) -> list[Sample]:
    """Questions of one split (``train`` or ``test``)."""
    root = Path(root)
    check_split(DATASET, split, SPLITS)
    fmt = resolve_format(format, root, (root / JSON_NAME).is_file(), DATASET, JSON_NAME)
    if fmt == "hf":
        return _load_hf(root, split)
    return _load_official(root, split, check_images)


def _load_official(root: Path, split: str, check_images: bool) -> list[Sample]:
    path = root / JSON_NAME
    items = read_json(path, "a JSON list of VQA-RAD questions")
    if not isinstance(items, list):
        raise BenchError(f"{path}: expected a JSON list of questions, got {type(items).__name__}")
    if not items:
        raise BenchError(f"{path}: the list of questions is empty")
    images = ImageSource.find(DATASET, root, (IMAGE_FOLDER,), required=check_images)
    out: list[Sample] = []
    seen: set[str] = set()
    for k, item in enumerate(items):
        where = f"{path} item {k}"
        qid = text_field(item, "qid", where)
        where = f"{path} qid {qid}"
        # a repeated qid keeps both questions (as the official file counts them) under distinct ids
        ident = f"{DATASET}-{qid}" if qid not in seen else f"{DATASET}-{qid}~{k}"
        seen.add(qid)
        phrase_type = text_field(item, "phrase_type", where)
        item_split = "test" if phrase_type in TEST_PHRASE_TYPES else "train"
        answer_type = answer_type_of(text_field(item, "answer_type", where), where)
        image_name = text_field(item, "image_name", where)
        question = text_field(item, "question", where)
        answer = text_field(item, "answer", where)
        if item_split != split:
            continue
        meta: dict[str, Any] = {
            "qid": qid,
            "phrase_type": phrase_type,
            "image_name": image_name,
            "organ": str(item.get("image_organ") or "").strip(),
            "question_type": str(item.get("question_type") or "").strip(),
            "qid_linked_id": str(item.get("qid_linked_id") or "").strip(),
            "format": "official",
        }
        out.append(
            Sample(
                id=ident,
                dataset=DATASET,
                split=split,
                images=[images.ref(image_name)],
                question=question,
                answer=answer,
                answer_type=answer_type,
                meta=meta,
            )
        )
    return out


def _load_hf(root: Path, split: str) -> list[Sample]:
    data = read_parquet_split(root, split, DATASET, ("question", "answer"))
    out = []
    for i, (row, loc) in enumerate(zip(data.rows, data.locations, strict=True)):
        where = f"{loc[0]} row {loc[1]}"
        question = text_field(row, "question", where)
        answer = text_field(row, "answer", where)
        out.append(
            Sample(
                id=f"{DATASET}-hf-{split}-{i:05d}",
                dataset=DATASET,
                split=split,
                images=[parquet_ref(DATASET, loc, data.image_column)],
                question=question,
                answer=answer,
                answer_type=closed_if_yes_no(answer),
                meta={"format": "hf", "shard": loc[0].name, "row": loc[1]},
            )
        )
    return out


def check(root: str | Path, **options: Any) -> CheckReport:
    return check_dataset(DATASET, Path(root), load, SPLITS, **options)
