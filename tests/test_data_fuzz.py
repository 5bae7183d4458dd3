"""Shared fuzz test of the dataset readers: every malformed copy must fail ``bench data check`` cleanly.

Every ``tests/test_data_*.py`` module may define ``malformed_variants(tmp_path) -> list[(dataset,
root, expected substring)]``: a dataset folder in the real format with one thing broken, and a piece
of the message the user must see (usually the broken file's name). For each variant the real CLI
entry point (``bench.cli.main``, what ``bench data check NAME --root DIR`` runs) must exit with
status 2, print no traceback, and print the expected substring.

Modules are collected by file name, so readers added later join automatically; a module that does
not import (still being written) is reported as a warning here and fails in its own test file.
"""

from __future__ import annotations

import importlib
import traceback
import warnings
from pathlib import Path

import pytest

from bench.cli import main

MIN_VARIANTS = 30
HERE = Path(__file__).parent


def collect_variants(tmp_path: Path) -> list[tuple[str, str, Path, str]]:
    """(module, dataset, root, expected) from every tests/test_data_*.py that defines the hook."""
    out: list[tuple[str, str, Path, str]] = []
    for path in sorted(HERE.glob("test_data_*.py")):
        if path.stem == Path(__file__).stem:
            continue
        try:
            module = importlib.import_module(f"tests.{path.stem}")
        except Exception as exc:  # a module still being written must not break the others
            warnings.warn(f"{path.name} does not import ({exc!r}); its variants are skipped", stacklevel=1)
            continue
        hook = getattr(module, "malformed_variants", None)
        if hook is None:
            continue
        folder = tmp_path / path.stem
        folder.mkdir()
        for dataset, root, expected in hook(folder):
            out.append((path.stem, dataset, Path(root), expected))
    return out


def run_check(dataset: str, root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    """``bench data check DATASET --root ROOT`` in-process; an escaping exception becomes the
    traceback a user would have seen."""
    capsys.readouterr()
    try:
        code: int | None = main(["data", "check", dataset, "--root", str(root)])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        captured = capsys.readouterr()
        return None, captured.out + captured.err + traceback.format_exc()
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_every_malformed_variant_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    variants = collect_variants(tmp_path)
    failures = []
    for module, dataset, root, expected in variants:
        code, output = run_check(dataset, root, capsys)
        problems = []
        if code != 2:
            problems.append(f"exit status {code}, expected 2")
        if "Traceback" in output:
            problems.append("a traceback was printed")
        if expected not in output:
            problems.append(f"the output does not contain {expected!r}")
        if problems:
            failures.append(f"{module}: {dataset} {root.name}: {'; '.join(problems)}\n    output: {output[-600:]!r}")
    assert not failures, f"{len(failures)} of {len(variants)} malformed variants:\n" + "\n".join(failures)
    assert len(variants) >= MIN_VARIANTS, f"only {len(variants)} malformed variants in tests/test_data_*.py"


def test_a_clean_fixture_passes_the_same_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The in-process runner reports success on a good copy (so the checks above are not vacuous)."""
    from tests.test_data_covidx import make_covidx

    code, output = run_check("covidx", make_covidx(tmp_path / "covidx"), capsys)
    assert code == 0 and "covidx: ok" in output, output
