"""``chexpert``: CheXpert v1.0 (Stanford), train / valid / official test set.

Read as the Stanford AIMI downloads unpack::

    <root>/CheXpert-v1.0-small/train.csv        (or CheXpert-v1.0/; <root> may also be that folder itself)
    <root>/CheXpert-v1.0-small/valid.csv
    <root>/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg
    <root>/CheXpert-v1.0/test/patient64741/study1/view1_frontal.jpg      official test images
    <root>/groundtruth.csv                       test labels (cheXpert-test-set-labels), per study

``train.csv`` / ``valid.csv``: ``Path,Sex,Age,Frontal/Lateral,AP/PA`` + 14 observations; ``Path``'s
first component is the folder itself (``CheXpert-v1.0-small/train/...``), so paths are resolved
relative to the folder holding the CSV whatever it is called. Train labels are ``1.0`` / ``0.0`` /
``-1.0`` / blank → 1 / 0 / -1 (uncertain) / None (not mentioned); valid and test are 0/1.

``groundtruth.csv`` (``Study,No Finding,...``; 500 studies, majority vote of 5 radiologists) gives
one label row per study; each image of ``test/patientX/studyY/`` becomes a sample with its study's
labels. Columns are read by header name: the radiologists' files of the same release list
``Lung Lesion`` before ``Lung Opacity``, the ground truth the other way round. A ``test_labels.csv``
with a ``Path`` column (one row per image, CheXlocalize) is accepted instead.

Splits: ``train`` = train.csv, ``val`` = valid.csv, ``test`` = the official test set.

Options: ``frontal_only`` (default False); ``reports_file`` / ``require_findings``: radiologist
reports from CheXpert Plus (``df_chexpert_plus_*.csv`` beside the CSVs, joined on the image path;
``section_findings`` → findings, ``section_impression`` → impression, ...). LLaVA-Rad's external
CheXpert report-generation set is built from validation images that have such reports.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.common import LABEL_VALUES, CheckReport, image_ref, read_table
from bench.data.mimic_cxr import check_label_cells, sampled_image_problems
from bench.data.vocab import CHEXPERT_LABELS
from bench.interfaces import BenchError, ImageRef, Sample

DATASET = "chexpert"
LABELS: tuple[str, ...] = CHEXPERT_LABELS
COMPETITION: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
INFO_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
FOLDER_NAMES: tuple[str, ...] = ("CheXpert-v1.0-small", "CheXpert-v1.0")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FILES = {"train": "train.csv", "val": "valid.csv"}
TEST_FILES = ("groundtruth.csv", "test_labels.csv")
VIEWS = ("Frontal", "Lateral")
PLUS_SECTIONS = {
    "section_findings": "findings",
    "section_impression": "impression",
    "section_clinical_history": "indication",
    "section_history": "indication",
    "section_comparison": "comparison",
    "section_technique": "technique",
}

OBTAIN = (
    "CheXpert from the Stanford AIMI shared datasets (free registration + research use agreement): "
    "https://stanfordaimi.azurewebsites.net/datasets/8cbd9ed4-2eb9-4565-affc-111cf4f7ebe2 (CheXpert-v1.0 or "
    "-small); test labels groundtruth.csv: https://github.com/rajpurkarlab/cheXpert-test-set-labels ; test "
    "images: the CheXpert test set / CheXlocalize release on Stanford AIMI; reports: CheXpert Plus on Stanford AIMI"
)

_PREFIX = re.compile(r"^CheXpert-v1\.0[^/]*$", re.IGNORECASE)


# --------------------------------------------------------------------------- paths


def _parts(path: str) -> list[str]:
    """A CSV path's components without the leading ``CheXpert-v1.0[-small]`` folder name."""
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    if parts and _PREFIX.match(parts[0]):
        parts = parts[1:]
    return parts


def relative_key(path: str) -> str:
    """``CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg`` → ``train/patient1/study1/view1_frontal``."""
    parts = _parts(path)
    if not parts:
        return ""
    parts[-1] = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] else parts[-1]
    return "/".join(parts)


