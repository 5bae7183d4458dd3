"""Shared pieces of the VQA and report readers: Hugging Face Parquet exports, images inside the
official zip archives, images on disk, and the ``bench data check`` walk.

Hugging Face exports
    A local copy of a hub dataset repository (``huggingface-cli download --repo-type dataset
    flaviagiammarino/vqa-rad --local-dir ...``) holds Parquet shards such as
    ``data/train-00000-of-00001-eb8844602202be60.parquet``; the automatic conversion branch
    (``refs/convert/parquet``) uses ``default/train/0000.parquet``. Both are found. Images are the
    ``datasets`` Image feature: a struct ``{"bytes": binary, "path": string}`` embedded in the file.
    They are decoded lazily: an ImageRef's loader is a picklable ``functools.partial`` over the
    Parquet path, the row number and the column; row groups are read on demand and the last few
    are cached per process (sequential access decodes each row group once).

Zip archives
    SLAKE (``imgs.zip``) and PMC-VQA (``images.zip`` / ``images_2.zip``) ship their images as one
    zip. When the unpacked folder is absent the reader takes the images from the zip itself,
    without unpacking it; members are matched with or without the archive's top folder.

Every failure is a BenchError naming the file and what was expected.
"""

from __future__ import annotations

import bisect
import functools
import io
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.common import CheckReport
from bench.interfaces import BenchError, ImageRef, Sample

# our split name -> names a hub repository may use for it
HF_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("validation", "valid", "val", "validate", "dev"),
    "test": ("test",),
}
FORMATS = ("auto", "official", "hf")


# --------------------------------------------------------------------------- images


def to_l_or_rgb(image: Any) -> Any:
    """A PIL image in mode ``L`` or ``RGB`` (CMYK JPEGs, palettes, alpha and 16-bit PNGs converted)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        from PIL import Image

        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.round(arr * 255.0).astype(np.uint8), mode="L")
    if image.mode in ("1", "LA"):
        return image.convert("L")
    return image.convert("RGB")


def _decode(data: bytes, where: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return to_l_or_rgb(im.copy())
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BenchError(f"cannot decode the image {where}: {exc}") from None


def load_image_file(path: str) -> Any:
    """A JPG/PNG from disk as mode ``L`` or ``RGB``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BenchError(f"image file not found: {path}") from None
    except OSError as exc:
        raise BenchError(f"cannot read image {path}: {exc}") from None
    return _decode(data, path)


def file_ref(path: Path, key: str) -> ImageRef:
    """A lazily read image file (picklable loader that normalises the mode)."""
    return ImageRef(key=key, path=str(path), loader=functools.partial(load_image_file, str(path)))


