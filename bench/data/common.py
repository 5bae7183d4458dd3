"""Building blocks shared by the dataset readers.

Every reader turns a dataset's official on-disk layout into ``Sample`` records and every problem
into one ``BenchError`` that names the file, what was wrong and what was expected. The pieces:

- ``find_file`` — the first existing of several candidate names (``x.csv`` or ``x.csv.gz``).
- ``read_table`` — CSV/TSV through pandas as strings (no NaN guessing), header checked.
- ``parse_label`` — CheXpert-style label cells: ``1.0`` / ``0.0`` / ``-1.0`` / blank.
- ``image_ref`` / ``dicom_ref`` — lazy images (JPG/PNG through Pillow, DICOM through pydicom
  with the VOI LUT / window and MONOCHROME1 inversion applied).
- ``seeded_split`` / ``seeded_fraction`` — reproducible splits and training subsets; the chosen
  ids go into the dataset fingerprint through ``Sample.meta``.
- ``CheckReport`` — what ``bench data check`` prints.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.interfaces import BenchError, ImageRef

LABEL_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": None}


# --------------------------------------------------------------------------- files


def find_file(root: Path, *candidates: str, what: str = "") -> Path:
    """The first of ``candidates`` (relative to ``root``) that exists, else a clear error."""
    for name in candidates:
        path = root / name
        if path.is_file():
            return path
    names = " or ".join(candidates)
    purpose = f" ({what})" if what else ""
    raise BenchError(f"{root}: missing {names}{purpose}")


def find_dir(root: Path, *candidates: str, what: str = "") -> Path:
    """The first of ``candidates`` that is a folder under ``root``, else a clear error."""
    for name in candidates:
        path = root / name
        if path.is_dir():
            return path
    purpose = f" ({what})" if what else ""
    raise BenchError(f"{root}: missing folder {' or '.join(candidates)}{purpose}")


def read_table(
    path: Path,
    required: Sequence[str] = (),
    *,
    sep: str = ",",
    header: bool = True,
    names: Sequence[str] | None = None,
    allow_empty: bool = False,
) -> Any:
    """Read a CSV (optionally gzip/zip-compressed) as strings; check the required columns.

    Column names and cell values are stripped of surrounding spaces (SIIM's header has
    ``ImageId, EncodedPixels``). Missing cells are empty strings, never NaN. Returns a pandas
    DataFrame.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            header=0 if header else None,
            names=list(names) if names is not None else None,
            skipinitialspace=True,
            engine="python" if sep not in (",", "\t") else "c",
        )
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        expected = f"; expected a header {','.join(required)}" if required else ""
        raise BenchError(f"{path}: the file is empty{expected}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as exc:
        raise BenchError(f"{path}: cannot parse as a table ({str(exc).splitlines()[0][:200]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise BenchError(
            f"{path}: missing column(s) {', '.join(missing)}; expected a header with "
            f"{', '.join(required)} (found {', '.join(map(str, frame.columns[:20]))})"
        )
    for col in frame.columns:
        frame[col] = frame[col].astype(str).str.strip()
    if not allow_empty and len(frame) == 0:
        raise BenchError(f"{path}: the table has a header but no rows")
    return frame


def parse_label(value: str, *, where: str) -> int | None:
    """``1.0`` positive → 1, ``0.0`` negative → 0, ``-1.0`` uncertain → -1, blank → None."""
    key = str(value).strip()
    if key in LABEL_VALUES:
        return LABEL_VALUES[key]
    raise BenchError(f"{where}: label {value!r} is not one of 1.0, 0.0, -1.0 or blank")


def parse_float(value: str, *, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"{where}: {value!r} is not a number") from None
    if not np.isfinite(out):
        raise BenchError(f"{where}: {value!r} is not a finite number")
    return out


# --------------------------------------------------------------------------- images


def image_ref(path: Path, key: str) -> ImageRef:
    """A JPG/PNG read lazily with Pillow."""
    return ImageRef(key=key, path=str(path))


def load_dicom(path: str) -> Any:
    """A DICOM file as an 8-bit PIL image ("L"): modality LUT (rescale slope/intercept), then the
    VOI LUT or window centre/width when present (else min-max), MONOCHROME1 inverted."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom is a dependency
        raise BenchError("reading DICOM needs pydicom (pip install pydicom)") from None
    from PIL import Image

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except FileNotFoundError:
        raise BenchError(f"image file not found: {path}") from None
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise BenchError(f"cannot read DICOM {path}: {exc}") from None
    arr = apply_modality_lut(pixels, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        arr = apply_voi_lut(arr, ds, prefer_lut=True).astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour DICOM (rare for radiographs)
        arr = arr[..., :3].mean(axis=-1)
    if arr.ndim != 2:
        raise BenchError(f"{path}: expected a 2-D radiograph, got pixel data of shape {arr.shape}")
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        arr = 1.0 - arr  # MONOCHROME1: high values are dark
    return Image.fromarray(np.round(arr * 255.0).astype(np.uint8), mode="L")


def dicom_ref(path: Path, key: str) -> ImageRef:
    """A DICOM read lazily (picklable loader)."""
    return ImageRef(key=key, path=str(path), loader=functools.partial(load_dicom, str(path)))


# --------------------------------------------------------------------------- splits and subsets


def _order(ids: Iterable[str], seed: int) -> list[str]:
    """A seeded permutation that does not depend on the input order (ids sorted first)."""
    unique = sorted(set(ids))
    rng = np.random.default_rng(seed)
    return [unique[i] for i in rng.permutation(len(unique))]


def seeded_split(ids: Iterable[str], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """Assign each id to a split by the given fractions (e.g. train 0.6, val 0.2, test 0.2).

    Deterministic for the same id set and seed whatever the input order; split sizes are
    ``round`` of the fraction, the last split takes the rest. Split by *patient* id where a
    dataset has several images per patient, so no patient crosses splits.
    """
    total = sum(fractions.values())
    if not fractions or abs(total - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise BenchError(f"split fractions must be non-negative and sum to 1, got {dict(fractions)}")
    order = _order(ids, seed)
    out: dict[str, str] = {}
    start = 0
    names = list(fractions)
    for k, name in enumerate(names):
        stop = len(order) if k == len(names) - 1 else start + round(fractions[name] * len(order))
        for i in order[start:stop]:
            out[i] = name
        start = stop
    return out


def seeded_fraction(ids: Iterable[str], fraction: float, seed: int) -> list[str]:
    """A seeded subset with ``max(1, round(fraction * n))`` ids; smaller fractions are prefixes of
    larger ones with the same seed (the 1 % subset is inside the 10 % subset)."""
    if not 0.0 < fraction <= 1.0:
        raise BenchError(f"a training fraction must be in (0, 1], got {fraction}")
    order = _order(ids, seed)
    if not order:
        return []
    return sorted(order[: max(1, round(fraction * len(order)))])


def seeded_first(ids: Iterable[str], seed: int) -> str:
    """The first id of the seeded order behind :func:`seeded_fraction` (every fraction keeps it)."""
    order = _order(ids, seed)
    if not order:
        raise BenchError("no ids to choose from")
    return order[0]


def ids_hash(ids: Iterable[str]) -> str:
    """A short stable hash of a set of ids (recorded with derived subsets)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- checks


@dataclass
class CheckReport:
    """What ``bench data check`` prints: ``{"dataset", "ok", "splits", "problems"}``."""

    dataset: str
    splits: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "ok": self.ok, "splits": dict(self.splits), "problems": list(self.problems)}


