"""``ms_cxr``: MS-CXR phrase grounding (Microsoft, on MIMIC-CXR-JPG images).

The PhysioNet download holds one CSV (and a COCO-style JSON we do not need)::

    <root>/MS_CXR_Local_Alignment_v1.0.0.csv   (or v1.1.0, which adds a split column)
        dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height[,split]

``path`` is relative to the MIMIC-CXR-JPG folder (``files/p15/p15.../s.../<dicom_id>.jpg``); that
folder is option ``mimic_root``, by default ``<root>`` itself when it has ``files/``, else the
sibling ``../mimic_cxr`` (the ``mimic_cxr`` dataset's folder under the same data root). Boxes are
``x, y, w, h`` in pixels of the original image (``image_width`` × ``image_height``).

Several rows with the same ``(dicom_id, label_text)`` are several boxes of one phrase: one
``Sample`` per phrase with all its boxes (``Box.label`` = the category), the phrase in
``meta["phrase"]``, the category (one of 8) in ``meta["category"]`` and ``labels`` =
``{category: 1}``. A box reaching outside its image, a non-positive size, a category outside the
eight, or a path that does not name the row's dicom_id is an error naming the row.

Splits: the whole set is the evaluation set (``test``), as in BioViL, MedKLIP and LGDEA. With
``official_split=True`` the v1.1.0 ``split`` column (train / val / test) is used instead.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.common import CheckReport, image_ref, read_table
from bench.data.mimic_cxr import sampled_image_problems
from bench.interfaces import BenchError, Box, Sample

DATASET = "ms_cxr"
CATEGORIES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Lung Opacity",
    "Edema",
    "Pneumonia",
    "Pneumothorax",
    "Pleural Effusion",
)
COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "category_name",
    "label_text",
    "path",
    "x",
    "y",
    "w",
    "h",
    "image_width",
    "image_height",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
OFFICIAL_SPLIT = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
BOX_TOLERANCE = 1.0  # pixels a box may overhang (rounding in the annotation tool)

OBTAIN = (
    "MS-CXR from PhysioNet (credentialed access): https://physionet.org/content/ms-cxr/ ; its images are "
    "those of MIMIC-CXR-JPG (https://physionet.org/content/mimic-cxr-jpg/), read from the mimic_cxr folder"
)

_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)")


def annotation_file(root: Path) -> Path:
    """The newest ``MS_CXR_Local_Alignment_v*.csv`` in ``root``."""
    found = sorted(root.glob("MS_CXR_Local_Alignment_v*.csv"))
    if not found:
        raise BenchError(
            f"{root}: missing MS_CXR_Local_Alignment_v1.1.0.csv (or v1.0.0): the MS-CXR annotation table. {OBTAIN}"
        )

    def version(p: Path) -> tuple[int, ...]:
        m = _VERSION.search(p.name)
        return tuple(int(g) for g in m.groups()) if m else (0, 0, 0)

    return max(found, key=version)


def mimic_folder(root: Path, mimic_root: str | Path | None) -> Path:
    """Where ``files/pXX/...`` lives (see the module docstring)."""
    if mimic_root is not None:
        path = Path(mimic_root).expanduser()
        if not (path / "files").is_dir():
            raise BenchError(f"{path}: no files/ folder; mimic_root must be the MIMIC-CXR-JPG folder (holding files/)")
        return path
    for cand in (root, root.parent / "mimic_cxr"):
        if (cand / "files").is_dir():
            return cand
    raise BenchError(
        f"{root}: MS-CXR images not found: expected the MIMIC-CXR-JPG folder (with files/pXX/...) at "
        f"{root.parent / 'mimic_cxr'} or files/ inside {root}, or give the option mimic_root"
    )


def _number(value: str, path: Path, row: int, col: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise BenchError(f"{path}: row {row}: {col} {value!r} is not a number") from None
    if not np.isfinite(out):
        raise BenchError(f"{path}: row {row}: {col} {value!r} is not a finite number")
    return out


def read_phrases(root: Path, *, official_split: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """``(csv path, phrases)``; each phrase: dicom_id, path, phrase, category, size, boxes, split."""
    path = annotation_file(root)
    frame = read_table(path, COLUMNS)
    if official_split and "split" not in frame.columns:
        raise BenchError(f"{path}: no split column (v1.0.0); official_split needs MS_CXR_Local_Alignment_v1.1.0.csv")
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    cols = {c: frame[c].tolist() for c in frame.columns}
    for i in range(len(frame)):
        row = i + 2
        dicom, phrase, category, rel = (cols[c][i] for c in ("dicom_id", "label_text", "category_name", "path"))
        if not dicom or not phrase:
            raise BenchError(f"{path}: row {row}: empty dicom_id or label_text")
        if category not in CATEGORIES:
            raise BenchError(
                f"{path}: row {row}: category_name {category!r} is not one of the 8 MS-CXR categories "
                f"({', '.join(CATEGORIES)})"
            )
        if not rel.startswith("files/") or Path(rel).stem != dicom:
            raise BenchError(
                f"{path}: row {row}: path {rel!r} should be files/pXX/p<subject>/s<study>/{dicom}.jpg (MIMIC-CXR-JPG)"
            )
        x, y, w, h, width, height = (_number(cols[c][i], path, row, c) for c in COLUMNS[4:])
        if width <= 0 or height <= 0:
            raise BenchError(f"{path}: row {row}: image size {width:g} x {height:g} is not positive")
        if w <= 0 or h <= 0:
            raise BenchError(f"{path}: row {row}: box {x:g},{y:g},{w:g},{h:g} has a non-positive width or height")
        tol = BOX_TOLERANCE
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise BenchError(
                f"{path}: row {row}: box x={x:g} y={y:g} w={w:g} h={h:g} lies outside the image "
                f"({width:g} x {height:g} pixels) of {dicom}; boxes must be in original-image pixels"
            )
        split = "test"
        if official_split:
            raw = cols["split"][i].lower()
            if raw not in OFFICIAL_SPLIT:
                raise BenchError(f"{path}: row {row}: split {cols['split'][i]!r} is not train, val or test")
            split = OFFICIAL_SPLIT[raw]
        key = (dicom, phrase)
        item = groups.get(key)
        if item is None:
            item = groups[key] = {
                "dicom_id": dicom,
                "path": rel,
                "phrase": phrase,
                "category": category,
                "size": (width, height),
                "boxes": [],
                "split": split,
                "row": row,
            }
        elif item["size"] != (width, height) or item["category"] != category:
            raise BenchError(
                f"{path}: row {row}: phrase {phrase!r} of {dicom} has a different image size or category than row "
                f"{item['row']}"
            )
        item["boxes"].append(Box(category, x, y, w, h))
    return path, list(groups.values())


def phrase_id(dicom_id: str, phrase: str) -> str:
    return f"{dicom_id}-{hashlib.sha256(phrase.encode()).hexdigest()[:10]}"


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise BenchError(f"{DATASET}: option {name} must be true or false, got {value!r}")


def _root(root: str | Path | None) -> Path:
    if root is None:
        raise BenchError(f"{DATASET} needs its folder: give --root DIR or set BENCH_DATA_ROOT. {OBTAIN}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise BenchError(f"{path}: no such folder (the MS-CXR download). {OBTAIN}")
    return path


def load(root: str | Path | None, split: str = "test", **options: Any) -> list[Sample]:
    """One sample per (image, phrase), in file order."""
    valid = {"mimic_root", "official_split"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise BenchError(f"{DATASET}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    official = _bool("official_split", options.get("official_split", False))
    allowed = SPLITS if official else ("test",)
    if split not in allowed:
        raise BenchError(
            f"{DATASET} has no split {split!r}; valid: {', '.join(allowed)}"
            + ("" if official else " (the whole set is the evaluation set; official_split=true uses v1.1.0's split)")
        )
    base = _root(root)
    csv_path, phrases = read_phrases(base, official_split=official)
    images = mimic_folder(base, options.get("mimic_root"))
    out = []
    for item in phrases:
        if item["split"] != split:
            continue
        width, height = item["size"]
        out.append(
            Sample(
                id=phrase_id(item["dicom_id"], item["phrase"]),
                dataset=DATASET,
                split=split,
                images=[image_ref(images / item["path"], key=f"mimic_cxr/{item['dicom_id']}")],
                labels={item["category"]: 1},
                boxes=list(item["boxes"]),
                meta={
                    "dicom_id": item["dicom_id"],
                    "phrase": item["phrase"],
                    "category": item["category"],
                    "image_width": int(width),
                    "image_height": int(height),
                    "annotation_file": csv_path.name,
                },
            )
        )
    return out


def check(root: str | Path, *, sample_images: int = 20, **options: Any) -> CheckReport:
    """Parse the annotation table (every box checked), find the images, and open a spread sample,
    comparing each image's pixel size with the table's image_width x image_height."""
    from PIL import Image

    report = CheckReport(DATASET)
    base = Path(root).expanduser()
    if not base.is_dir():
        report.problems.append(f"{base}: no such folder. {OBTAIN}")
        return report
    try:
        samples = load(base, "test", **options)
    except BenchError as exc:
        report.problems.append(str(exc))
        return report
    report.splits["test"] = len(samples)
    problems = sampled_image_problems(samples, sample_images, "MS-CXR")
    report.problems.extend(problems)
    if problems or not samples:
        return report
    picks = sorted({int(i) for i in np.linspace(0, len(samples) - 1, num=min(sample_images, len(samples)))})
    for i in picks:
        s = samples[i]
        try:
            with Image.open(str(s.image.path)) as im:
                size = im.size
        except OSError as exc:
            report.problems.append(f"cannot read image {s.image.path}: {exc}")
            continue
        expected = (s.meta["image_width"], s.meta["image_height"])
        if size != expected:
            report.problems.append(
                f"{s.image.path}: image is {size[0]} x {size[1]} pixels but the MS-CXR table says "
                f"{expected[0]} x {expected[1]}: the boxes need the original full-size MIMIC-CXR-JPG images"
            )
    return report