def resolve_image(folder: Path, path: str) -> Path:
    """A CSV ``Path`` relative to the folder holding the data (its first component is that folder)."""
    return folder.joinpath(*_parts(path))


def data_folder(root: Path, filename: str) -> Path | None:
    """The folder holding ``filename``: ``root`` itself or ``root/CheXpert-v1.0[-small]``."""
    for cand in (root, *(root / name for name in FOLDER_NAMES)):
        if (cand / filename).is_file():
            return cand
    return None


def _root(root: str | Path | None) -> Path:
    if root is None:
        raise BenchError(f"{DATASET} needs its folder: give --root DIR or set BENCH_DATA_ROOT. {OBTAIN}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise BenchError(f"{path}: no such folder (the CheXpert download). {OBTAIN}")
    return path


def _missing(root: Path, filename: str) -> BenchError:
    where = " or ".join(str(c / filename) for c in (root, *(root / n for n in FOLDER_NAMES)))
    return BenchError(f"{root}: missing {filename} (looked for {where}). {OBTAIN}")


# --------------------------------------------------------------------------- tables


def read_split_table(root: Path, split: str) -> tuple[Path, Any]:
    """``(folder, frame)`` of train.csv / valid.csv, validated (header, labels, views, paths)."""
    filename = SPLIT_FILES[split]
    folder = data_folder(root, filename)
    if folder is None:
        raise _missing(root, filename)
    path = folder / filename
    frame = read_table(path, (*INFO_COLUMNS, *LABELS))
    check_label_cells(frame, LABELS, path)
    empty = frame["Path"] == ""
    if empty.any():
        raise BenchError(f"{path}: row {int(np.flatnonzero(empty.to_numpy())[0]) + 2}: empty Path")
    bad_view = ~frame["Frontal/Lateral"].isin(VIEWS)
    if bad_view.any():
        row = int(np.flatnonzero(bad_view.to_numpy())[0])
        raise BenchError(
            f"{path}: row {row + 2}: Frontal/Lateral {frame['Frontal/Lateral'].iloc[row]!r} is not Frontal or Lateral"
        )
    dup = frame["Path"].duplicated()
    if dup.any():
        raise BenchError(f"{path}: Path {frame['Path'][dup].iloc[0]!r} appears twice")
    return folder, frame


def _test_label_file(root: Path) -> Path | None:
    for name in TEST_FILES:
        for cand in (
            root,
            *(root / n for n in FOLDER_NAMES),
            root / "test",
            *(root / n / "test" for n in FOLDER_NAMES),
        ):
            if (cand / name).is_file():
                return cand / name
    return None


def _test_image_folder(root: Path, label_file: Path) -> Path | None:
    """The folder that holds ``test/patientX/...`` (the dataset folder, CheXpert-v1.0/, or any sub-folder)."""
    others = sorted(d for d in root.iterdir() if d.is_dir())
    for cand in (root, *(root / n for n in FOLDER_NAMES), label_file.parent, label_file.parent.parent, *others):
        if (cand / "test").is_dir() and any((cand / "test").glob("patient*")):
            return cand
    return None


def read_test_rows(root: Path) -> tuple[Path, list[tuple[str, Path, dict[str, int | None]]]]:
    """``(label file, [(image key, image path, labels), ...])`` of the official test set."""
    label_file = _test_label_file(root)
    if label_file is None:
        raise BenchError(
            f"{root}: missing the CheXpert test labels groundtruth.csv (Study + 14 labels; from "
            "https://github.com/rajpurkarlab/cheXpert-test-set-labels) or test_labels.csv, in the dataset folder"
        )
    frame = read_table(label_file, (), allow_empty=True)
    key_col = "Study" if "Study" in frame.columns else "Path" if "Path" in frame.columns else None
    missing = [c for c in LABELS if c not in frame.columns]
    if key_col is None or missing:
        raise BenchError(
            f"{label_file}: missing column(s) {', '.join(([] if key_col else ['Study']) + missing)}; expected a "
            f"header Study (or Path) + {', '.join(LABELS)} (found {', '.join(frame.columns[:20])})"
        )
    if not len(frame):
        raise BenchError(f"{label_file}: the table has a header but no rows")
    check_label_cells(frame, LABELS, label_file)
    folder = _test_image_folder(root, label_file)
    if folder is None:
        raise BenchError(
            f"{root}: missing the test images folder test/patientXXXXX/studyY/ (beside {label_file.name} or under "
            "CheXpert-v1.0/); the official test images come with the CheXpert test set on Stanford AIMI"
        )
    cells = frame[list(LABELS)].to_numpy(dtype=object)
    rows: list[tuple[str, Path, dict[str, int | None]]] = []
    for i, ref in enumerate(frame[key_col].tolist()):
        labels = {name: LABEL_VALUES[str(v)] for name, v in zip(LABELS, cells[i], strict=True)}
        if key_col == "Path":
            rows.append((relative_key(ref), resolve_image(folder, ref), labels))
            continue
        study_dir = resolve_image(folder, ref)
        images = sorted(p for p in study_dir.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not images:
            raise BenchError(
                f"{label_file}: row {i + 2}: no image in the study folder {study_dir} (expected view1_frontal.jpg, ...)"
            )
        base = relative_key(ref)
        rows.extend((f"{base}/{p.stem}", p, labels) for p in images)
    return label_file, rows


def find_reports_file(root: Path, reports_file: str | Path | None = None) -> Path | None:
    """CheXpert Plus ``df_chexpert_plus_*.csv`` (newest name first), or the given file."""
    if reports_file is not None:
        path = Path(reports_file).expanduser()
        if not path.is_absolute() and not path.is_file():
            path = root / path
        if not path.is_file():
            raise BenchError(f"{path}: reports file not found (CheXpert Plus df_chexpert_plus_*.csv)")
        return path
    for cand in (root, *(root / n for n in FOLDER_NAMES), root / "chexpert_plus"):
        found = sorted(cand.glob("df_chexpert_plus*.csv")) if cand.is_dir() else []
        if found:
            return found[-1]
    return None


_REPORTS: dict[tuple[str, float, int], dict[str, dict[str, str]]] = {}


def read_reports(path: Path) -> dict[str, dict[str, str]]:
    """``{image key: sections}`` from CheXpert Plus (only non-empty sections); cached per file version."""
    stat = path.stat()
    key = (str(path), stat.st_mtime, stat.st_size)
    if key not in _REPORTS:
        _REPORTS.clear()
        _REPORTS[key] = _read_reports(path)
    return _REPORTS[key]


def _read_reports(path: Path) -> dict[str, dict[str, str]]:
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BenchError(f"{path}: cannot read as a CSV ({str(exc).splitlines()[0][:200]})") from None
    present = [c for c in PLUS_SECTIONS if c in header]
    if "path_to_image" not in header or "section_findings" not in present:
        raise BenchError(
            f"{path}: missing column path_to_image or section_findings; expected the CheXpert Plus table "
            f"(path_to_image, ..., section_findings, section_impression, ...)"
        )
    try:
        frame = pd.read_csv(path, usecols=["path_to_image", *present], dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BenchError(f"{path}: cannot parse as a table ({str(exc).splitlines()[0][:200]})") from None
    out: dict[str, dict[str, str]] = {}
    values = {c: frame[c].tolist() for c in present}
    for i, ref in enumerate(frame["path_to_image"].tolist()):
        sections: dict[str, str] = {}
        for col in present:
            text = " ".join(str(values[col][i]).split())
            if text:
                name = PLUS_SECTIONS[col]
                sections[name] = f"{sections[name]} {text}" if name in sections else text
        out[relative_key(ref)] = sections
    return out


# --------------------------------------------------------------------------- samples


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise BenchError(f"{DATASET}: option {name} must be true or false, got {value!r}")


def _patient_study(key: str) -> tuple[str, str]:
    parts = key.split("/")
    patient = next((p for p in parts if p.startswith("patient")), "")
    study = next((p for p in parts if p.startswith("study")), "")
    return patient, f"{patient}/{study}"


def table_samples(folder: Path, frame: Any, split: str, dataset: str = DATASET) -> list[Sample]:
    """Samples of train.csv / valid.csv rows (no file access)."""
    cells = frame[list(LABELS)].to_numpy(dtype=object)
    info = {c: frame[c].tolist() for c in INFO_COLUMNS}
    prefix = f"{folder}{os.sep}" if str(folder) != os.sep else os.sep
    out = []
    for i, ref in enumerate(info["Path"]):
        key = relative_key(ref)
        patient, study = _patient_study(key)
        age = info["Age"][i]
        out.append(
            Sample(
                id=key,
                dataset=dataset,
                split=split,
                images=[ImageRef(key=f"chexpert/{key}", path=f"{prefix}{'/'.join(_parts(ref))}")],
                labels={name: LABEL_VALUES[str(v)] for name, v in zip(LABELS, cells[i], strict=True)},
                meta={
                    "path": ref,
                    "patient_id": patient,
                    "study_id": study,
                    "view": info["Frontal/Lateral"][i],
                    "ap_pa": info["AP/PA"][i],
                    "sex": info["Sex"][i],
                    "age": int(age) if age.isdigit() else None,
                },
            )
        )
    return out


def official_test_samples(
    rows: Sequence[tuple[str, Path, dict[str, int | None]]], dataset: str = DATASET
) -> list[Sample]:
    out = []
    for key, path, labels in rows:
        patient, study = _patient_study(key)
        out.append(
            Sample(
                id=key,
                dataset=dataset,
                split="test",
                images=[image_ref(path, key=f"chexpert/{key}")],
                labels=dict(labels),
                meta={
                    "path": str(path),
                    "patient_id": patient,
                    "study_id": study,
                    "view": "Lateral" if "lateral" in path.name.lower() else "Frontal",
                },
            )
        )
    return out


def load(root: str | Path | None, split: str, **options: Any) -> list[Sample]:
    """Images of one split in file order (``train`` / ``val`` / ``test``)."""
    valid = {"frontal_only", "reports_file", "require_findings"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise BenchError(f"{DATASET}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    if split not in SPLITS:
        raise BenchError(f"{DATASET} has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    frontal_only = _bool("frontal_only", options.get("frontal_only", False))
    require_findings = _bool("require_findings", options.get("require_findings", False))
    base = _root(root)
    if split == "test":
        samples = official_test_samples(read_test_rows(base)[1])
    else:
        folder, frame = read_split_table(base, split)
        samples = table_samples(folder, frame, split)
    if frontal_only:
        samples = [s for s in samples if s.meta["view"] == "Frontal"]
    reports_path = find_reports_file(base, options.get("reports_file"))
    if reports_path is None and require_findings:
        raise BenchError(
            f"{base}: no CheXpert Plus reports (df_chexpert_plus_*.csv) found; this task needs the radiologist "
            "reports of CheXpert Plus (Stanford AIMI) in the dataset folder, or give reports_file"
        )
    if reports_path is not None:
        reports = read_reports(reports_path)
        for s in samples:
            found = reports.get(s.id)
            s.sections = dict(found or {})
            s.meta["has_report"] = found is not None
    if require_findings:
        samples = [s for s in samples if s.sections.get("findings")]
    return samples


# --------------------------------------------------------------------------- check


def check(root: str | Path, *, splits: Sequence[str] = SPLITS, sample_images: int = 20, **options: Any) -> CheckReport:
    """Parse every split's label file, count images per split and open a sample of images."""
    report = CheckReport(DATASET)
    base = Path(root).expanduser()
    if not base.is_dir():
        report.problems.append(f"{base}: no such folder. {OBTAIN}")
        return report
    for split in splits:
        try:
            samples = load(base, split, **options)
        except BenchError as exc:
            report.problems.append(str(exc))
            continue
        report.splits[split] = len(samples)
        report.problems.extend(sampled_image_problems(samples, sample_images, f"split {split}"))
    return report
