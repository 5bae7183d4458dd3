"""``mimic_cxr``: MIMIC-CXR-JPG 2.x, optionally with the free-text reports of MIMIC-CXR.

Read exactly as the PhysioNet downloads unpack (nothing is converted)::

    <root>/mimic-cxr-2.0.0-metadata.csv.gz     dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, ...
    <root>/mimic-cxr-2.0.0-chexpert.csv.gz     subject_id, study_id + 14 labels (one row per study)
    <root>/mimic-cxr-2.0.0-negbio.csv.gz       same columns, NegBio labeler
    <root>/mimic-cxr-2.0.0-split.csv.gz        dicom_id, study_id, subject_id, split (train|validate|test)
    <root>/files/p10/p10000032/s50414267/<dicom_id>.jpg
    <root>/files/p10/p10000032/s50414267.txt   the report (MIMIC-CXR "mimic-cxr-reports.zip"; optional)

The CSVs may be gzip-compressed or not (``.csv`` or ``.csv.gz``); columns are found by their
header names, never by position. One ``Sample`` per image (``dicom_id``) carries its study's
labels: ``1.0`` → 1, ``0.0`` → 0, ``-1.0`` → -1 (uncertain), blank → None (not mentioned); a
study missing from the label file has no labels (``meta["labelled"] = False``).

Options of :func:`load`:

- ``labeler``: ``"chexpert"`` (default) or ``"negbio"`` — which label file;
- ``views``: ViewPositions kept, default ``("PA", "AP")`` (frontal); ``"all"`` keeps every image;
- ``reports_root``: where the reports live (default: ``<root>`` itself, then
  ``<root>/mimic-cxr-reports``; the folder may hold ``files/pXX/...`` or ``pXX/...`` directly).
  Reports are attached when found and split into sections by :mod:`bench.data.report_sections`;
- ``require_reports``: a missing report file is an error instead of an empty ``sections``;
- ``require_findings``: keep only images whose report has a findings section (LLaVA-Rad's report
  generation and retrieval test set: 2,461 AP/PA images of the test split).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.common import LABEL_VALUES, CheckReport, check_images, find_file, image_ref, read_table
from bench.data.report_sections import split_sections
from bench.interfaces import BenchError, Sample

DATASET = "mimic_cxr"
LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
SPLITS: tuple[str, ...] = ("train", "val", "test")
OFFICIAL_SPLIT = {"train": "train", "validate": "val", "test": "test"}
LABELERS = ("chexpert", "negbio")
VERSIONS = ("2.0.0", "2.1.0")

META_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
LABEL_KEY = ("subject_id", "study_id")
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")

OBTAIN = (
    "MIMIC-CXR-JPG 2.x from PhysioNet (credentialed access, CITI training + data use agreement): "
    "https://physionet.org/content/mimic-cxr-jpg/ ; reports from MIMIC-CXR "
    "(https://physionet.org/content/mimic-cxr/ , file mimic-cxr-reports.zip)"
)


# --------------------------------------------------------------------------- tables


def table_file(root: Path, kind: str) -> Path:
    """``mimic-cxr-2.0.0-{kind}.csv(.gz)`` (2.1.0 names accepted too)."""
    names = [f"mimic-cxr-{v}-{kind}.csv{ext}" for v in VERSIONS for ext in (".gz", "")]
    return find_file(root, *names, what=f"the MIMIC-CXR-JPG {kind} table")


def _check_digits(frame: Any, columns: Iterable[str], path: Path) -> None:
    for col in columns:
        values = frame[col]
        bad = ~values.str.fullmatch(r"\d+")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BenchError(f"{path}: row {row + 2}: {col} {values.iloc[row]!r} is not a number")


def check_label_cells(frame: Any, columns: Sequence[str], path: Path) -> None:
    """Every cell is one of 1.0 / 0.0 / -1.0 / blank (vectorised; names the first bad cell)."""
    allowed = set(LABEL_VALUES)
    for col in columns:
        values = frame[col]
        bad = ~values.isin(allowed)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BenchError(
                f"{path}: row {row + 2}, column {col!r}: label {values.iloc[row]!r} is not one of "
                "1.0, 0.0, -1.0 or blank"
            )


def read_metadata(root: Path) -> Any:
    path = table_file(root, "metadata")
    frame = read_table(path, META_COLUMNS)
    _check_digits(frame, ("subject_id", "study_id"), path)
    if (frame["dicom_id"] == "").any():
        row = int(np.flatnonzero((frame["dicom_id"] == "").to_numpy())[0])
        raise BenchError(f"{path}: row {row + 2}: empty dicom_id")
    dup = frame["dicom_id"].duplicated()
    if dup.any():
        raise BenchError(f"{path}: dicom_id {frame['dicom_id'][dup].iloc[0]!r} appears twice")
    keep = [c for c in (*META_COLUMNS, "Rows", "Columns") if c in frame.columns]
    return frame[keep]


def read_labels(root: Path, labeler: str) -> Any:
    if labeler not in LABELERS:
        raise BenchError(f"mimic_cxr: labeler must be one of {', '.join(LABELERS)}, not {labeler!r}")
    path = table_file(root, labeler)
    frame = read_table(path, (*LABEL_KEY, *LABELS))
    _check_digits(frame, LABEL_KEY, path)
    check_label_cells(frame, LABELS, path)
    dup = frame.duplicated(list(LABEL_KEY))
    if dup.any():
        raise BenchError(f"{path}: study {frame['study_id'][dup].iloc[0]} has two label rows; expected one per study")
    return frame[[*LABEL_KEY, *LABELS]]


def read_split(root: Path) -> Any:
    path = table_file(root, "split")
    frame = read_table(path, SPLIT_COLUMNS)
    unknown = sorted(set(frame["split"]) - set(OFFICIAL_SPLIT))
    if unknown:
        raise BenchError(
            f"{path}: unknown split value(s) {', '.join(map(repr, unknown[:5]))}; expected train, validate or test"
        )
    dup = frame["dicom_id"].duplicated()
    if dup.any():
        raise BenchError(f"{path}: dicom_id {frame['dicom_id'][dup].iloc[0]!r} appears twice")
    return frame[["dicom_id", "split"]]


def join_tables(root: Path, metadata: Any, labels: Any, split: Any) -> Any:
    """One row per image: metadata + our split name + the study's label cells (NaN = no label row)."""
    frame = metadata.merge(split, on="dicom_id", how="left")
    missing = frame["split"].isna()
    if missing.any():
        raise BenchError(
            f"{table_file(root, 'split')}: {int(missing.sum())} image(s) of the metadata table have no split "
            f"(e.g. dicom_id {frame['dicom_id'][missing].iloc[0]!r}); are the two files from the same release?"
        )
    frame["our_split"] = frame["split"].map(OFFICIAL_SPLIT)
    frame = frame.merge(labels.assign(has_labels=True), on=list(LABEL_KEY), how="left")
    frame["has_labels"] = frame["has_labels"].eq(True)
    return frame


