"""SLAKE 1.0 (Liu et al. 2021): bilingual radiology VQA; the English questions by default.

Official download (https://www.med-vqa.com/slake/), also the hub repository ``BoKelvin/SLAKE``::

    train.json, validate.json (the hub copy renames it validation.json), test.json
    imgs/xmlab{N}/source.jpg          (or the hub's imgs.zip, read without unpacking)

Each question: ``img_id, img_name, question, answer, q_lang, location, modality, answer_type,
base_type, content_type, triple, qid``. ``q_lang`` is ``en`` or ``zh``: ``language="en"`` (default)
keeps English, ``"zh"`` Chinese, ``"all"`` both. ``answer_type`` ``OPEN``/``CLOSED``. English counts:
4,919 train, 1,053 validate, 1,061 test questions.

A Parquet export (``data/<split>-*.parquet`` with ``image, question, answer`` and optionally
``q_lang``/``answer_type``) is read with ``format="hf"`` (auto when the JSON files are absent).
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

DATASET = "slake"
SPLITS = ("train", "val", "test")
FILES = {"train": ("train.json",), "val": ("validate.json", "validation.json"), "test": ("test.json",)}
LANGUAGES = ("en", "zh", "all")


def _official_present(root: Path) -> bool:
    return any((root / name).is_file() for names in FILES.values() for name in names)


def load(
    root: str | Path, split: str, *, language: str = "en", format: str = "auto", check_images: bool = True
) -> list[Sample]:
    """Questions of one split in the chosen language."""
    root = Path(root)
    check_split(DATASET, split, SPLITS)
    if language not in LANGUAGES:
        raise BenchError(f"{DATASET}: language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    fmt = resolve_format(format, root, _official_present(root), DATASET, "train.json, validate.json, test.json")
    if fmt == "hf":
        return _load_hf(root, split, language)
    return _load_official(root, split, language, check_images)


def _load_official(root: Path, split: str, language: str, check_images: bool) -> list[Sample]:
    path = next((root / n for n in FILES[split] if (root / n).is_file()), None)
    if path is None:
        raise BenchError(f"{root}: missing {' or '.join(FILES[split])} (the SLAKE {split} questions)")
    items = read_json(path, "a JSON list of SLAKE questions")
    if not isinstance(items, list):
        raise BenchError(f"{path}: expected a JSON list of questions, got {type(items).__name__}")
    if not items:
        raise BenchError(f"{path}: the list of questions is empty")
    images = ImageSource.find(DATASET, root, ("imgs",), ("imgs.zip",), required=check_images)
    out: list[Sample] = []
    seen: set[str] = set()
    for k, item in enumerate(items):
        where = f"{path} item {k}"
        qid = text_field(item, "qid", where)
        where = f"{path} qid {qid}"
        if qid in seen:
            raise BenchError(f"{where}: duplicate qid")
        seen.add(qid)
        lang = text_field(item, "q_lang", where).lower()
        if lang not in ("en", "zh"):
            raise BenchError(f"{where}: q_lang {lang!r} is not en or zh")
        answer_type = answer_type_of(text_field(item, "answer_type", where), where)
        img_name = text_field(item, "img_name", where).replace("\\", "/")
        question = text_field(item, "question", where)
        answer = text_field(item, "answer", where)
        if language != "all" and lang != language:
            continue
        meta: dict[str, Any] = {
            "qid": qid,
            "q_lang": lang,
            "img_id": str(item.get("img_id", "")).strip(),
            "img_name": img_name,
            "location": str(item.get("location") or "").strip(),
            "modality": str(item.get("modality") or "").strip(),
            "content_type": str(item.get("content_type") or "").strip(),
            "base_type": str(item.get("base_type") or "").strip(),
            "triple": list(item["triple"]) if isinstance(item.get("triple"), list) else [],
            "format": "official",
        }
        out.append(
            Sample(
                id=f"{DATASET}-{qid}",
                dataset=DATASET,
                split=split,
                images=[images.ref(img_name)],
                question=question,
                answer=answer,
                answer_type=answer_type,
                meta=meta,
            )
        )
    return out


def _load_hf(root: Path, split: str, language: str) -> list[Sample]:
    import pyarrow.parquet as pq

    from bench.data.hf_parquet import parquet_files

    shards = parquet_files(root, split)
    names = set(pq.ParquetFile(shards[0]).schema_arrow.names) if shards else set()
    extra = tuple(c for c in ("q_lang", "answer_type", "qid") if c in names)
    data = read_parquet_split(root, split, DATASET, ("question", "answer", *extra))
    out = []
    for i, (row, loc) in enumerate(zip(data.rows, data.locations, strict=True)):
        where = f"{loc[0]} row {loc[1]}"
        lang = str(row.get("q_lang") or "en").strip().lower()
        if language != "all" and lang != language:
            continue
        answer = text_field(row, "answer", where)
        answer_type = answer_type_of(row["answer_type"], where) if row.get("answer_type") else closed_if_yes_no(answer)
        qid = str(row.get("qid") or "").strip()
        out.append(
            Sample(
                id=f"{DATASET}-{qid}" if qid else f"{DATASET}-hf-{split}-{i:05d}",
                dataset=DATASET,
                split=split,
                images=[parquet_ref(DATASET, loc, data.image_column)],
                question=text_field(row, "question", where),
                answer=answer,
                answer_type=answer_type,
                meta={"format": "hf", "q_lang": lang, "shard": loc[0].name, "row": loc[1]},
            )
        )
    return out


def check(root: str | Path, **options: Any) -> CheckReport:
    return check_dataset(DATASET, Path(root), load, SPLITS, **options)
