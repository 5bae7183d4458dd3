"""Open-I / Indiana University chest X-ray collection, raw release: one Sample per report.

Official download (https://openi.nlm.nih.gov/faq, "Indiana University - Chest X-rays"), unpacked as is::

    ecgen-radiology/1.xml ... 3955 report XMLs         (NLMCXR_reports.tgz)
    NLMCXR_png/CXR1_1_IM-0001-3001.png ...  7,470 PNGs (NLMCXR_png.tgz; also accepted under images/,
                                                        or unpacked straight into the dataset folder)

Each XML holds ``<uId id="CXR1"/>``, ``<AbstractText Label="COMPARISON|INDICATION|FINDINGS|IMPRESSION">``,
``<MeSH>`` with ``<major>`` and ``<automatic>`` terms, and one ``<parentImage id="CXR1_1_IM-0001-3001">``
per image (0 to 5; the PNG is ``<id>.png``). Sections get lower-case keys; empty ones are dropped
from ``Sample.sections``. MeSH terms stay in ``meta`` (no label mapping is imposed on them).
3,955 reports, 3,425 with a non-empty FINDINGS section.

The XML is parsed with ``xml.etree``; any ``<!DOCTYPE``/``<!ENTITY`` declaration is refused before
parsing (no entity expansion). There is no official split: reports are split by their id with
``seeded_split`` (``seed`` 0, ``fractions`` 0.7/0.1/0.2 by default); the seed, fractions and a hash
of the split's ids are recorded in ``meta``. Filters applied after the split (so they never move a
report to another split): ``require_findings``, ``require_images``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from bench.data.common import CheckReport, ids_hash, seeded_split
from bench.data.hf_parquet import ImageSource, check_dataset, check_split
from bench.interfaces import BenchError, Sample

DATASET = "openi"
SPLITS = ("train", "val", "test")
REPORT_FOLDERS = ("ecgen-radiology", "NLMCXR_reports/ecgen-radiology")
IMAGE_FOLDERS = ("NLMCXR_png", "images", "png")
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
_DECLARATION = re.compile(rb"<!\s*(doctype|entity)", re.IGNORECASE)


@dataclass(frozen=True)
class OpenIReport:
    """One parsed report XML."""

    id: str  # "CXR1" ("" when the XML has no <uId>)
    sections: dict[str, str] = field(default_factory=dict)  # lower-case label -> text ("" when empty)
    mesh_major: tuple[str, ...] = ()
    mesh_automatic: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    pmc_id: str = ""


def _text(node: ElementTree.Element) -> str:
    return " ".join("".join(node.itertext()).split())


def parse_openi_xml(data: bytes, source: str = "<xml>") -> OpenIReport:
    """Parse one Open-I report XML; DOCTYPE/ENTITY declarations and malformed XML are BenchErrors."""
    if _DECLARATION.search(data):
        raise BenchError(f"{source}: refused an XML with a DOCTYPE/ENTITY declaration (entity expansion)")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise BenchError(f"{source}: malformed XML ({exc})") from None
    if root.tag != "eCitation":
        raise BenchError(f"{source}: root element <{root.tag}>, expected <eCitation> (an Open-I report)")
    uid = root.find("uId")
    pmc = root.find("pmcId")
    sections: dict[str, str] = {}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        if label:
            sections[label] = _text(node)
    mesh = root.find("MeSH")

    def terms(tag: str) -> tuple[str, ...]:
        return tuple(_text(n) for n in mesh.findall(tag)) if mesh is not None else ()

    images = tuple((p.get("id") or "").strip() for p in root.findall("parentImage"))
    return OpenIReport(
        id=(uid.get("id", "") if uid is not None else "").strip(),
        sections=sections,
        mesh_major=terms("major"),
        mesh_automatic=terms("automatic"),
        image_ids=tuple(i for i in images if i),
        pmc_id=(pmc.get("id", "") if pmc is not None else "").strip(),
    )


def _number(path: Path) -> tuple[int, str]:
    return (int(path.stem), path.name) if path.stem.isdigit() else (1 << 30, path.name)


def read_reports(root: Path) -> list[tuple[Path, OpenIReport]]:
    """Every report XML of the release folder, in numeric file order."""
    folder = next((root / f for f in REPORT_FOLDERS if (root / f).is_dir()), None)
    if folder is None:
        raise BenchError(f"{root}: missing folder {' or '.join(REPORT_FOLDERS)} (the Open-I report XMLs)")
    files = sorted(folder.glob("*.xml"), key=_number)
    if not files:
        raise BenchError(f"{folder}: no report XML (expected files like 1.xml)")
    out = []
    owner: dict[str, Path] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BenchError(f"{path}: cannot read ({exc})") from None
        report = parse_openi_xml(data, str(path))
        if not report.id:
            report = OpenIReport(**{**report.__dict__, "id": f"CXR{path.stem}"})
        if report.id in owner:
            raise BenchError(f"{path}: report id {report.id} already used by {owner[report.id]}")
        owner[report.id] = path
        out.append((path, report))
    return out


def _fractions(value: Any) -> dict[str, float]:
    if isinstance(value, Mapping):
        fr = {str(k): float(v) for k, v in value.items()}
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3:
        fr = dict(zip(SPLITS, (float(v) for v in value), strict=True))
    else:
        raise BenchError(f"{DATASET}: fractions must be {{train, val, test}} or three numbers, got {value!r}")
    if sorted(fr) != sorted(SPLITS):
        raise BenchError(f"{DATASET}: fractions must name train, val and test, got {sorted(fr)}")
    return {s: fr[s] for s in SPLITS}


def _image_source(root: Path, check_images: bool) -> ImageSource:
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return ImageSource(DATASET, folder=root / name)
    if next(root.glob("CXR*.png"), None) is not None:
        return ImageSource(DATASET, folder=root)
    return ImageSource.find(DATASET, root, IMAGE_FOLDERS, required=check_images)


def load(
    root: str | Path,
    split: str,
    *,
    seed: int = 0,
    fractions: Any = None,
    require_findings: bool = False,
    require_images: bool = False,
    check_images: bool = True,
) -> list[Sample]:
    """Reports of one seeded split."""
    root = Path(root)
    check_split(DATASET, split, SPLITS)
    fr = _fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise BenchError(f"{DATASET}: seed must be an integer, got {seed!r}") from None
    reports = read_reports(root)
    images = _image_source(root, check_images)
    assignment = seeded_split([r.id for _, r in reports], fr, seed)
    chosen = [(p, r) for p, r in reports if assignment[r.id] == split]
    split_hash = ids_hash(r.id for _, r in chosen)
    out = []
    for path, r in chosen:
        sections = {k: v for k, v in r.sections.items() if v}
        if require_findings and not sections.get("findings"):
            continue
        if require_images and not r.image_ids:
            continue
        out.append(
            Sample(
                id=r.id,
                dataset=DATASET,
                split=split,
                images=[images.ref(f"{i}.png") for i in r.image_ids],
                sections=sections,
                meta={
                    "xml": path.name,
                    "pmc_id": r.pmc_id,
                    "image_ids": list(r.image_ids),
                    "mesh_major": list(r.mesh_major),
                    "mesh_automatic": list(r.mesh_automatic),
                    "normal": r.mesh_major == ("normal",),
                    "split_seed": seed,
                    "split_fractions": fr,
                    "split_ids_hash": split_hash,
                },
            )
        )
    return out


def check(root: str | Path, **options: Any) -> CheckReport:
    return check_dataset(DATASET, Path(root), load, SPLITS, **options)
