"""Diagnostic-evidence extraction for ``lgdea`` (LGDEA, eq. 2: ``E(R) = LLM(R)``).

An extractor turns each report into a short list of *evidence phrases*, one concise abnormal finding
each. Two kinds are pluggable (``extractor=rules|llm`` in ``bench train lgdea --train-args``):

``rules`` (:class:`RuleEvidenceExtractor`, offline, the default)
    The clauses of the report in which the offline CheXpert rule labeler
    (:mod:`bench.metrics.chexpert_rules`) finds a positive (or, by default, hedged) mention of an
    abnormal observation (every observation except No Finding and Support Devices), lower-cased, in
    report order, without duplicates. "At the right lung base there is large consolidation. No
    pneumothorax." gives ``["at the right lung base there is large consolidation"]``.

``llm`` (:class:`LLMEvidenceExtractor`)
    Any OpenAI-compatible chat endpoint, reached through the ``openai`` adapter of
    :mod:`models.openai_chat` (same argument names and checks, the same loopback-only privacy guard
    unless ``allow_remote=true``, the key only from the environment, retries with backoff). The prompt
    is :data:`LLM_PROMPT` (our own wording). The answer is read one finding per line (list markers and
    numbering dropped; ``NONE`` means no abnormal finding). Answers are cached in a JSON file keyed by
    the report's hash, so re-training never asks again: ``cache=PATH``, by default
    ``$BENCH_CACHE_DIR/lgdea-evidence/<model+endpoint+prompt hash>.json``. The file is rewritten
    (atomically) after every chunk of answers, so an interrupted extraction resumes where it stopped.

A report without abnormal evidence is represented by the single phrase :data:`NORMAL_EVIDENCE` (see
:func:`evidence_or_normal`), so that normal studies also have an evidence distribution.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from bench.interfaces import BenchError, GenerationRequest, stable_hash

MODEL_NAME = "lgdea"
EXTRACTOR_KINDS = ("rules", "llm")
NORMAL_EVIDENCE = "no acute cardiopulmonary abnormality"
MAX_PHRASES = 16  # evidence phrases kept per report
MAX_PHRASE_CHARS = 200
CACHE_FORMAT = 1

LLM_SYSTEM = "You are a radiologist's assistant. You read chest radiograph reports and extract their findings."
LLM_PROMPT = """Read the chest X-ray report below and list each abnormal finding it describes.

Rules:
- one finding per line, as a short phrase of a few words; keep its location and severity when the report gives them;
- no numbering, no explanations, nothing else;
- leave out everything the report calls normal, absent or resolved, comparisons with earlier studies, \
technique and recommendations;
- keep findings the report calls possible, probable or likely;
- if the report describes no abnormality at all, answer with the single word NONE.