def check_with_loader(
    dataset: str,
    root: Path,
    load: Callable[..., list[Any]],
    splits: Sequence[str],
    *,
    sample_images: int = 20,
    **options: Any,
) -> CheckReport:
    """A generic check: load every split (parsing all metadata), count samples, and verify that a
    spread sample of ``sample_images`` image files per split exists and opens."""
    report = CheckReport(dataset)
    count_splits(report, root, load, splits, sample_images=sample_images, **options)
    return report


def count_splits(
    report: CheckReport,
    root: Path,
    load: Callable[..., list[Any]],
    splits: Sequence[str],
    *,
    sample_images: int = 20,
    stop_at_error: bool = False,
    **options: Any,
) -> CheckReport:
    """Load each split into ``report``: its sample count, or the reader's error, plus the problems of
    a spread sample of ``sample_images`` images. ``stop_at_error``: skip the remaining splits after
    a split fails to load (they share the failing file)."""
    for split in splits:
        try:
            samples = load(root, split, **options)
        except BenchError as exc:
            report.problems.append(str(exc))
            if stop_at_error:
                break
            continue
        report.splits[split] = len(samples)
        report.problems.extend(check_images(samples, sample_images))
    return report


def check_images(samples: Sequence[Any], limit: int) -> list[str]:
    """Open up to ``limit`` images spread over ``samples``; return one problem per failure."""
    problems: list[str] = []
    refs = [ref for s in samples for ref in s.images]
    if not refs or limit <= 0:
        return problems
    picks = sorted({int(i) for i in np.linspace(0, len(refs) - 1, num=min(limit, len(refs)))})
    for i in picks:
        ref = refs[i]
        if ref.path is not None and ref.loader is None and not Path(ref.path).is_file():
            problems.append(f"image file not found: {ref.path}")
            continue
        try:
            ref.load()
        except BenchError as exc:
            problems.append(str(exc))
    return problems
