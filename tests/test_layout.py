"""The seams of DESIGN.md: bench/ never imports tasks/ or models/; reports/ imports none of
tasks/, models/, leaderboard/; leaderboard/ imports neither tasks/ nor models/ and only bench/cli.py
calls it. Checked on the source's import statements (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


# the one module allowed to import what its package otherwise may not
ALLOWED = {"bench/cli.py": {"leaderboard"}}


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("bench", {"tasks", "models", "leaderboard"}),
        ("reports", {"tasks", "models", "leaderboard"}),
        ("tasks", {"models", "leaderboard"}),
        ("models", {"tasks", "leaderboard"}),
        ("leaderboard", {"tasks", "models"}),
    ],
)
def test_no_forbidden_imports(package, forbidden):
    bad = {
        f: sorted(names & forbidden - ALLOWED.get(f, set()))
        for f, names in _imports(package).items()
        if names & forbidden - ALLOWED.get(f, set())
    }
    assert bad == {}


def test_only_the_cli_calls_the_leaderboard():
    callers = {
        f
        for pkg in ("bench", "reports", "tasks", "models")
        for f, names in _imports(pkg).items()
        if "leaderboard" in names
    }
    assert callers == {"bench/cli.py"}
