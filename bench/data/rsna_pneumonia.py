"""RSNA Pneumonia Detection Challenge (``rsna_pneumonia``): 26,684 radiographs, pneumonia boxes.

Files read (the Kaggle competition download, unpacked)::

    stage_2_train_labels.csv          patientId,x,y,width,height,Target (.csv.zip accepted)
    stage_2_detailed_class_info.csv   patientId,class  (optional; kept as meta["class"])
    stage_2_train_images/<patientId>.dcm

One row per box: a positive patient (``Target`` 1) has one row per opacity box, a negative one a
single row with blank box cells (30,227 rows, 26,684 patients, 6,012 positive). One sample per
patient = one DICOM image; label ``Pneumonia`` = ``Target`` (1/0, no uncertain); boxes in the
pixels of the 1024×1024 DICOM (checked against ``image_size``). ``class`` is ``Lung Opacity``,
``No Lung Opacity / Not Normal`` or ``Normal``.

There is no labelled test split, so splits are seeded by patient (``seed``, default 0):
``split_scheme="llava_radz"`` (default) 0.6/0.2/0.2 as in LLaVA-RadZ; ``"gloria"`` 0.7/0.15/0.15 as in
GLoRIA / MGCA. The scheme and seed are recorded in every sample's meta.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.data import subsets
from bench.data.common import (
    CheckReport,
    count_splits,
    dicom_ref,
    find_file,
    parse_float,
    read_table,
    seeded_split,
)
from bench.interfaces import BenchError, Box, Sample

DATASET = "rsna_pneumonia"
SPLITS = ("train", "val", "test")
LABEL = "Pneumonia"
LABEL_FILES = ("stage_2_train_labels.csv", "stage_2_train_labels.csv.zip", "stage_2_train_labels.csv.gz")
CLASS_FILES = ("stage_2_detailed_class_info.csv", "stage_2_detailed_class_info.csv.zip")
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_COLUMNS = ("patientId", "class")
CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
IMAGE_DIR = "stage_2_train_images"
IMAGE_SIZE = 1024
SPLIT_SCHEMES: dict[str, dict[str, float]] = {
    "llava_radz": {"train": 0.6, "val": 0.2, "test": 0.2},
    "gloria": {"train": 0.7, "val": 0.15, "test": 0.15},
}


def read_labels(root: Path, image_size: int = IMAGE_SIZE) -> tuple[dict[str, dict[str, Any]], Path]:
    """{patientId: {"target": 0/1, "boxes": [Box]}} in file order."""
    path = find_file(root, *LABEL_FILES, what="the RSNA Pneumonia label file")
    frame = read_table(path, LABEL_COLUMNS)
    out: dict[str, dict[str, Any]] = {}
    rows = zip(*(frame[c].tolist() for c in LABEL_COLUMNS), strict=True)
    for i, (pid, x, y, w, h, target) in enumerate(rows, start=2):
        where = f"{path}, line {i}"
        if not pid:
            raise BenchError(f"{where}: empty patientId")
        if target not in ("0", "1"):
            raise BenchError(f"{where}: Target {target!r} is not 0 or 1")
        rec = out.setdefault(pid, {"target": int(target), "boxes": [], "rows": 0})
        rec["rows"] += 1
        if rec["target"] != int(target):
            raise BenchError(f"{where}: patient {pid} has Target {target} here and {rec['target']} on another row")
        cells = (x, y, w, h)
        if target == "0":
            if any(cells):
                raise BenchError(f"{where}: a negative row (Target 0) must have blank x,y,width,height")
            if rec["rows"] > 1:
                raise BenchError(f"{where}: negative patient {pid} is listed more than once")
            continue
        if not all(cells):
            raise BenchError(f"{where}: a positive row (Target 1) needs x,y,width,height; found {','.join(cells)}")
        bx, by, bw, bh = (parse_float(v, where=f"{where}, column {c}") for v, c in zip(cells, LABEL_COLUMNS[1:5]))
        if bw <= 0 or bh <= 0 or bx < 0 or by < 0 or bx + bw > image_size or by + bh > image_size:
            raise BenchError(
                f"{where}: box x={bx:g} y={by:g} width={bw:g} height={bh:g} of {pid} lies outside the "
                f"{image_size}x{image_size} image"
            )
        rec["boxes"].append(Box(LABEL, bx, by, bw, bh))
    return out, path


def read_classes(root: Path, patients: dict[str, Any] | None) -> dict[str, str]:
    """{patientId: class} from the optional detailed class file ({} when absent)."""
    try:
        path = find_file(root, *CLASS_FILES)
    except BenchError:
        return {}
    frame = read_table(path, CLASS_COLUMNS)
    out: dict[str, str] = {}
    for i, (pid, cls) in enumerate(zip(frame["patientId"].tolist(), frame["class"].tolist(), strict=True), start=2):
        where = f"{path}, line {i}"
        if cls not in CLASSES:
            raise BenchError(f"{where}: class {cls!r} is not one of {', '.join(CLASSES)}")
        if pid in out and out[pid] != cls:
            raise BenchError(f"{where}: patient {pid} has class {cls!r} here and {out[pid]!r} on another row")
        if patients is not None:
            if pid not in patients:
                raise BenchError(f"{where}: patient {pid} is not in stage_2_train_labels.csv")
            if (cls == "Lung Opacity") != (patients[pid]["target"] == 1):
                raise BenchError(
                    f"{where}: patient {pid} has class {cls!r} but Target {patients[pid]['target']} "
                    "(Lung Opacity goes with Target 1, the other classes with 0)"
                )
        out[pid] = cls
    return out


def split_patients(patients: list[str], split_scheme: str, seed: int) -> dict[str, str]:
    if split_scheme not in SPLIT_SCHEMES:
        raise BenchError(f"rsna_pneumonia: unknown split_scheme {split_scheme!r}; valid: {', '.join(SPLIT_SCHEMES)}")
    return seeded_split(patients, SPLIT_SCHEMES[split_scheme], seed)


def load(
    root: str | Path,
    split: str,
    *,
    split_scheme: str = "llava_radz",
    seed: int = 0,
    check_images: bool = True,
    image_size: int = IMAGE_SIZE,
    **options: Any,
) -> list[Sample]:
    """Samples of one seeded split; ``train_fraction`` subsets the train split (stratified on
    Pneumonia). ``check_images=False`` skips listing ``stage_2_train_images/``."""
    sub = subsets.pop_options(options)
    if options:
        raise BenchError(f"rsna_pneumonia: unknown option(s) {sorted(options)}")
    if split not in SPLITS:
        raise BenchError(f"rsna_pneumonia has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = Path(root)
    patients, _ = read_labels(root, image_size)
    classes = read_classes(root, patients)
    assign = split_patients(list(patients), split_scheme, seed)
    chosen = [p for p in patients if assign[p] == split]
    if check_images:
        _check_image_files(root, chosen)
    samples = []
    for pid in chosen:
        rec = patients[pid]
        samples.append(
            Sample(
                id=pid,
                dataset=DATASET,
                split=split,
                images=[dicom_ref(root / IMAGE_DIR / f"{pid}.dcm", key=f"{DATASET}/{pid}")],
                labels={LABEL: rec["target"]},
                boxes=list(rec["boxes"]),
                meta={
                    "patient_id": pid,
                    "class": classes.get(pid),
                    "split_scheme": split_scheme,
                    "split_fractions": dict(SPLIT_SCHEMES[split_scheme]),
                    "split_seed": seed,
                },
            )
        )
    return subsets.apply(samples, split, sub, target_labels=(LABEL,))


def _check_image_files(root: Path, patients: list[str]) -> None:
    folder = root / IMAGE_DIR
    try:
        with os.scandir(folder) as it:
            present = {e.name for e in it}
    except FileNotFoundError:
        raise BenchError(f"{root}: missing folder {IMAGE_DIR}/ (the DICOM images <patientId>.dcm)") from None
    except OSError as exc:
        raise BenchError(f"{folder}: cannot list the image folder ({exc})") from None
    missing = [p for p in patients if f"{p}.dcm" not in present]
    if missing:
        raise BenchError(
            f"{folder}: {len(missing)} of {len(patients)} images are missing (e.g. {missing[0]}.dcm); "
            "expected one <patientId>.dcm per patient of stage_2_train_labels.csv"
        )


def check(root: str | Path, **options: Any) -> CheckReport:
    root = Path(root)
    report = CheckReport(DATASET)
    patients = None
    try:
        patients, _ = read_labels(root, options.get("image_size", IMAGE_SIZE))
    except BenchError as exc:
        report.problems.append(str(exc))
    try:
        read_classes(root, patients)
    except BenchError as exc:
        report.problems.append(str(exc))
    if not (root / IMAGE_DIR).is_dir():
        report.problems.append(f"{root}: missing folder {IMAGE_DIR}/ (the DICOM images <patientId>.dcm)")
    if report.problems:
        return report
    return count_splits(report, root, load, SPLITS, sample_images=5, stop_at_error=True, **options)
