"""CheXprompt (LLaVA-Rad): an LLM judge counts a generated report's errors against its reference.

Six error types (A false finding, B omitted finding, C wrong location, D wrong severity, E comparison not in
the reference, F omitted comparison), each counted separately for clinically significant and insignificant
errors. This module holds the judge's side of the metric:

- the judging prompt (our own wording, ``chexprompt_v1.j2`` beside this file, with five in-context examples
  written for medvlbench below) and its version, recorded in results and in the judge's cache keys;
- the parser of the judge's reply: the JSON object the prompt asks for, or the two-line "by type" format of
  the published protocol (``Number of clinically significant errors by type: [(A, 0), (B, 1), ...]`` then the
  same line for insignificant errors).

The aggregates are :mod:`bench.metrics.judge_metrics`; the calls themselves (endpoint, retries, cache, repair
of unreadable replies) :mod:`bench.metrics.judging` and :mod:`bench.metrics.judge_client`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).with_name("chexprompt_v1.j2")
TEMPERATURE = 0.0
FAMILY = "llm judge"


@dataclass(frozen=True)
class ErrorType:
    letter: str
    key: str
    description: str


ERROR_TYPES: tuple[ErrorType, ...] = (
    ErrorType("A", "false_finding", "False finding: the candidate reports a finding that the reference does not."),
    ErrorType(
        "B", "omitted_finding", "Omitted finding: the candidate leaves out a finding that the reference reports."
    ),
    ErrorType(
        "C",
        "wrong_location",
        "Wrong location: a finding that both reports describe is placed on another side, lobe, level or position "
        "(including the position of a tube, line or device).",
    ),
    ErrorType(
        "D",
        "wrong_severity",
        "Wrong severity: a finding that both reports describe is given another severity, size or extent.",
    ),
    ErrorType(
        "E",
        "false_comparison",
        "Comparison not in the reference: the candidate describes a change from an earlier study (or its absence) "
        "that the reference does not describe.",
    ),
    ErrorType(
        "F",
        "omitted_comparison",
        "Omitted comparison: the candidate leaves out a change from an earlier study that the reference describes.",
    ),
)
LETTERS = tuple(t.letter for t in ERROR_TYPES)


@dataclass(frozen=True)
class Judgement:
    """Error counts per type (in ``LETTERS`` order) for one (reference, candidate) pair."""

    significant: tuple[int, ...]
    insignificant: tuple[int, ...]

    @property
    def n_significant(self) -> int:
        return sum(self.significant)

    @property
    def n_total(self) -> int:
        return sum(self.significant) + sum(self.insignificant)

    def to_json(self) -> dict[str, list[int]]:
        return {"significant": list(self.significant), "insignificant": list(self.insignificant)}

    @classmethod
    def from_json(cls, data: Any) -> Judgement:
        return cls(tuple(int(x) for x in data["significant"]), tuple(int(x) for x in data["insignificant"]))

    def answer(self) -> str:
        """The reply the prompt asks for (the in-context examples' answers)."""
        return json.dumps(
            {
                "significant": dict(zip(LETTERS, self.significant, strict=True)),
                "insignificant": dict(zip(LETTERS, self.insignificant, strict=True)),
            }
        )


@dataclass(frozen=True)
class Example:
    reference: str
    candidate: str
    counts: Judgement


def _j(significant: dict[str, int], insignificant: dict[str, int]) -> Judgement:
    return Judgement(tuple(significant.get(x, 0) for x in LETTERS), tuple(insignificant.get(x, 0) for x in LETTERS))


# Written for medvlbench; between them they show every error type, both grades and an error-free pair.
EXAMPLES: tuple[Example, ...] = (
    Example(
        "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
        "Heart size is within normal limits. Lungs are clear without consolidation. No effusion or pneumothorax.",
        _j({}, {}),
    ),
    Example(
        "Moderate right pleural effusion with adjacent right basilar atelectasis. Heart size is normal.",
        "Moderate left pleural effusion. Mild cardiomegaly.",
        _j({"A": 1, "C": 1}, {"B": 1}),
    ),
    Example(
        "Compared with the prior radiograph, the left lower lobe consolidation has improved. The endotracheal tube "
        "terminates 4 cm above the carina.",
        "Left lower lobe consolidation. Endotracheal tube tip is 4 cm above the carina. Heart size is unchanged "
        "from the prior study.",
        _j({"F": 1}, {"E": 1}),
    ),
    Example(
        "Mild pulmonary vascular congestion. Small bilateral pleural effusions. Mild degenerative changes of the "
        "thoracic spine.",
        "Moderate pulmonary edema. Small bilateral pleural effusions.",
        _j({"D": 1}, {"B": 1}),
    ),
    Example(
        "Small right apical pneumothorax. Right chest tube in place. Calcified granuloma in the left upper lobe.",
        "Right chest tube in place. No pneumothorax. Calcified granuloma in the left lower lobe.",
        _j({"B": 1}, {"C": 1}),
    ),
)


# --------------------------------------------------------------------------- the prompt


@functools.cache
def _template() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )
    return env.get_template(TEMPLATE.name).module


@functools.cache
def prompt_version() -> str:
    """``chexprompt-v1-<hash>`` of the template, the error types and the examples: any edit is a new version."""
    material = {
        "template": TEMPLATE.read_text(encoding="utf-8"),
        "types": [t.__dict__ for t in ERROR_TYPES],
        "examples": [[e.reference, e.candidate, e.counts.to_json()] for e in EXAMPLES],
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:10]
    return f"chexprompt-v1-{digest}"


def _examples() -> list[dict[str, str]]:
    return [{"reference": e.reference, "candidate": e.candidate, "answer": e.counts.answer()} for e in EXAMPLES]