Report:
{report}"""
PROMPT_VERSION = stable_hash({"system": LLM_SYSTEM, "prompt": LLM_PROMPT})

# --llm-- arguments: those of models.openai_chat (minus device) plus where the answers are cached
_LLM_EXTRA = ("cache", "chunk_size", "max_tokens")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,2}[.):]|\(?[a-z][.)])\s*", re.IGNORECASE)
_NONE_ANSWERS = frozenset({"none", "none.", "no abnormal findings", "no abnormalities", "n/a", "normal"})


class EvidenceExtractor(Protocol):
    kind: str

    def extract(self, reports: Sequence[str]) -> list[list[str]]: ...

    def describe(self) -> dict[str, Any]: ...


def evidence_or_normal(phrases: Sequence[str]) -> list[str]:
    """The phrases, or ``[NORMAL_EVIDENCE]`` when there are none."""
    return list(phrases) if phrases else [NORMAL_EVIDENCE]


def _dedupe(phrases: Sequence[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for p in phrases:
        p = " ".join(str(p).split()).strip(" .;,")[:MAX_PHRASE_CHARS].strip()
        if p and p.lower() not in seen:
            seen.add(p.lower())
            out.append(p)
    return out[:MAX_PHRASES]


# --------------------------------------------------------------------------- rules


class RuleEvidenceExtractor:
    """Clauses with a positive (or hedged) abnormal CheXpert observation, by the offline rule labeler."""

    kind = "rules"

    def __init__(self, include_uncertain: bool = True) -> None:
        self.include_uncertain = bool(include_uncertain)

    def extract_one(self, report: str) -> list[str]:
        from bench.metrics.chexpert_rules import mentions
        from bench.metrics.clinical import NO_FINDING, POSITIVE, UNCERTAIN

        states = {POSITIVE, UNCERTAIN} if self.include_uncertain else {POSITIVE}
        clauses = [
            m.clause
            for m in mentions(report or "")
            if m.observation not in (NO_FINDING, "Support Devices") and m.state in states
        ]
        return _dedupe(clauses)

    def extract(self, reports: Sequence[str]) -> list[list[str]]:
        return [self.extract_one(r) for r in reports]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "include_uncertain": self.include_uncertain}


# --------------------------------------------------------------------------- LLM


def parse_llm_answer(text: str) -> list[str]:
    """Evidence phrases of an answer: one per line, list markers dropped; ``NONE`` gives ``[]``."""
    phrases = []
    for line in (text or "").splitlines():
        line = _LIST_MARKER.sub("", line).strip().strip("\"'`").strip()
        if not line or line.lower().rstrip(".") in {a.rstrip(".") for a in _NONE_ANSWERS}:
            continue
        if line.endswith(":"):  # a heading such as "Findings:"
            continue
        phrases.append(line)
    return _dedupe(phrases)


def report_key(report: str) -> str:
    return hashlib.sha256(" ".join(report.split()).encode("utf-8")).hexdigest()[:32]


def default_cache_dir() -> Path:
    base = os.environ.get("BENCH_CACHE_DIR") or "~/.cache/medvlbench"
    return Path(base).expanduser() / "lgdea-evidence"


class LLMEvidenceExtractor:
    """Evidence phrases from an OpenAI-compatible chat endpoint (see the module docstring)."""

    kind = "llm"

    def __init__(self, **args: Any) -> None:
        from models.openai_chat import ARGS, OpenAIChat

        accepted = [a for a in ARGS if a != "device"] + list(_LLM_EXTRA)
        unknown = sorted(set(args) - set(accepted) - {"api_key", "key"})  # the openai adapter explains those
        if unknown:
            raise BenchError(
                f"{MODEL_NAME}: unknown extractor_args {', '.join(unknown)} for extractor=llm; "
                f"accepted: {', '.join(accepted)}"
            )
        if not args.get("model"):
            raise BenchError(
                f"{MODEL_NAME}: extractor=llm needs the endpoint's model id: "
                "extractor_args=model=NAME;base_url=http://127.0.0.1:8000/v1"
            )
        client_args = {k: v for k, v in args.items() if k not in _LLM_EXTRA}
        try:
            self.client = OpenAIChat(**client_args)
        except BenchError as exc:  # name this model, keep the openai adapter's explanation
            raise BenchError(f"{MODEL_NAME} evidence extractor: {exc}") from None
        self.chunk_size = int(args.get("chunk_size") or 64)
        self.max_tokens = int(args.get("max_tokens") or 256)
        if self.chunk_size <= 0 or self.max_tokens <= 0:
            raise BenchError(f"{MODEL_NAME}: extractor_args chunk_size and max_tokens must be positive")
        s = self.client.settings
        self.identity = {"model": s.model, "endpoint": s.endpoint, "prompt": PROMPT_VERSION}
        cache = args.get("cache")
        self.cache_path = (
            Path(str(cache)).expanduser() if cache else default_cache_dir() / f"{stable_hash(self.identity)}.json"
        )
        self.stats = {"queried": 0, "cached": 0}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.identity}

    # ------------------------------------------------------------------ cache

    def _read_cache(self) -> dict[str, list[str]]:
        path = self.cache_path
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchError(
                f"{MODEL_NAME}: cannot read the evidence cache {path}: {exc} (delete it to query again)"
            ) from None
        if not isinstance(data, Mapping) or data.get("format") != CACHE_FORMAT:
            raise BenchError(f"{MODEL_NAME}: {path} is not an lgdea evidence cache (format {CACHE_FORMAT})")
        if data.get("identity") != self.identity:
            raise BenchError(
                f"{MODEL_NAME}: the evidence cache {path} holds answers of {data.get('identity')}, "
                f"not of {self.identity}; give another cache=PATH"
            )
        answers = data.get("answers")
        if not isinstance(answers, Mapping):
            raise BenchError(f"{MODEL_NAME}: {path} has no 'answers' object")
        return {str(k): [str(p) for p in v] for k, v in answers.items() if isinstance(v, list)}

    def _write_cache(self, answers: Mapping[str, list[str]]) -> None:
        path = self.cache_path
        payload = {"format": CACHE_FORMAT, "identity": self.identity, "answers": dict(sorted(answers.items()))}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise BenchError(f"{MODEL_NAME}: cannot write the evidence cache {path}: {exc}") from None

    # ------------------------------------------------------------------ extraction

    def request(self, report: str) -> GenerationRequest:
        return GenerationRequest(
            images=(),
            prompt=LLM_PROMPT.format(report=" ".join(report.split())),
            system=LLM_SYSTEM,
            max_new_tokens=self.max_tokens,
            temperature=0.0,
            sample_id=report_key(report)[:12],
        )

    def extract(self, reports: Sequence[str]) -> list[list[str]]:
        keys = [report_key(r) for r in reports]
        answers = self._read_cache()
        todo: dict[str, str] = {}
        for key, report in zip(keys, reports):
            if key not in answers and key not in todo:
                todo[key] = report
        self.stats = {"queried": len(todo), "cached": len(set(keys)) - len(todo)}
        items = list(todo.items())
        try:
            for start in range(0, len(items), self.chunk_size):
                chunk = items[start : start + self.chunk_size]
                texts = self.client.generate([self.request(r) for _, r in chunk])
                for (key, _), text in zip(chunk, texts):
                    answers[key] = parse_llm_answer(text)
                self._write_cache(answers)
        finally:
            self.client.close()
        return [list(answers[k]) for k in keys]


# --------------------------------------------------------------------------- factory


def build_extractor(kind: str, args: Mapping[str, Any] | None = None) -> EvidenceExtractor:
    """``rules`` (argument ``include_uncertain``) or ``llm`` (the openai adapter's arguments + cache)."""
    args = dict(args or {})
    if kind == "rules":
        unknown = sorted(set(args) - {"include_uncertain"})
        if unknown:
            raise BenchError(
                f"{MODEL_NAME}: unknown extractor_args {', '.join(unknown)} for extractor=rules; "
                "accepted: include_uncertain"
            )
        return RuleEvidenceExtractor(**args)
    if kind == "llm":
        return LLMEvidenceExtractor(**args)
    raise BenchError(f"{MODEL_NAME}: unknown extractor {kind!r}: expected one of {', '.join(EXTRACTOR_KINDS)}")


def parse_extractor_args(value: Any) -> dict[str, Any]:
    """``"k=v;k2=v2"``, a JSON object string or a mapping → dict (numbers and booleans converted)."""
    from models.reference.meddr_rag import parse_nested_args

    try:
        return parse_nested_args(value, "extractor_args")
    except BenchError as exc:
        message = str(exc).split(": ", 1)[-1]
        raise BenchError(f"{MODEL_NAME}: {message}") from None


__all__ = [
    "EXTRACTOR_KINDS",
    "LLM_PROMPT",
    "NORMAL_EVIDENCE",
    "LLMEvidenceExtractor",
    "RuleEvidenceExtractor",
    "build_extractor",
    "evidence_or_normal",
    "parse_extractor_args",
    "parse_llm_answer",
]
