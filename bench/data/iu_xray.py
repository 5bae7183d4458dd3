"""IU X-ray in the R2Gen layout (Chen et al. 2020): one Sample per study, two views, findings text.

The R2Gen release (``iu_xray.zip`` linked from https://github.com/zhjohnchan/R2Gen), unpacked as is::

    annotation.json      {"train": [...], "val": [...], "test": [...]}
    images/CXR2384_IM-0942/0.png, images/CXR2384_IM-0942/1.png, ...

Each item: ``{"id": "CXR2384_IM-0942", "report": "...", "image_path": ["CXR2384_IM-0942/0.png",
"CXR2384_IM-0942/1.png"], "split": "train"}`` (2,069 / 296 / 590 studies). The report is R2Gen's
findings text, so ``sections["findings"]`` = report; ``images`` = the listed views in order. MedDr
and R2Gen evaluate on the 590 test studies (1,180 images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.data.common import CheckReport
from bench.data.hf_parquet import ImageSource, check_dataset, check_split, read_json, text_field
from bench.interfaces import BenchError, Sample

DATASET = "iu_xray"
SPLITS = ("train", "val", "test")
ANNOTATION = "annotation.json"


def _annotation(root: Path) -> dict[str, Any]:
    path = root / ANNOTATION
    if not path.is_file():
        raise BenchError(f"{root}: missing {ANNOTATION} (the R2Gen IU X-ray annotation)")
    data = read_json(path, 'a JSON object {"train": [...], "val": [...], "test": [...]}')
    if not isinstance(data, dict):
        raise BenchError(f'{path}: expected a JSON object {{"train": [...], "val": [...], "test": [...]}}')
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise BenchError(f"{path}: missing key(s) {', '.join(missing)}; expected train, val and test lists")
    for s in SPLITS:
        if not isinstance(data[s], list):
            raise BenchError(f"{path}: {s!r} must be a list of studies, got {type(data[s]).__name__}")
    return data


def load(root: str | Path, split: str, *, check_images: bool = True) -> list[Sample]:
    """Studies of one R2Gen split."""
    root = Path(root)
    check_split(DATASET, split, SPLITS)
    data = _annotation(root)
    path = root / ANNOTATION
    images = ImageSource.find(DATASET, root, ("images",), required=check_images)
    # ids must be unique over the whole file, not only within the split
    owner: dict[str, str] = {}
    for s in SPLITS:
        for k, item in enumerate(data[s]):
            ident = text_field(item, "id", f"{path} {s}[{k}]")
            if ident in owner:
                raise BenchError(f"{path}: study id {ident!r} appears twice ({owner[ident]} and {s})")
            owner[ident] = s
    out = []
    for k, item in enumerate(data[split]):
        where = f"{path} {split}[{k}]"
        ident = text_field(item, "id", where)
        where = f"{path} {split} id {ident}"
        report = text_field(item, "report", where, allow_empty=True)
        paths = item.get("image_path")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
            raise BenchError(f"{where}: image_path must be a non-empty list of image paths, got {paths!r}")
        declared = str(item.get("split", split)).strip()
        if declared and declared != split:
            raise BenchError(f"{where}: listed under {split!r} but its split field says {declared!r}")
        out.append(
            Sample(
                id=ident,
                dataset=DATASET,
                split=split,
                images=[images.ref(p.strip().lstrip("/")) for p in paths],
                sections={"findings": report} if report else {},
                meta={"image_paths": [p.strip() for p in paths], "n_images": len(paths)},
            )
        )
    return out


def check(root: str | Path, **options: Any) -> CheckReport:
    return check_dataset(DATASET, Path(root), load, SPLITS, **options)