def read_images_table(root: Path, labeler: str = "chexpert") -> Any:
    """Every image of the release with its split and labels (raises the first problem found)."""
    return join_tables(root, read_metadata(root), read_labels(root, labeler), read_split(root))


def normalise_views(views: Any) -> tuple[str, ...] | None:
    """``("PA", "AP")`` → upper-case tuple; ``"all"`` / ``None`` → None (keep every image)."""
    if views is None or (isinstance(views, str) and views.lower() == "all"):
        return None
    if isinstance(views, str):
        views = [v for v in views.replace(",", " ").split() if v]
    out = tuple(str(v).strip().upper() for v in views)
    if not out:
        raise BenchError("mimic_cxr: option views is empty; give e.g. ['PA', 'AP'] or 'all'")
    return out


def filter_views(frame: Any, views: tuple[str, ...] | None) -> Any:
    if views is None:
        return frame
    return frame[frame["ViewPosition"].str.upper().isin(views)]


# --------------------------------------------------------------------------- paths


def image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def _report_rel(subject_id: str, study_id: str) -> Path:
    return Path(f"p{subject_id[:2]}") / f"p{subject_id}" / f"s{study_id}.txt"


def locate_reports(root: Path, reports_root: str | Path | None, probes: Sequence[tuple[str, str]]) -> Path | None:
    """The folder holding ``pXX/p{subject}/s{study}.txt``, found by probing a few studies.

    With ``reports_root`` given, not finding any report there is an error; otherwise None means
    "no reports downloaded".
    """
    if reports_root is not None:
        base = Path(reports_root).expanduser()
        candidates = [base / "files", base]
    else:
        candidates = [root / "files", root / "mimic-cxr-reports" / "files", root / "mimic-cxr-reports"]
    probes = list(probes)[:50]
    for cand in candidates:
        if cand.is_dir() and any((cand / _report_rel(s, t)).is_file() for s, t in probes):
            return cand
    if reports_root is not None:
        example = _report_rel(*probes[0]) if probes else Path("pXX/p<subject>/s<study>.txt")
        raise BenchError(
            f"{reports_root}: no MIMIC-CXR report found (looked for files/{example.as_posix()} and "
            f"{example.as_posix()}); unpack mimic-cxr-reports.zip there"
        )
    return None


