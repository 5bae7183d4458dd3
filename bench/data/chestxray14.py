"""NIH ChestX-ray14 (``chestxray14``): 112,120 frontal radiographs of 30,805 patients, 14 findings.

Files read (as the NIH Box / Kaggle download unpacks)::

    Data_Entry_2017_v2020.csv   (or the older Data_Entry_2017.csv; .gz accepted)
    BBox_List_2017.csv          optional: 984 boxes on 880 images
    train_val_list.txt          86,524 names
    test_list.txt               25,596 names
    images/*.png                or images_001/images/*.png ... images_012/images/*.png

Labels: the 14 findings are text-mined and exhaustive, so every image has every finding as 1 or 0
(no uncertain, no blank); ``No Finding`` is 1 only when nothing is listed. Names are the file's,
except two documented fixes (:data:`NAME_FIXES`): ``Pleural_Thickening`` → ``Pleural Thickening``
and, in the box file, ``Infiltrate`` → ``Infiltration`` (the box file's spelling of the same class).

Boxes: ``BBox_List_2017.csv`` gives ``x, y, w, h`` in the pixels of the released 1024×1024 PNGs
(every released image is 1024×1024; the largest box edge in the file is at 1022.05), so boxes are
checked against ``image_size`` (1024). ``OriginalImage[Width,Height]`` is the size of the source
image *before* NIH downscaled it, kept as ``meta["original_size"]`` — it is not the frame of the
boxes.

Splits (``split_scheme``):

- ``"official"`` (default): ``test`` = ``test_list.txt``; ``train``/``val`` = ``train_val_list.txt``
  split by **patient** with ``val_fraction`` (default 0.1 of the patients) and ``seed`` (default 0).
- ``"chexnet"``: the 70/10/20 patient split of the CheXNet re-implementation
  (github.com/arnoweng/CheXNet, ``ChestX-ray14/labels/{train,val,test}_list.txt``: 78,468 / 11,219 /
  22,433 images) — LLaVA-RadZ's "official test set of 22,433 images" is this list. Put the three
  files in ``<root>/chexnet_splits/`` (``split_lists`` option to change the folder); only each
  line's first token (the image name) is used, labels always come from ``Data_Entry``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data import subsets
from bench.data.common import (
    CheckReport,
    count_splits,
    find_file,
    image_ref,
    parse_float,
    read_table,
    seeded_split,
)
from bench.interfaces import BenchError, Box, Sample

DATASET = "chestxray14"
SPLITS = ("train", "val", "test")
FILE_NAMES = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Effusion",
    "Infiltration": "Infiltration",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
    "Pleural_Thickening": "Pleural Thickening",
    "Hernia": "Hernia",
}
CLASSES: tuple[str, ...] = tuple(FILE_NAMES.values())  # the 14 findings, as Sample.labels keys
NO_FINDING = "No Finding"
NAME_FIXES = {"Pleural_Thickening": "Pleural Thickening", "Infiltrate": "Infiltration"}

ENTRY_FILES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
)
BBOX_FILES = ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")
ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
BBOX_COLUMNS = ("Image Index", "Finding Label")
LIST_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
CHEXNET_FILES = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}
SPLIT_SCHEMES = ("official", "chexnet")
IMAGE_SIZE = 1024


@dataclass
class Entry:
    name: str
    labels: dict[str, int | None]
    meta: dict[str, Any]


# --------------------------------------------------------------------------- files


_CACHE: dict[tuple[str, int, int], dict[str, Entry]] = {}


def read_entries(root: Path) -> tuple[dict[str, Entry], Path]:
    """``Data_Entry_2017*.csv`` → {image name: Entry} (parsed once per file version: loading the
    three splits reads the 112,120 rows once)."""
    path = find_file(root, *ENTRY_FILES, what="the ChestX-ray14 label file")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _parse_entries(path)
    return _CACHE[key], path


def _parse_entries(path: Path) -> dict[str, Entry]:
    frame = read_table(path, ENTRY_COLUMNS)
    cols = list(frame.columns)
    width_col = next((c for c in cols if c.startswith("OriginalImage[")), None)
    height_col = cols[cols.index(width_col) + 1] if width_col and cols.index(width_col) + 1 < len(cols) else None
    spacing_col = next((c for c in cols if c.startswith("OriginalImagePixelSpacing")), None)
    out: dict[str, Entry] = {}
    parsed: dict[str, dict[str, int | None]] = {}  # ~800 distinct 'Finding Labels' strings
    column = {c: frame[c].tolist() for c in cols}
    n = len(frame)
    empty = [""] * n
    sizes = list(zip(column[width_col], column[height_col], strict=True)) if width_col and height_col else None
    spacing_next = cols.index(spacing_col) + 1 if spacing_col else len(cols)
    spacing = (
        list(zip(column[spacing_col], column[cols[spacing_next]], strict=True))
        if spacing_col and spacing_next < len(cols)
        else None
    )
    rows = zip(
        column["Image Index"],
        column["Finding Labels"],
        column["Patient ID"],
        column["View Position"],
        column.get("Follow-up #", empty),
        column.get("Patient Age", empty),
        column.get("Patient Gender", empty),
        strict=True,
    )
    for i, (name, findings, patient, view, follow_up, age, sex) in enumerate(rows):
        if not name:
            raise BenchError(f"{path}, line {i + 2}: empty 'Image Index'")
        if name in out:
            raise BenchError(f"{path}, line {i + 2}: image {name!r} is listed twice")
        if not patient:
            raise BenchError(f"{path}, line {i + 2}: empty 'Patient ID' for {name}")
        labels = parsed.get(findings)
        if labels is None:
            labels = parsed[findings] = _parse_findings(findings, f"{path}, line {i + 2}")
        meta: dict[str, Any] = {
            "patient_id": patient,
            "view": view,
            "follow_up": follow_up,
            "age": age,
            "sex": sex,
            "finding_labels": findings,
        }
        if sizes is not None:
            try:
                meta["original_size"] = [int(float(sizes[i][0])), int(float(sizes[i][1]))]
            except ValueError:
                raise BenchError(
                    f"{path}, line {i + 2}: OriginalImage[Width,Height] {sizes[i][0]!r},{sizes[i][1]!r} is not a size"
                ) from None
        if spacing is not None:
            meta["pixel_spacing"] = list(spacing[i])
        out[name] = Entry(name, labels, meta)
    return out


def _parse_findings(findings: str, where: str) -> dict[str, int | None]:
    """``Cardiomegaly|Emphysema`` → every finding 0/1 plus ``No Finding``."""
    found = [t.strip() for t in findings.split("|")]
    if not findings or any(not t for t in found):
        raise BenchError(f"{where}: empty finding in 'Finding Labels' {findings!r}")
    unknown = [t for t in found if t not in FILE_NAMES and t != NO_FINDING]
    if unknown:
        known = ", ".join([*FILE_NAMES, NO_FINDING])
        raise BenchError(f"{where}: unknown finding {unknown[0]!r} in 'Finding Labels'; expected {known}")
    if NO_FINDING in found and len(found) > 1:
        raise BenchError(f"{where}: 'No Finding' listed together with findings ({findings!r})")
    present = {FILE_NAMES[t] for t in found if t != NO_FINDING}
    labels: dict[str, int | None] = {c: int(c in present) for c in CLASSES}
    labels[NO_FINDING] = int(not present)
    return labels


def read_boxes(root: Path, names: Mapping[str, Any] | None, image_size: int = IMAGE_SIZE) -> dict[str, list[Box]]:
    """``BBox_List_2017.csv`` → {image name: [Box]} (empty when the file is absent)."""
    try:
        path = find_file(root, *BBOX_FILES)
    except BenchError:
        return {}
    frame = read_table(path, BBOX_COLUMNS)
    cols = list(frame.columns)
    start = cols.index("Finding Label") + 1
    box_cols = cols[start : start + 4]
    if len(box_cols) < 4 or not box_cols[0].lower().startswith("bbox"):
        raise BenchError(
            f"{path}: expected the header 'Image Index,Finding Label,Bbox [x,y,w,h],,,' "
            f"(four box columns after 'Finding Label'), found {','.join(cols)}"
        )
    out: dict[str, list[Box]] = {}
    for i, row in enumerate(frame.itertuples(index=False, name=None), start=2):
        rec = dict(zip(cols, row, strict=True))
        where = f"{path}, line {i}"
        name, raw_label = rec["Image Index"], rec["Finding Label"]
        label = NAME_FIXES.get(raw_label, FILE_NAMES.get(raw_label, raw_label))
        if label not in CLASSES:
            raise BenchError(f"{where}: unknown finding {raw_label!r}; expected one of {', '.join(CLASSES)}")
        if names is not None and name not in names:
            raise BenchError(f"{where}: image {name!r} is not in the label file (Data_Entry_2017*.csv)")
        x, y, w, h = (parse_float(rec[c], where=f"{where}, column {c!r}") for c in box_cols)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image_size or y + h > image_size:
            raise BenchError(
                f"{where}: box x={x:g} y={y:g} w={w:g} h={h:g} of {name} lies outside the "
                f"{image_size}x{image_size} image (expected 0 <= x, x+w <= {image_size}, w > 0, same for y/h)"
            )
        out.setdefault(name, []).append(Box(label, x, y, w, h))
    return out


def read_list(path: Path, names: Mapping[str, Any] | None) -> list[str]:
    """A split list: one image name per line (first token; blank lines ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot read ({exc})") from None
    out: list[str] = []
    seen: set[str] = set()
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name = line.split()[0]
        if names is not None and name not in names:
            raise BenchError(
                f"{path}, line {i}: {name!r} is not an image of the label file (Data_Entry_2017*.csv); "
                "expected one image file name per line"
            )
        if name in seen:
            raise BenchError(f"{path}, line {i}: {name!r} is listed twice")
        seen.add(name)
        out.append(name)
    if not out:
        raise BenchError(f"{path}: the list is empty; expected one image file name per line")
    return out


def index_images(root: Path) -> dict[str, Path]:
    """{file name: path} over ``images/`` and ``images_0NN/images/`` (listed once)."""
    folders: list[Path] = []
    if (root / "images").is_dir():
        folders.append(root / "images")
    for sub in sorted(root.glob("images_*")):
        if (sub / "images").is_dir():
            folders.append(sub / "images")
        elif sub.is_dir():
            folders.append(sub)
    out: dict[str, Path] = {}
    for folder in folders:
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name not in out and entry.name.lower().endswith(".png"):
                        out[entry.name] = Path(entry.path)
        except OSError as exc:
            raise BenchError(f"{folder}: cannot list the image folder ({exc})") from None
    return out


# --------------------------------------------------------------------------- splits


def split_names(
    root: Path,
    entries: Mapping[str, Entry],
    *,
    split_scheme: str = "official",
    val_fraction: float = 0.1,
    seed: int = 0,
    split_lists: str = "chexnet_splits",
) -> dict[str, list[str]]:
    if split_scheme == "chexnet":
        folder = root / split_lists
        return {s: read_list(folder / CHEXNET_FILES[s], entries) for s in SPLITS}
    if split_scheme != "official":
        raise BenchError(f"chestxray14: unknown split_scheme {split_scheme!r}; valid: {', '.join(SPLIT_SCHEMES)}")
    if not 0.0 <= val_fraction < 1.0:
        raise BenchError(f"chestxray14: val_fraction must be in [0, 1), got {val_fraction!r}")
    trainval = read_list(root / LIST_FILES["train_val"], entries)
    test = read_list(root / LIST_FILES["test"], entries)
    both = set(trainval) & set(test)
    if both:
        raise BenchError(
            f"{root / LIST_FILES['test']}: {len(both)} image(s) are also in {LIST_FILES['train_val']} "
            f"(e.g. {sorted(both)[0]}); the official lists are disjoint"
        )
    patients = {entries[n].meta["patient_id"] for n in trainval}
    assign = seeded_split(patients, {"train": 1.0 - val_fraction, "val": val_fraction}, seed)
    return {
        "train": [n for n in trainval if assign[entries[n].meta["patient_id"]] == "train"],
        "val": [n for n in trainval if assign[entries[n].meta["patient_id"]] == "val"],
        "test": test,
    }


# --------------------------------------------------------------------------- public API


def load(
    root: str | Path,
    split: str,
    *,
    split_scheme: str = "official",
    val_fraction: float = 0.1,
    seed: int = 0,
    split_lists: str = "chexnet_splits",
    check_images: bool = True,
    image_size: int = IMAGE_SIZE,
    **options: Any,
) -> list[Sample]:
    """Samples of one split (``train``/``val``/``test``); ``train_fraction`` subsets the train split
    (see :mod:`bench.data.subsets`). ``check_images=False`` skips looking for the PNG files (paths
    then point to ``images/<name>``)."""
    sub = subsets.pop_options(options)
    if options:
        raise BenchError(f"chestxray14: unknown option(s) {sorted(options)}")
    if split not in SPLITS:
        raise BenchError(f"chestxray14 has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = Path(root)
    entries, entry_path = read_entries(root)
    boxes = read_boxes(root, entries, image_size)
    names = split_names(
        root, entries, split_scheme=split_scheme, val_fraction=val_fraction, seed=seed, split_lists=split_lists
    )[split]
    paths = _resolve_images(root, names, check_images)
    samples = []
    for name in names:
        entry = entries[name]
        meta = {
            **entry.meta,
            "split_scheme": split_scheme,
            "split_seed": seed,
            "label_file": entry_path.name,
        }
        samples.append(
            Sample(
                id=name,
                dataset=DATASET,
                split=split,
                images=[image_ref(paths[name], key=f"{DATASET}/{name}")],
                labels=dict(entry.labels),
                boxes=list(boxes.get(name, [])),
                meta=meta,
            )
        )
    return subsets.apply(samples, split, sub, target_labels=(NO_FINDING,))


def _resolve_images(root: Path, names: list[str], check: bool) -> dict[str, Path]:
    if not check:
        return {n: root / "images" / n for n in names}
    index = index_images(root)
    if not index:
        raise BenchError(
            f"{root}: no PNG images found; expected images/*.png or images_001/images/*.png ... images_012/images/*.png"
        )
    missing = [n for n in names if n not in index]
    if missing:
        raise BenchError(
            f"{root}: {len(missing)} of {len(names)} listed images are missing from images/ and "
            f"images_0NN/images/ (e.g. {missing[0]}); unpack every images_*.tar.gz"
        )
    return {n: index[n] for n in names}


def check(root: str | Path, **options: Any) -> CheckReport:
    """Validate every file (problems collected per file), count each split, open a few images."""
    root = Path(root)
    report = CheckReport(DATASET)
    entries: dict[str, Entry] | None = None
    try:
        entries, _ = read_entries(root)
    except BenchError as exc:
        report.problems.append(str(exc))
    try:
        read_boxes(root, entries, options.get("image_size", IMAGE_SIZE))
    except BenchError as exc:
        report.problems.append(str(exc))
    if options.get("split_scheme", "official") == "official":
        for file in LIST_FILES.values():
            try:
                read_list(root / file, entries)
            except BenchError as exc:
                report.problems.append(str(exc))
    if report.problems:
        return report
    return count_splits(report, root, load, SPLITS, sample_images=5, stop_at_error=True, **options)