def render_messages(reference: str, candidate: str) -> list[dict[str, str]]:
    """The chat messages (system, user) that ask the judge about one pair."""
    module = _template()
    user = module.user(" ".join(reference.split()), " ".join(candidate.split()), _examples(), ERROR_TYPES)
    return [{"role": "system", "content": str(module.system())}, {"role": "user", "content": str(user)}]


def repair_messages(messages: list[dict[str, str]], reply: str, reason: str) -> list[dict[str, str]]:
    """The conversation continued with the unreadable reply and the instruction to answer in the format."""
    return [
        *messages,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": str(_template().repair(reason))},
    ]


# --------------------------------------------------------------------------- parsing the reply


class JudgeParseError(ValueError):
    """The judge's reply is in neither accepted format; the message says what was wrong (one line)."""


_BY_TYPE = {
    "significant": re.compile(r"number\s+of\s+clinically\s+significant\s+errors\s+by\s+type\s*:", re.IGNORECASE),
    "insignificant": re.compile(r"number\s+of\s+clinically\s+insignificant\s+errors\s+by\s+type\s*:", re.IGNORECASE),
}
_PAIR = re.compile(r"\(\s*([A-Za-z])\s*,\s*([^()]*?)\s*\)")


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise JudgeParseError(f"{where} is {value!r}, not a count")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise JudgeParseError(f"{where} is {value!r}, not a whole number")
    if number < 0:
        raise JudgeParseError(f"{where} is negative ({number})")
    return number


def _by_letter(pairs: list[tuple[str, Any]], part: str) -> tuple[int, ...]:
    counts: dict[str, int] = {}
    for letter, value in pairs:
        key = letter.strip().upper()
        if key not in LETTERS:
            raise JudgeParseError(f"{part}: unknown error type {letter!r} (expected A to F)")
        if key in counts:
            raise JudgeParseError(f"{part}: error type {key} given twice")
        counts[key] = _count(value, f"{part} {key}")
    missing = [x for x in LETTERS if x not in counts]
    if missing:
        raise JudgeParseError(f"{part}: missing error type(s) {', '.join(missing)}")
    return tuple(counts[x] for x in LETTERS)


def _parse_by_type(text: str, found: dict[str, re.Match[str]]) -> Judgement:
    if len(found) < 2:
        missing = next(p for p in _BY_TYPE if p not in found)
        raise JudgeParseError(f"the line 'Number of clinically {missing} errors by type:' is missing")
    starts = sorted(m.start() for m in found.values())
    parts: dict[str, tuple[int, ...]] = {}
    for part, match in found.items():
        end = next((s for s in starts if s > match.start()), len(text))
        section = text[match.end() : end]
        parts[part] = _by_letter(_PAIR.findall(section), part)
    return Judgement(parts["significant"], parts["insignificant"])


def _json_objects(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    out, pos = [], text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        out.append(obj)
        pos = text.find("{", end)
    return out


def _parse_json(text: str) -> Judgement:
    objects = [o for o in _json_objects(text) if isinstance(o, dict)]
    if not objects:
        raise JudgeParseError("no JSON object and no 'Number of clinically significant errors by type:' line")
    for obj in objects:
        keys = {str(k).lower(): v for k, v in obj.items()}
        if "significant" in keys or "insignificant" in keys:
            parts = {}
            for part in ("significant", "insignificant"):
                value = keys.get(part)
                if not isinstance(value, dict):
                    raise JudgeParseError(f'the JSON object has no "{part}" object of counts by letter')
                parts[part] = _by_letter([(str(k), v) for k, v in value.items()], part)
            return Judgement(parts["significant"], parts["insignificant"])
    raise JudgeParseError('the JSON object has no "significant" and "insignificant" counts')


def parse_judgement(text: str) -> Judgement:
    """The counts in a judge's reply (JSON or the two-line by-type format); JudgeParseError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise JudgeParseError("the reply is empty")
    found = {part: m for part, rx in _BY_TYPE.items() if (m := rx.search(text))}
    if found:
        return _parse_by_type(text, found)
    return _parse_json(text)


# --------------------------------------------------------------------------- the aggregates' names

METRIC_PREFIX = "chexprompt_"
HEADLINE_METRICS: tuple[tuple[str, bool, str], ...] = (  # (name after the prefix, higher is better, description)
    ("mean_significant_errors", False, "mean clinically significant errors per report"),
    ("mean_total_errors", False, "mean errors per report, significant and insignificant"),
    ("pct_no_significant_errors", True, "% of reports without a clinically significant error"),
    ("pct_error_free", True, "% of reports without any error"),
)


def metric_table() -> list[tuple[str, bool, str]]:
    """Every CheXprompt aggregate as (attribute of :mod:`bench.metrics.judge_metrics`, higher is better,
    description), in reporting order: the four headline numbers, then each type (all, significant)."""
    rows = list(HEADLINE_METRICS)
    for t in ERROR_TYPES:
        label = t.description.split(":", 1)[0].lower()
        rows.append((t.key, False, f"mean errors of type {t.letter} ({label}) per report"))
        rows.append(
            (f"{t.key}_significant", False, f"mean clinically significant errors of type {t.letter} per report")
        )
    return rows


def metric_names() -> list[str]:
    return [METRIC_PREFIX + attr for attr, _, _ in metric_table()]


__all__ = [
    "ERROR_TYPES",
    "EXAMPLES",
    "LETTERS",
    "JudgeParseError",
    "Judgement",
    "metric_names",
    "metric_table",
    "parse_judgement",
    "prompt_version",
    "render_messages",
    "repair_messages",
]