@functools.lru_cache(maxsize=8)
def _open_zip(path: str) -> tuple[zipfile.ZipFile, dict[str, str]]:
    """An open zip (per process) and its member index: name -> member, also without the top folder."""
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BenchError(f"image archive not found: {path}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise BenchError(f"{path}: not a readable zip archive ({exc})") from None
    index: dict[str, str] = {}
    for name in archive.namelist():
        if name.endswith("/") or name.startswith("__MACOSX/"):
            continue
        index.setdefault(name, name)
        _head, sep, rest = name.partition("/")
        if sep and rest:
            index.setdefault(rest, name)
    return archive, index


def zip_member(zip_path: str, rel: str) -> str | None:
    """The archive member holding ``rel`` (with or without the archive's top folder), or None."""
    _, index = _open_zip(zip_path)
    return index.get(rel.lstrip("/"))


def load_zip_image(zip_path: str, rel: str) -> Any:
    """One image of a zip archive, read without unpacking the archive."""
    archive, index = _open_zip(zip_path)
    member = index.get(rel.lstrip("/"))
    if member is None:
        raise BenchError(f"image {rel} not found in the archive {zip_path}")
    try:
        data = archive.read(member)
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise BenchError(f"cannot read {member} from {zip_path}: {exc}") from None
    return _decode(data, f"{member} in {zip_path}")


@dataclass(frozen=True)
class ImageSource:
    """Where one dataset keeps its images: an unpacked folder, else the official zip, else nowhere.

    ``ref(rel)`` gives the lazy ImageRef of an image named relative to that folder; the cache key is
    ``{dataset}/{rel}`` whichever way the pixels are stored.
    """

    dataset: str
    folder: Path | None = None
    archive: Path | None = None

    @classmethod
    def find(
        cls,
        dataset: str,
        root: Path,
        folders: Sequence[str],
        archives: Sequence[str] = (),
        *,
        fallback: Sequence[str] = (),
        required: bool = True,
    ) -> ImageSource:
        """The first existing of ``folders``, then ``archives``, then the ``fallback`` folders."""
        for name in folders:
            if (root / name).is_dir():
                return cls(dataset, folder=root / name)
        for name in archives:
            if (root / name).is_file():
                return cls(dataset, archive=root / name)
        for name in fallback:
            if (root / name).is_dir():
                return cls(dataset, folder=root / name)
        if required:
            where = " or ".join([f"folder {f}/" for f in folders] + list(archives))
            raise BenchError(
                f"{root}: missing the {dataset} images ({where}); "
                "pass check_images=False to read the annotations without images"
            )
        return cls(dataset, folder=root / folders[0])

    def ref(self, rel: str) -> ImageRef:
        key = f"{self.dataset}/{rel}"
        if self.folder is None and self.archive is not None:
            return ImageRef(key=key, loader=functools.partial(load_zip_image, str(self.archive), rel))
        assert self.folder is not None
        return file_ref(self.folder / rel, key)


# --------------------------------------------------------------------------- parquet


def parquet_files(root: Path, split: str) -> list[Path]:
    """The Parquet shards of one split in a local copy of a hub dataset repository (sorted)."""
    for name in HF_SPLIT_NAMES.get(split, (split,)):
        patterns = (
            f"data/{name}-*.parquet",
            f"data/{name}.parquet",
            f"data/{name}/*.parquet",
            f"{name}-*.parquet",
            f"{name}.parquet",
            f"default/{name}/*.parquet",
            f"*/{name}/*.parquet",
        )
        found: set[Path] = set()
        for pattern in patterns:
            found.update(p for p in root.glob(pattern) if p.is_file())
        if found:
            return sorted(found)
    return []


def has_parquet(root: Path) -> bool:
    """Whether ``root`` looks like a local copy of a hub repository with Parquet shards."""
    return any(parquet_files(root, split) for split in HF_SPLIT_NAMES)


def resolve_format(fmt: str, root: Path, official_present: bool, dataset: str, official: str) -> str:
    """``auto`` -> ``official`` when the official files are there, else ``hf`` when Parquet shards are."""
    if fmt not in FORMATS:
        raise BenchError(f"{dataset}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    if official_present:
        return "official"
    if has_parquet(root):
        return "hf"
    raise BenchError(
        f"{root}: found neither the official {dataset} files ({official}) nor a Hugging Face Parquet export "
        "(data/<split>-*.parquet)"
    )


@dataclass(frozen=True)
class ParquetRows:
    """The text columns of one split's shards, and where each row's image is."""

    rows: list[dict[str, Any]]
    locations: list[tuple[Path, int]]  # (shard, row within the shard)
    image_column: str


def read_parquet_split(
    root: Path, split: str, dataset: str, required: Sequence[str], image_column: str = "image"
) -> ParquetRows:
    """Read the text columns of a split's Parquet shards; check the columns and the image column's type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = parquet_files(root, split)
    if not shards:
        names = "/".join(HF_SPLIT_NAMES.get(split, (split,)))
        raise BenchError(f"{root}: no Parquet shard for the {split} split (expected data/{names}-*.parquet)")
    rows: list[dict[str, Any]] = []
    locations: list[tuple[Path, int]] = []
    for shard in shards:
        try:
            pf = pq.ParquetFile(shard)
            schema = pf.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            raise BenchError(f"{shard}: not a readable Parquet file ({str(exc).splitlines()[0][:200]})") from None
        names = list(schema.names)
        missing = [c for c in (*required, image_column) if c not in names]
        if missing:
            raise BenchError(
                f"{shard}: missing column(s) {', '.join(missing)}; expected {', '.join((image_column, *required))} "
                f"(found {', '.join(names)})"
            )
        kind = schema.field(image_column).type
        if not (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0) and not pa.types.is_binary(kind):
            raise BenchError(
                f"{shard}: column {image_column!r} has type {kind}; expected the Hugging Face Image struct "
                "{bytes, path} with the image bytes embedded"
            )
        try:
            table = pf.read(columns=list(required))
        except (OSError, pa.ArrowException) as exc:
            raise BenchError(f"{shard}: cannot read ({str(exc).splitlines()[0][:200]})") from None
        part = table.to_pylist()
        rows.extend(part)
        locations.extend((shard, i) for i in range(len(part)))
    return ParquetRows(rows=rows, locations=locations, image_column=image_column)


@functools.lru_cache(maxsize=32)
def _row_group_starts(path: str) -> tuple[int, ...]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    starts, total = [], 0
    for i in range(meta.num_row_groups):
        starts.append(total)
        total += meta.row_group(i).num_rows
    starts.append(total)
    return tuple(starts)


@functools.lru_cache(maxsize=4)
def _row_group_cells(path: str, group: int, column: str) -> list[Any]:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(group, columns=[column]).column(0).to_pylist()


def load_parquet_image(path: str, row: int, column: str = "image") -> Any:
    """Decode the image embedded in one row of a Parquet shard."""
    import pyarrow as pa

    where = f"{path} row {row}"
    try:
        starts = _row_group_starts(path)
        if not 0 <= row < starts[-1]:
            raise BenchError(f"{where}: the file has only {starts[-1]} rows")
        group = bisect.bisect_right(starts, row) - 1
        cell = _row_group_cells(path, group, column)[row - starts[group]]
    except FileNotFoundError:
        raise BenchError(f"Parquet file not found: {path}") from None
    except (OSError, pa.ArrowException) as exc:
        raise BenchError(f"{where}: cannot read ({str(exc).splitlines()[0][:200]})") from None
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not data:
        ref = cell.get("path") if isinstance(cell, dict) else None
        raise BenchError(f"{where}: the image is not embedded (bytes empty, path {ref!r}); re-export with the images")
    return _decode(data, where)


def parquet_ref(dataset: str, location: tuple[Path, int], column: str) -> ImageRef:
    shard, row = location
    return ImageRef(
        key=f"{dataset}/hf/{shard.name}/{row}",
        loader=functools.partial(load_parquet_image, str(shard), row, column),
    )


# --------------------------------------------------------------------------- checks


def _unique(messages: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for m in messages:
        seen.setdefault(m, None)
    return list(seen)


def _zip_name(ref: ImageRef) -> str | None:
    if isinstance(ref.loader, functools.partial) and ref.loader.func is load_zip_image:
        archive, rel = ref.loader.args
        return f"{rel} in {archive}"
    return None


def check_dataset(
    dataset: str,
    root: Path,
    load: Callable[..., list[Sample]],
    splits: Sequence[str],
    *,
    sample_images: int = 20,
    max_stat: int = 200_000,
    extra: Callable[[], list[str]] | None = None,
    **options: Any,
) -> CheckReport:
    """Load every split (all metadata parsed and validated), count samples, check that the image
    files exist (a cheap ``stat`` of up to ``max_stat`` paths) and open a spread sample of images.
    Problems are collected, never raised; identical messages are reported once."""
    report = CheckReport(dataset)
    problems: list[str] = []
    if extra is not None:
        problems.extend(extra())
    for split in splits:
        try:
            samples = load(root, split, **options)
        except BenchError as exc:
            problems.append(str(exc))
            continue
        report.splits[split] = len(samples)
        if not samples:
            problems.append(f"{root}: the {split} split of {dataset} is empty")
            continue
        refs: dict[str, ImageRef] = {}
        for s in samples:
            for ref in s.images:
                refs.setdefault(ref.key, ref)
        missing: list[str] = []
        for ref in list(refs.values())[:max_stat]:
            if ref.path is not None and not Path(ref.path).is_file():
                missing.append(ref.path)
            elif isinstance(ref.loader, functools.partial) and ref.loader.func is load_zip_image:
                archive, rel = ref.loader.args
                try:
                    if zip_member(archive, rel) is None:
                        missing.append(f"{rel} in {archive}")
                except BenchError as exc:
                    problems.append(str(exc))
                    break
        if missing:
            shown = "; ".join(missing[:3])
            problems.append(f"{split}: {len(missing)} image file(s) not found, e.g. {shown}")
        bad = set(missing)
        candidates = [r for r in refs.values() if r.path not in bad and _zip_name(r) not in bad]
        if candidates and sample_images > 0:
            count = min(sample_images, len(candidates))
            picks = sorted({int(i) for i in np.linspace(0, len(candidates) - 1, num=count)})
            for i in picks:
                try:
                    candidates[i].load()
                except BenchError as exc:
                    problems.append(str(exc))
    report.problems = _unique(problems)
    return report


# --------------------------------------------------------------------------- small parsing helpers


def text_field(item: Any, key: str, where: str, *, allow_empty: bool = False) -> str:
    """A required text field of a JSON/pickle record (numbers are cast to str)."""
    if not isinstance(item, dict):
        raise BenchError(f"{where}: expected an object with a {key!r} field, got {type(item).__name__}")
    if key not in item:
        raise BenchError(f"{where}: missing field {key!r} (fields: {', '.join(map(str, item))})")
    value = item[key]
    if value is None or isinstance(value, (list, dict, bool)):
        raise BenchError(f"{where}: field {key!r} must be text, got {value!r}")
    text = str(value).strip()
    if not text and not allow_empty:
        raise BenchError(f"{where}: field {key!r} is empty")
    return text


def answer_type_of(value: Any, where: str) -> str:
    """``OPEN``/``CLOSED`` (any case, spaces) -> ``open``/``closed``."""
    key = str(value).strip().lower()
    if key not in ("open", "closed"):
        raise BenchError(f"{where}: answer_type {value!r} is not OPEN or CLOSED")
    return key


def closed_if_yes_no(answer: str) -> str:
    """``closed`` for a yes/no answer, else ``open`` (PathVQA and the answer-only exports)."""
    return "closed" if answer.strip().strip(".").lower() in ("yes", "no") else "open"


def check_split(dataset: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise BenchError(f"{dataset} has no split {split!r}; valid splits: {', '.join(splits)}")


def read_json(path: Path, what: str) -> Any:
    """A JSON file with a clear error for a missing, empty or malformed file."""
    import json

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found ({what})") from None
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc})") from None
    if not raw.strip():
        raise BenchError(f"{path}: the file is empty; expected {what}")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
