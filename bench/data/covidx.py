"""COVIDx CXR (``covidx``): COVID-19 chest radiographs pooled from public sources (COVID-Net).

Files read (the Kaggle ``andyczhao/covidx-cxr2`` download, unpacked)::

    train.txt   test.txt   (val.txt in later releases)   — also train_COVIDx*.txt / test_COVIDx*.txt
    train/<filename>   test/<filename>   (val/<filename>)

The lists have no header; each line is ``<patient id> <filename> <label> <source>`` separated by
spaces (older releases have no source column). Labels:

- ``positive`` / ``negative`` (COVIDx CXR-2 / CXR-3 / CXR-4) → ``labels = {"COVID-19": 1/0}``;
- ``normal`` / ``pneumonia`` / ``COVID-19`` (COVIDx v1–v9) → ``{"COVID-19", "Pneumonia"
  (non-COVID pneumonia), "No Finding"}`` one-hot.

The encoding is detected from the files (mixing both is an error) and recorded as
``meta["label_scheme"]`` ("binary" or "three_class"), with the raw label in ``meta["label_raw"]``.
Sample ids are ``<list>/<filename>`` (e.g. ``train/abc.png``): unique even where one file name is
in two lists.

Splits (``split_scheme``):

- ``"official"`` (default): ``test`` = test.txt; ``val`` = val.txt when present, else a seeded
  ``val_fraction`` (default 0.1) of train.txt's patients; ``train`` = the rest of train.txt.
- ``"llava_radz"``: every listed image pooled and split 0.7/0.2/0.1 by patient (seeded), as
  LLaVA-RadZ describes. Patients are keyed by ``source/patient id`` (ids repeat across sources).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.data import subsets
from bench.data.common import CheckReport, count_splits, image_ref, seeded_split
from bench.interfaces import BenchError, Sample

DATASET = "covidx"
SPLITS = ("train", "val", "test")
COVID = "COVID-19"
PNEUMONIA = "Pneumonia"
NO_FINDING = "No Finding"
BINARY = {"positive": 1, "negative": 0}
THREE_CLASS = {"normal": NO_FINDING, "pneumonia": PNEUMONIA, "covid-19": COVID}
LIST_NAMES = {"train": "train", "val": "val", "test": "test"}
SPLIT_SCHEMES = ("official", "llava_radz")
LLAVA_RADZ = {"train": 0.7, "val": 0.2, "test": 0.1}


def find_list(root: Path, split: str) -> Path | None:
    """``<split>.txt`` or a single ``<split>_COVIDx*.txt``; None when absent."""
    exact = root / f"{LIST_NAMES[split]}.txt"
    if exact.is_file():
        return exact
    found = sorted(root.glob(f"{LIST_NAMES[split]}_COVIDx*.txt"))
    if len(found) > 1:
        raise BenchError(
            f"{root}: several {split} lists ({', '.join(p.name for p in found)}); keep one or rename it {exact.name}"
        )
    return found[0] if found else None


def read_list(path: Path) -> list[dict[str, str]]:
    """Rows of one list: {"patient", "filename", "label", "source", "line"}."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot read ({exc})") from None
    rows = []
    known = {*BINARY, *THREE_CLASS}
    for i, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        # <patient> <filename (may contain spaces)> <label> [<source>]
        if len(tokens) >= 4 and tokens[-2].lower() in known:
            label_at = len(tokens) - 2
        elif len(tokens) >= 3 and tokens[-1].lower() in known:
            label_at = len(tokens) - 1
        else:
            raise BenchError(
                f"{path}, line {i}: expected '<patient id> <filename> <label> <source>' with label one of "
                f"positive, negative, normal, pneumonia, COVID-19; found {line.strip()[:120]!r}"
            )
        rows.append(
            {
                "patient": tokens[0],
                "filename": " ".join(tokens[1:label_at]),
                "label": tokens[label_at],
                "source": " ".join(tokens[label_at + 1 :]),
                "line": str(i),
            }
        )
    if not rows:
        raise BenchError(f"{path}: the list is empty; expected '<patient id> <filename> <label> <source>' lines")
    return rows


def read_lists(root: Path) -> dict[str, tuple[Path, list[dict[str, str]]]]:
    """{"train"/"val"/"test": (path, rows)}; train and test are required, val optional."""
    out = {}
    for split in SPLITS:
        path = find_list(root, split)
        if path is None:
            if split == "val":
                continue
            raise BenchError(f"{root}: missing {split}.txt (the COVIDx {split} list)")
        out[split] = (path, read_list(path))
    return out


def label_scheme(lists: dict[str, tuple[Path, list[dict[str, str]]]]) -> str:
    seen: dict[str, tuple[Path, str]] = {}
    for path, rows in lists.values():
        for r in rows:
            scheme = "binary" if r["label"].lower() in BINARY else "three_class"
            seen.setdefault(scheme, (path, r["line"]))
    if len(seen) > 1:
        (p1, l1), (p2, l2) = seen["binary"], seen["three_class"]
        raise BenchError(
            f"{p2}, line {l2}: a normal/pneumonia/COVID-19 label, but {p1.name} line {l1} uses positive/negative; "
            "the lists of one release use one encoding"
        )
    return next(iter(seen))