def read_report(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise BenchError(f"report file not found: {path}") from None
    except OSError as exc:
        raise BenchError(f"cannot read report {path}: {exc}") from None


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Options:
    labeler: str = "chexpert"
    views: tuple[str, ...] | None = FRONTAL_VIEWS
    reports_root: str | None = None
    require_reports: bool = False
    require_findings: bool = False


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise BenchError(f"mimic_cxr: option {name} must be true or false, got {value!r}")


def rows_to_samples(
    frame: Any,
    root: Path,
    *,
    dataset: str,
    splits: Sequence[str] | None = None,
    reports: Path | None = None,
    require_reports: bool = False,
    labeler: str = "chexpert",
) -> list[Sample]:
    """Samples of the given rows of the joined table (``splits`` overrides each row's split)."""
    cols = {c: frame[c].tolist() for c in ("subject_id", "study_id", "dicom_id", "ViewPosition", "split")}
    labelled = frame["has_labels"].tolist()
    our_split = list(splits) if splits is not None else frame["our_split"].tolist()
    cells = frame[list(LABELS)].to_numpy(dtype=object) if len(frame) else np.empty((0, len(LABELS)), object)
    dims = frame[["Rows", "Columns"]].to_numpy(dtype=object) if {"Rows", "Columns"} <= set(frame.columns) else None
    cache: dict[str, tuple[bool, dict[str, str]]] = {}
    out: list[Sample] = []
    for i, dicom in enumerate(cols["dicom_id"]):
        subject, study = cols["subject_id"][i], cols["study_id"][i]
        labels = {n: LABEL_VALUES[str(v)] for n, v in zip(LABELS, cells[i], strict=True)} if labelled[i] else {}
        meta: dict[str, Any] = {
            "subject_id": subject,
            "study_id": study,
            "dicom_id": dicom,
            "view": cols["ViewPosition"][i],
            "official_split": cols["split"][i],
            "labeler": labeler,
            "labelled": bool(labelled[i]),
        }
        if dims is not None:
            meta["rows"], meta["columns"] = dims[i]
        sections: dict[str, str] = {}
        if reports is not None:
            path = reports / _report_rel(subject, study)
            if study not in cache:
                if path.is_file():
                    cache[study] = (True, split_sections(read_report(path)))
                elif require_reports:
                    raise BenchError(f"report file not found: {path} (study {study} of subject {subject})")
                else:
                    cache[study] = (False, {})
            found, parts = cache[study]
            sections = dict(parts)
            meta["report_path"] = str(path) if found else None
        out.append(
            Sample(
                id=dicom,
                dataset=dataset,
                split=our_split[i],
                images=[image_ref(image_path(root, subject, study, dicom), key=f"mimic_cxr/{dicom}")],
                labels=labels,
                sections=sections,
                meta=meta,
            )
        )
    return out


def _options(options: dict[str, Any]) -> Options:
    valid = {"labeler", "views", "reports_root", "require_reports", "require_findings"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise BenchError(f"mimic_cxr: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    opts = Options(
        labeler=str(options.get("labeler", "chexpert")),
        views=normalise_views(options.get("views", FRONTAL_VIEWS)),
        reports_root=None if options.get("reports_root") is None else str(options["reports_root"]),
        require_reports=_as_bool("require_reports", options.get("require_reports", False)),
        require_findings=_as_bool("require_findings", options.get("require_findings", False)),
    )
    if opts.labeler not in LABELERS:
        raise BenchError(f"mimic_cxr: labeler must be one of {', '.join(LABELERS)}, not {opts.labeler!r}")
    return opts


def _root(root: str | Path | None) -> Path:
    if root is None:
        raise BenchError(f"{DATASET} needs its folder: give --root DIR or set BENCH_DATA_ROOT. {OBTAIN}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise BenchError(f"{path}: no such folder (the MIMIC-CXR-JPG download). {OBTAIN}")
    return path


def load(root: str | Path | None, split: str, **options: Any) -> list[Sample]:
    """Images of one split (``train`` / ``val`` / ``test``), sorted by subject, study and dicom id."""
    if split not in SPLITS:
        raise BenchError(f"{DATASET} has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    opts = _options(options)
    base = _root(root)
    frame = read_images_table(base, opts.labeler)
    frame = filter_views(frame[frame["our_split"] == split], opts.views)
    frame = frame.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")
    need_reports = opts.require_reports or opts.require_findings
    probes = list(zip(frame["subject_id"], frame["study_id"], strict=True))
    reports = locate_reports(base, opts.reports_root, probes) if probes else None
    if reports is None and need_reports and probes:
        example = _report_rel(*probes[0]).as_posix()
        raise BenchError(
            f"{base}: no MIMIC-CXR reports found (looked for files/{example} and mimic-cxr-reports/files/{example}); "
            "this task needs the reports: unpack mimic-cxr-reports.zip into the dataset folder or give reports_root"
        )
    samples = rows_to_samples(
        frame, base, dataset=DATASET, reports=reports, require_reports=opts.require_reports, labeler=opts.labeler
    )
    if opts.require_findings:
        samples = [s for s in samples if s.sections.get("findings")]
    return samples


# --------------------------------------------------------------------------- check


def sampled_image_problems(samples: Sequence[Sample], limit: int, what: str) -> list[str]:
    """``check_images`` over a spread sample, with a long list of failures shortened to three lines
    and a count (a folder of images not unpacked at all fails every sampled image)."""
    problems = check_images(samples, limit)
    if len(problems) <= 3:
        return problems
    sampled = min(limit, sum(len(s.images) for s in samples))
    return [
        *problems[:2],
        f"... {len(problems) - 2} more of the {sampled} sampled images of {what} are missing or unreadable "
        f"({len(problems)} of {sampled} in all): are the images unpacked where the table says?",
    ]


def check(root: str | Path, *, labeler: str = "chexpert", sample_images: int = 20, **options: Any) -> CheckReport:
    """Validate a local copy: the three tables (headers, ids, label cells, split values), the join,
    image counts per split (frontal views by default) and a spread sample of image files."""
    report = CheckReport(DATASET)
    base = Path(root).expanduser()
    if not base.is_dir():
        report.problems.append(f"{base}: no such folder. {OBTAIN}")
        return report
    opts = _options({"labeler": labeler, **options})
    tables: dict[str, Any] = {}
    for kind, reader in (
        ("metadata", lambda: read_metadata(base)),
        (opts.labeler, lambda: read_labels(base, opts.labeler)),
        ("split", lambda: read_split(base)),
    ):
        try:
            tables[kind] = reader()
        except BenchError as exc:
            report.problems.append(str(exc))
    if len(tables) < 3:
        return report
    try:
        frame = join_tables(base, tables["metadata"], tables[opts.labeler], tables["split"])
    except BenchError as exc:
        report.problems.append(str(exc))
        return report
    frame = filter_views(frame, opts.views)
    for split in SPLITS:
        part = frame[frame["our_split"] == split].sort_values(["subject_id", "study_id", "dicom_id"])
        report.splits[split] = len(part)
        if not len(part):
            continue
        picks = sorted({int(i) for i in np.linspace(0, len(part) - 1, num=min(sample_images, len(part)))})
        sub = part.iloc[picks]
        samples = rows_to_samples(sub, base, dataset=DATASET, labeler=opts.labeler)
        report.problems.extend(sampled_image_problems(samples, sample_images, f"split {split}"))
        if opts.reports_root is not None:
            try:
                locate_reports(base, opts.reports_root, list(zip(sub["subject_id"], sub["study_id"], strict=True)))
            except BenchError as exc:
                report.problems.append(str(exc))
    if sum(report.splits.values()) == 0:
        report.problems.append(
            f"{table_file(base, 'metadata')}: no image with ViewPosition in {', '.join(opts.views or ())}"
        )
    return report
