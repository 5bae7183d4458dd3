"""PMC-VQA (Zhang et al. 2023): multiple-choice VQA on PubMed Central figures, one Sample per question.

The hub repository ``xmcmic/PMC-VQA`` holds two versions, unpacked as is::

    version 1: train.csv, test.csv, test_clean.csv     images.zip   -> images/<Figure_path>
    version 2: train_2.csv, test_2.csv                 images_2.zip -> figures/<Figure_path>

Version 1 header: ``Figure_path,Question,Answer,Choice A,Choice B,Choice C,Choice D,Answer_label``
(``Answer`` is the answer text, ``Answer_label`` its letter; early copies spell ``Anwser``).
Version 2 header: ``index,Figure_path,Caption,Question,Choice A,Choice B,Choice C,Choice D,Answer,split``
(``Answer`` is the letter; the trailing ``split`` column and the ``Caption`` are new; 33,430 test
questions). Choices read ``A:Diffuse uptake pattern`` or `` A: Green ``: the letter prefix is removed.
The reader reads the header, not column positions: an ``Answer_label`` column means version-1
semantics, otherwise ``Answer`` must be a letter A-D.

Sample: ``answer`` = the text of the correct choice, ``answer_type`` = ``closed`` (every question is
multiple choice; the VQA metrics decide closed/open from the gold text, MultiMedEval's rule),
``meta["choices"]`` = {letter: text}, ``meta["answer_label"]`` = the letter. Options:
``version`` (``"auto"``: 2 when its CSVs are there, else 1), ``test_set`` (``"test"`` or, version 1
only, ``"clean"`` = ``test_clean.csv``, the 2,000 human-checked questions), ``invalid_rows``
(``"error"``, or ``"skip"`` to drop rows without a valid A-D answer; the dropped row numbers are
recorded in ``meta["skipped_rows"]``). No validation split. Images come from the unpacked folder or,
when absent, straight from the zip.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.data.common import CheckReport, ids_hash, read_table
from bench.data.hf_parquet import ImageSource, check_dataset, check_split
from bench.interfaces import BenchError, Sample

DATASET = "pmc_vqa"
SPLITS = ("train", "test")
LETTERS = ("A", "B", "C", "D")
CHOICE_COLUMNS = tuple(f"Choice {x}" for x in LETTERS)
FILES = {
    ("1", "train", "test"): "train.csv",
    ("1", "test", "test"): "test.csv",
    ("1", "test", "clean"): "test_clean.csv",
    ("2", "train", "test"): "train_2.csv",
    ("2", "test", "test"): "test_2.csv",
}
# (folders, archive, fallback folders) per version: a copy holding both versions keeps images/ for
# version 1 and figures/ (or images_2.zip) for version 2
IMAGES = {
    "1": (("images",), ("images.zip",), ("figures",)),
    "2": (("figures", "images_2"), ("images_2.zip",), ("images",)),
}
_PREFIX = re.compile(r"^\s*([A-D])\s*[:.)]\s*")


def _version(root: Path, version: Any) -> str:
    v = str(version).strip().lower()
    if v in ("1", "2"):
        return v
    if v != "auto":
        raise BenchError(f"{DATASET}: version must be 1, 2 or auto, got {version!r}")
    if (root / "test_2.csv").is_file() or (root / "train_2.csv").is_file():
        return "2"
    if any((root / n).is_file() for n in ("train.csv", "test.csv", "test_clean.csv")):
        return "1"
    raise BenchError(
        f"{root}: found no PMC-VQA CSV (version 1: train.csv, test.csv; version 2: train_2.csv, test_2.csv)"
    )


def _choice_text(cell: str, letter: str) -> str:
    m = _PREFIX.match(cell)
    return cell[m.end() :].strip() if m and m.group(1) == letter else cell.strip()


def load(
    root: str | Path,
    split: str,
    *,
    version: Any = "auto",
    test_set: str = "test",
    invalid_rows: str = "error",
    check_images: bool = True,
) -> list[Sample]:
    """Questions of one split (``train`` or ``test``)."""
    root = Path(root)
    check_split(DATASET, split, SPLITS)
    if test_set not in ("test", "clean"):
        raise BenchError(f"{DATASET}: test_set must be 'test' or 'clean', got {test_set!r}")
    if invalid_rows not in ("error", "skip"):
        raise BenchError(f"{DATASET}: invalid_rows must be 'error' or 'skip', got {invalid_rows!r}")
    v = _version(root, version)
    which = test_set if split == "test" else "test"
    if (v, split, which) not in FILES:
        raise BenchError(f"{DATASET}: version {v} has no {test_set!r} test set (test_clean.csv is version 1 only)")
    path = root / FILES[(v, split, which)]
    if not path.is_file():
        raise BenchError(f"{root}: missing {path.name} (PMC-VQA version {v} {split} questions)")
    frame = read_table(path)
    cols = set(frame.columns)
    answer_col = "Answer" if "Answer" in cols else ("Anwser" if "Anwser" in cols else None)
    required = ["Figure_path", "Question", *CHOICE_COLUMNS]
    missing = [c for c in required if c not in cols]
    if answer_col is None:
        missing.append("Answer")
    if missing:
        expected = (
            "Figure_path,Question,Answer,Choice A,Choice B,Choice C,Choice D,Answer_label"
            if v == "1"
            else "index,Figure_path,Caption,Question,Choice A,Choice B,Choice C,Choice D,Answer,split"
        )
        raise BenchError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the header {expected} "
            f"(found {', '.join(map(str, frame.columns))})"
        )
    label_col = "Answer_label" if "Answer_label" in cols else answer_col
    folders, archives, fallback = IMAGES[v]
    images = ImageSource.find(DATASET, root, folders, archives, fallback=fallback, required=check_images)
    out: list[Sample] = []
    skipped: list[int] = []
    seen: set[str] = set()
    for i, row in enumerate(frame.to_dict("records")):
        line = i + 2  # 1-based, after the header
        where = f"{path} line {line}"
        label = str(row[label_col]).strip().upper()
        label = _PREFIX.match(label + ":").group(1) if _PREFIX.match(label + ":") else label
        figure = str(row["Figure_path"]).strip()
        question = str(row["Question"]).strip()
        problem = None
        if label not in LETTERS:
            problem = f"answer {row[label_col]!r} in column {label_col} is not a letter A-D"
        elif not figure:
            problem = "Figure_path is empty"
        elif not question:
            problem = "Question is empty"
        choices = {x: _choice_text(str(row[f"Choice {x}"]), x) for x in LETTERS}
        if problem is None and not choices[label]:
            problem = f"the correct choice {label} is empty"
        if problem is not None:
            if invalid_rows == "skip":
                skipped.append(line)
                continue
            raise BenchError(f"{where}: {problem} (invalid_rows='skip' drops such rows)")
        index = str(row.get("index", "")).strip() if v == "2" else ""
        ident = f"{DATASET}-v2-{index}" if index else f"{DATASET}-v{v}-{path.stem}-{line - 2:06d}"
        if ident in seen:  # a repeated index keeps both rows under distinct ids
            ident = f"{ident}~{line}"
        seen.add(ident)
        meta: dict[str, Any] = {
            "choices": choices,
            "answer_label": label,
            "figure_path": figure,
            "version": int(v),
            "file": path.name,
            "line": line,
        }
        if answer_col != label_col:
            meta["answer_text_csv"] = str(row[answer_col]).strip()
        if "Caption" in cols:
            meta["caption"] = str(row["Caption"]).strip()
        if "split" in cols:
            meta["source_split"] = str(row["split"]).strip()
        out.append(
            Sample(
                id=ident,
                dataset=DATASET,
                split=split,
                images=[images.ref(figure)],
                question=question,
                answer=choices[label],
                answer_type="closed",
                meta=meta,
            )
        )
    if skipped:
        record = {"skipped_rows": len(skipped), "skipped_rows_hash": ids_hash(map(str, skipped))}
        for s in out:
            s.meta.update(record)
    return out


def check(root: str | Path, **options: Any) -> CheckReport:
    return check_dataset(DATASET, Path(root), load, SPLITS, **options)