def encode(label: str, scheme: str) -> dict[str, int | None]:
    raw = label.lower()
    if scheme == "binary":
        return {COVID: BINARY[raw]}
    hit = THREE_CLASS[raw]
    return {name: int(name == hit) for name in (COVID, PNEUMONIA, NO_FINDING)}


def load(
    root: str | Path,
    split: str,
    *,
    split_scheme: str = "official",
    val_fraction: float = 0.1,
    seed: int = 0,
    check_images: bool = True,
    **options: Any,
) -> list[Sample]:
    """Samples of one split; ``train_fraction`` subsets the train split (stratified on COVID-19).
    ``check_images=False`` skips listing the image folders."""
    sub = subsets.pop_options(options)
    if options:
        raise BenchError(f"covidx: unknown option(s) {sorted(options)}")
    if split not in SPLITS:
        raise BenchError(f"covidx has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    if split_scheme not in SPLIT_SCHEMES:
        raise BenchError(f"covidx: unknown split_scheme {split_scheme!r}; valid: {', '.join(SPLIT_SCHEMES)}")
    if not 0.0 <= val_fraction < 1.0:
        raise BenchError(f"covidx: val_fraction must be in [0, 1), got {val_fraction!r}")
    root = Path(root)
    lists = read_lists(root)
    scheme = label_scheme(lists)
    rows: list[tuple[str, dict[str, str], Path]] = []  # (list split, row, list path)
    for list_split, (path, list_rows) in lists.items():
        seen: dict[str, str] = {}
        for r in list_rows:
            if r["filename"] in seen:
                raise BenchError(
                    f"{path}, line {r['line']}: image {r['filename']!r} is listed twice (first on line "
                    f"{seen[r['filename']]})"
                )
            seen[r["filename"]] = r["line"]
            rows.append((list_split, r, path))

    def patient(r: dict[str, str]) -> str:
        return f"{r['source']}/{r['patient']}" if r["source"] else r["patient"]

    if split_scheme == "llava_radz":
        assign = seeded_split({patient(r) for _, r, _ in rows}, LLAVA_RADZ, seed)
        chosen = [(s, r, p) for s, r, p in rows if assign[patient(r)] == split]
    elif split == "test" or "val" in lists:
        chosen = [(s, r, p) for s, r, p in rows if s == split]
    else:
        train_patients = {patient(r) for s, r, _ in rows if s == "train"}
        assign = seeded_split(train_patients, {"train": 1.0 - val_fraction, "val": val_fraction}, seed)
        chosen = [(s, r, p) for s, r, p in rows if s == "train" and assign[patient(r)] == split]
    if check_images:
        _check_files(root, chosen)
    samples = []
    for list_split, r, path in chosen:
        image = root / LIST_NAMES[list_split] / r["filename"]
        samples.append(
            Sample(
                id=f"{list_split}/{r['filename']}",
                dataset=DATASET,
                split=split,
                images=[image_ref(image, key=f"{DATASET}/{list_split}/{r['filename']}")],
                labels=encode(r["label"], scheme),
                meta={
                    "patient_id": r["patient"],
                    "source": r["source"],
                    "label_raw": r["label"],
                    "label_scheme": scheme,
                    "list_file": path.name,
                    "split_scheme": split_scheme,
                    "split_seed": seed,
                },
            )
        )
    return subsets.apply(samples, split, sub, target_labels=(COVID,))


def _check_files(root: Path, chosen: list[tuple[str, dict[str, str], Path]]) -> None:
    """Every listed image exists (each image folder is listed once)."""
    lists: dict[str, Path] = {}
    for list_split, _, path in chosen:
        lists.setdefault(list_split, path)
    for list_split, path in lists.items():
        folder = root / LIST_NAMES[list_split]
        try:
            with os.scandir(folder) as it:
                present = {e.name for e in it}
        except FileNotFoundError:
            raise BenchError(f"{root}: missing folder {folder.name}/ (the images of {path.name})") from None
        except OSError as exc:
            raise BenchError(f"{folder}: cannot list the image folder ({exc})") from None
        missing = [r for s, r, _ in chosen if s == list_split and r["filename"] not in present]
        if missing:
            raise BenchError(
                f"{folder}: {len(missing)} image(s) listed in {path.name} are missing (e.g. "
                f"{missing[0]['filename']!r} from line {missing[0]['line']})"
            )


def check(root: str | Path, **options: Any) -> CheckReport:
    root = Path(root)
    report = CheckReport(DATASET)
    lists = {}
    for split in SPLITS:
        try:
            path = find_list(root, split)
            if path is None:
                if split != "val":
                    report.problems.append(f"{root}: missing {split}.txt (the COVIDx {split} list)")
                continue
            lists[split] = (path, read_list(path))
        except BenchError as exc:
            report.problems.append(str(exc))
    if report.problems:
        return report
    try:
        label_scheme(lists)
    except BenchError as exc:
        report.problems.append(str(exc))
        return report
    return count_splits(report, root, load, SPLITS, sample_images=5, stop_at_error=True, **options)
