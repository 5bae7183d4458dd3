"""ReXVal (Yu et al. 2023, PhysioNet): radiologists' error counts on candidate chest X-ray reports.

PhysioNet release (credentialed; derived from MIMIC-CXR), unpacked as is::

    50_samples_gt_and_candidates.csv                 study_id, gt_report, radgraph, bertscore, s_emb, bleu
    6_valid_raters_per_rater_error_categories.csv    study_number, candidate_type, rater_index,
                                                     error_category, clinically_significant, num_errors

The first file has one row per study: the reference report and one candidate report per column
after ``gt_report`` (named by the metric that retrieved it). In the second file ``study_number`` is
the 0-based row of a study in the first file, ``candidate_type`` a candidate column name,
``error_category`` 1-6 (1 false finding, 2 omitted finding, 3 wrong location, 4 wrong severity,
5 comparison not in the reference, 6 omitted comparison), ``clinically_significant`` a boolean and
``num_errors`` a count. Columns are read by their header names, whatever their order.

One Sample per (study, candidate): 50 × 4 = 200, split ``test``. ``sections["findings"]`` = the
reference report; ``meta["candidate_report"]`` the candidate; per rater the significant and
insignificant counts per category and their sums; and the usual aggregate: the sum over categories
per rater, then the mean over the raters (``mean_significant_errors``, ``mean_total_errors``). The
raters are every ``rater_index`` of the file; a rater with no row for a pair counted 0 errors there.
These are the targets of the CheckPrompt validation (Kendall τ-b, LLaVA-Rad).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.data.common import CheckReport, read_table
from bench.data.hf_parquet import check_dataset, check_split
from bench.interfaces import BenchError, Sample

DATASET = "rexval"
SPLITS = ("test",)
REPORTS = "50_samples_gt_and_candidates.csv"
RATINGS = "6_valid_raters_per_rater_error_categories.csv"
RATING_COLUMNS = (
    "study_number",
    "candidate_type",
    "rater_index",
    "error_category",
    "clinically_significant",
    "num_errors",
)
CATEGORIES = (1, 2, 3, 4, 5, 6)
CATEGORY_NAMES = {
    1: "false prediction of finding",
    2: "omission of finding",
    3: "incorrect location/position of finding",
    4: "incorrect severity of finding",
    5: "mention of comparison not in the reference",
    6: "omission of comparison describing a change",
}
_TRUE = {"true", "1", "1.0", "yes", "t", "y"}
_FALSE = {"false", "0", "0.0", "no", "f", "n"}


def _int(value: str, where: str, what: str, *, low: int | None = None, high: int | None = None) -> int:
    try:
        number = float(value)
    except ValueError:
        raise BenchError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(number) or number != int(number):
        raise BenchError(f"{where}: {what} {value!r} is not a whole number")
    out = int(number)
    if (low is not None and out < low) or (high is not None and out > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise BenchError(f"{where}: {what} {value!r} is outside {bounds}")
    return out


def _bool(value: str, where: str) -> bool:
    key = value.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise BenchError(f"{where}: clinically_significant {value!r} is not True/False")


def _data_columns(columns: list[str]) -> list[str]:
    return [c for c in columns if c and not c.startswith("Unnamed")]


def read_rexval(root: Path) -> tuple[Any, list[str], dict[tuple[int, str], dict[str, dict[str, list[int]]]], list[str]]:
    """(reports frame, candidate columns, errors[(study, candidate)][rater] -> counts, raters)."""
    reports_path, ratings_path = root / REPORTS, root / RATINGS
    for p in (reports_path, ratings_path):
        if not p.is_file():
            raise BenchError(f"{root}: missing {p.name} (ReXVal)")
    reports = read_table(reports_path, ("study_id", "gt_report"))
    candidates = [c for c in _data_columns(list(reports.columns)) if c not in ("study_id", "gt_report")]
    if not candidates:
        raise BenchError(
            f"{reports_path}: no candidate report column after study_id, gt_report "
            "(expected radgraph, bertscore, s_emb, bleu)"
        )
    for i, row in enumerate(reports.to_dict("records")):
        if not row["gt_report"]:
            raise BenchError(f"{reports_path} line {i + 2}: gt_report is empty")
    ratings = read_table(ratings_path, RATING_COLUMNS)
    errors: dict[tuple[int, str], dict[str, dict[str, list[int]]]] = {}
    raters: set[str] = set()
    n = len(reports)
    for i, row in enumerate(ratings.to_dict("records")):
        where = f"{ratings_path} line {i + 2}"
        study = _int(row["study_number"], where, "study_number", low=0, high=n - 1)
        candidate = row["candidate_type"]
        if candidate not in candidates:
            raise BenchError(f"{where}: candidate_type {candidate!r} is not a column of {REPORTS} ({candidates})")
        rater = str(_int(row["rater_index"], where, "rater_index", low=0)) if row["rater_index"] else ""
        if not rater:
            raise BenchError(f"{where}: rater_index is empty")
        category = _int(row["error_category"], where, "error_category", low=1, high=6)
        significant = _bool(row["clinically_significant"], where)
        count = _int(row["num_errors"], where, "num_errors", low=0)
        raters.add(rater)
        per = errors.setdefault((study, candidate), {}).setdefault(
            rater, {"significant": [0] * 6, "insignificant": [0] * 6}
        )
        per["significant" if significant else "insignificant"][category - 1] += count
    return reports, candidates, errors, sorted(raters, key=int)


def load(root: str | Path, split: str = "test") -> list[Sample]:
    """One Sample per (study, candidate report)."""
    root = Path(root)
    check_split(DATASET, split, SPLITS)
    reports, candidates, errors, raters = read_rexval(root)
    zero = {"significant": [0] * 6, "insignificant": [0] * 6}
    out = []
    for study, row in enumerate(reports.to_dict("records")):
        for candidate in candidates:
            per = errors.get((study, candidate), {})
            by_rater = {r: per.get(r, zero) for r in raters}
            sig = {r: sum(c["significant"]) for r, c in by_rater.items()}
            tot = {r: sum(c["significant"]) + sum(c["insignificant"]) for r, c in by_rater.items()}
            k = len(raters) or 1
            meta: dict[str, Any] = {
                "study_id": row["study_id"],
                "study_number": study,
                "candidate": candidate,
                "candidate_report": row[candidate],
                "raters": list(raters),
                "errors": {r: {key: list(v) for key, v in c.items()} for r, c in by_rater.items()},
                "significant_errors": sig,
                "total_errors": tot,
                "mean_significant_errors": sum(sig.values()) / k,
                "mean_total_errors": sum(tot.values()) / k,
                "mean_significant_by_category": {
                    str(c): sum(v["significant"][c - 1] for v in by_rater.values()) / k for c in CATEGORIES
                },
                "mean_total_by_category": {
                    str(c): sum(v["significant"][c - 1] + v["insignificant"][c - 1] for v in by_rater.values()) / k
                    for c in CATEGORIES
                },
            }
            out.append(
                Sample(
                    id=f"{DATASET}-{study:02d}-{candidate}",
                    dataset=DATASET,
                    split=split,
                    sections={"findings": row["gt_report"]},
                    meta=meta,
                )
            )
    return out


def check(root: str | Path, **options: Any) -> CheckReport:
    return check_dataset(DATASET, Path(root), load, SPLITS, **options)
