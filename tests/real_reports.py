"""Real radiology report text for tests: the IU X-ray (Open-I) reports shipped in torchxrayvision.

The PyPI wheel of ``torchxrayvision`` contains ``torchxrayvision/data/NLMCXR_reports.tgz``:
3,955 Open-I report XMLs with COMPARISON / INDICATION / FINDINGS / IMPRESSION sections and
MeSH terms. Their licence (CC BY-NC-ND) forbids redistribution, so they are never committed:
the wheel is fetched with ``pip download --no-deps`` (a package registry, allowed in CI) into a
cache folder, read in memory, and never installed (torchxrayvision needs torchvision).

    reports = iu_reports()          # list[IUReport], sorted by id
    pairs = iu_findings()           # the non-empty FINDINGS sections

Tests that need them call ``require_iu_reports()``, which skips with the reason when the wheel
cannot be fetched (no network and nothing cached).
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

WHEEL_SPEC = "torchxrayvision==1.5.7"
MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"


@dataclass(frozen=True)
class IUReport:
    id: str  # "CXR<n>"
    sections: dict[str, str] = field(default_factory=dict)  # lower-case label -> text ("" if absent)
    mesh_major: tuple[str, ...] = ()  # e.g. ("Cardiomegaly/mild", "Pulmonary Atelectasis/base/left")
    mesh_automatic: tuple[str, ...] = ()

    @property
    def findings(self) -> str:
        return self.sections.get("findings", "")

    @property
    def impression(self) -> str:
        return self.sections.get("impression", "")


def cache_dir() -> Path:
    root = os.environ.get("BENCH_TEST_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "medvlbench-tests")
    return Path(root)


def _wheel() -> Path:
    folder = cache_dir() / "torchxrayvision-wheel"
    found = sorted(folder.glob("torchxrayvision-*.whl"))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), WHEEL_SPEC]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    found = sorted(folder.glob("torchxrayvision-*.whl"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"could not download {WHEEL_SPEC}: {proc.stderr.strip()[-300:]}")
    return found[-1]


def parse_report(xml_bytes: bytes) -> IUReport:
    """One report XML, parsed by the Open-I reader (``bench.data.openi.parse_openi_xml``)."""
    from bench.data.openi import parse_openi_xml

    report = parse_openi_xml(xml_bytes, "NLMCXR_reports.tgz member")
    return IUReport(
        id=report.id,
        sections=dict(report.sections),
        mesh_major=report.mesh_major,
        mesh_automatic=report.mesh_automatic,
    )


def _id_key(report: IUReport) -> tuple[int, str]:
    digits = "".join(ch for ch in report.id if ch.isdigit())
    return (int(digits) if digits else -1, report.id)


@functools.cache
def iu_reports() -> tuple[IUReport, ...]:
    """All reports of the archive, sorted by their numeric id (raises RuntimeError if unavailable)."""
    with zipfile.ZipFile(_wheel()) as whl:
        blob = whl.read(MEMBER)
    out = []
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".xml"):
                handle = tar.extractfile(member)
                if handle is not None:
                    out.append(parse_report(handle.read()))
    return tuple(sorted(out, key=_id_key))


def iu_findings() -> list[IUReport]:
    """Reports with a non-empty FINDINGS section."""
    return [r for r in iu_reports() if r.findings]


def require_iu_reports() -> tuple[IUReport, ...]:
    """The reports, or ``pytest.skip`` with the reason when they cannot be fetched."""
    import pytest

    try:
        return iu_reports()
    except (RuntimeError, OSError, subprocess.TimeoutExpired, zipfile.BadZipFile, tarfile.TarError) as exc:
        pytest.skip(f"IU X-ray report text unavailable (needs {WHEEL_SPEC} from PyPI): {exc}")
