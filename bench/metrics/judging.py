"""Judging many (reference, candidate) pairs: cache, batches, the repair of unreadable replies, failures and
token accounting. The prompt and the parser are :mod:`bench.metrics.judge`; the transport is a *backend* with
``complete_many(conversations) -> list[Reply]`` (:class:`bench.metrics.judge_client.OpenAIJudgeClient`, or a
task's ``generate`` model for ``rexval_agreement``).

For each distinct pair: the verdict comes from the prediction cache (scope ``judge``, keyed by judge model +
prompt version + the two texts) when it is there; otherwise the judge is asked; a reply that cannot be parsed is
sent back once with a repair instruction; a reply still unreadable (or a request that failed after every retry)
is a judge failure: counted, with its reason, and returned as None, never as zero errors. Only parsed verdicts
are cached, so a re-run asks again for the failures and nothing else.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.cache import Key, PredictionCache, judge_key
from bench.interfaces import BenchError, batched
from bench.metrics.judge import (
    TEMPERATURE,
    Judgement,
    JudgeParseError,
    parse_judgement,
    prompt_version,
    render_messages,
    repair_messages,
)
from bench.metrics.judge_client import JudgeConfig, OpenAIJudgeClient, Reply

log = logging.getLogger("medvlbench.judge")
Conversation = list[dict[str, str]]


class JudgeBackend(Protocol):
    def complete_many(self, conversations: Sequence[Conversation]) -> list[Reply]: ...


@dataclass
class JudgeStats:
    pairs: int = 0  # pairs asked about (duplicates included)
    distinct: int = 0  # distinct (reference, candidate) pairs
    cache_hits: int = 0  # distinct pairs served from the cache
    requests: int = 0  # completions requested from the backend (repairs included)
    repairs: int = 0  # replies sent back with the repair instruction
    judged: int = 0  # pairs (duplicates included) with a verdict
    failed: int = 0  # pairs (duplicates included) without one
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_missing: int = 0  # completions whose server reported no token usage
    failure_reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class Verdict:
    judgement: Judgement | None
    reply: str | None = None
    repaired: bool = False
    failure: str | None = None


class Judge:
    """Judges pairs through ``backend``. ``model`` names the judge in the cache keys (needed with a ``cache``;
    a backend that caches by itself, such as a task's cached model, needs neither)."""

    def __init__(
        self,
        backend: JudgeBackend,
        model: str | None = None,
        cache: PredictionCache | None = None,
        describe: Mapping[str, Any] | None = None,
        prices: tuple[float, float] | None = None,
        batch_size: int = 64,
        reports_usage: bool = True,
    ) -> None:
        if cache is not None and not model:
            raise ValueError("a judge with a cache needs the judge model's name (part of the cache key)")
        self.backend = backend
        self.model = model or ""
        self.cache = cache
        self.description = dict(describe or ({"model": model} if model else {}))
        self.prices = prices
        self.batch_size = batch_size
        self.reports_usage = reports_usage
        self.stats = JudgeStats()

    @classmethod
    def from_config(cls, config: JudgeConfig, cache: PredictionCache | None) -> Judge:
        return cls(
            OpenAIJudgeClient(config), config.model, cache=cache, describe=config.describe(), prices=config.prices
        )

    @property
    def prompt_version(self) -> str:
        return prompt_version()

    def reset(self) -> None:
        self.stats = JudgeStats()
        backend_stats = getattr(self.backend, "stats", None)
        if isinstance(backend_stats, Counter):
            backend_stats.clear()

    # ------------------------------------------------------------------ judging

    def judge_pairs(self, references: Sequence[str], candidates: Sequence[str]) -> list[Judgement | None]:
        """One verdict (or None for a failure) per pair, in order."""
        return [v.judgement for v in self.verdicts(references, candidates)]

    def verdicts(self, references: Sequence[str], candidates: Sequence[str]) -> list[Verdict]:
        if len(references) != len(candidates):
            raise ValueError(f"{len(references)} references but {len(candidates)} candidates")
        version = self.prompt_version
        keys = [judge_key(self.model, version, r, c) for r, c in zip(references, candidates, strict=True)]
        pairs: dict[Key, tuple[str, str]] = {}
        for key, ref, cand in zip(keys, references, candidates, strict=True):
            pairs.setdefault(key, (ref, cand))
        found = self.cache.get_many(list(pairs)) if self.cache is not None else {}
        done: dict[Key, Verdict] = {}
        for key, value in found.items():
            done[key] = Verdict(Judgement.from_json(value["counts"]), value.get("reply"), bool(value.get("repaired")))
        todo = [k for k in pairs if k not in done]
        for chunk in batched(todo, self.batch_size):
            fresh = self._judge_chunk([pairs[k] for k in chunk])
            done.update(zip(chunk, fresh, strict=True))
            if self.cache is not None:
                self.cache.put_many(
                    (k, {"counts": v.judgement.to_json(), "reply": v.reply, "repaired": v.repaired})
                    for k, v in zip(chunk, fresh, strict=True)
                    if v.judgement is not None
                )
        out = [done[k] for k in keys]
        s = self.stats
        s.pairs += len(keys)
        s.distinct += len(pairs)
        s.cache_hits += len(found)
        for v in out:
            if v.judgement is None:
                s.failed += 1
                s.failure_reasons[v.failure or "unknown"] += 1
            else:
                s.judged += 1
        return out

    def _ask(self, conversations: list[Conversation]) -> list[Reply]:
        replies = self.backend.complete_many(conversations)
        if len(replies) != len(conversations):
            raise RuntimeError(f"the judge backend returned {len(replies)} replies for {len(conversations)} requests")
        self.stats.requests += len(replies)
        for r in replies:
            if r.error is None:
                if r.prompt_tokens is None or r.completion_tokens is None:
                    self.stats.usage_missing += 1
                self.stats.prompt_tokens += r.prompt_tokens or 0
                self.stats.completion_tokens += r.completion_tokens or 0
        return replies

    def _judge_chunk(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        conversations = [render_messages(ref, cand) for ref, cand in pairs]
        verdicts: list[Verdict] = []
        to_repair: list[tuple[int, Conversation]] = []
        for i, (conv, reply) in enumerate(zip(conversations, self._ask(conversations), strict=True)):
            if reply.error is not None:
                verdicts.append(Verdict(None, None, failure="request failed"))
                log.warning(f"judge: pair {i + 1} of the batch not judged: {reply.error}")
                continue
            try:
                verdicts.append(Verdict(parse_judgement(reply.text or ""), reply.text))
            except JudgeParseError as exc:
                verdicts.append(Verdict(None, reply.text, failure="unparseable reply"))
                to_repair.append((i, repair_messages(conv, reply.text or "", str(exc))))
        if to_repair:
            self.stats.repairs += len(to_repair)
            for (i, _), reply in zip(to_repair, self._ask([c for _, c in to_repair]), strict=True):
                if reply.error is not None:
                    verdicts[i] = Verdict(None, verdicts[i].reply, failure="request failed")
                    continue
                try:
                    verdicts[i] = Verdict(parse_judgement(reply.text or ""), reply.text, repaired=True)
                except JudgeParseError as exc:
                    log.warning(f"judge: reply unreadable after the repair instruction ({exc})")
                    verdicts[i] = Verdict(None, reply.text, failure="unparseable reply")
        return verdicts

    # ------------------------------------------------------------------ what results record

    def summary(self) -> dict[str, Any]:
        """The judge block of a result: who judged, with which prompt, what it cost, what failed."""
        s = self.stats
        out: dict[str, Any] = {
            "metric": "CheXprompt",
            **self.description,
            "prompt_version": self.prompt_version,
            "temperature": TEMPERATURE,
            "n_pairs": s.pairs,
            "n_judged": s.judged,
            "n_judge_failed": s.failed,
            "failure_reasons": dict(s.failure_reasons),
            "cache_hits": s.cache_hits,
            "requests": s.requests,
            "repairs": s.repairs,
        }
        backend_stats = getattr(self.backend, "stats", None)
        if isinstance(backend_stats, Counter):  # HTTP attempts and retries of the OpenAI-compatible client
            out["http"] = dict(sorted(backend_stats.items()))
        if self.reports_usage:
            out["usage"] = {
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "total_tokens": s.prompt_tokens + s.completion_tokens,
                "requests_without_usage": s.usage_missing,
            }
            if self.prices is not None:
                price_in, price_out = self.prices
                out["cost_usd"] = round((s.prompt_tokens * price_in + s.completion_tokens * price_out) / 1e6, 6)
        return out


# --------------------------------------------------------------------------- scoring records with the judge

JUDGED_PROTOCOLS = ("report_generation",)


def judged_task(protocol: str) -> bool:
    """Whether ``--judge`` applies to a task of this protocol (generated reports against references)."""
    return protocol in JUDGED_PROTOCOLS


def score_with_judge(
    records: Sequence[Mapping[str, Any]], judge: Judge, bootstrap: int, seed: int, reg: Any = None
) -> dict[str, dict[str, Any]]:
    """Every CheXprompt aggregate of the records' (prediction, reference) reports, judged by ``judge``."""
    from bench.metrics.judge import metric_names
    from bench.metrics.scoring import score_metrics

    for r in records:
        if not isinstance(r.get("prediction"), str) or not isinstance(r.get("reference"), str):
            raise BenchError(f"judge: record {r.get('id')!r} needs a generated report (prediction) and a reference")
    preds = [r["prediction"] for r in records]
    refs = [r["reference"] for r in records]
    return score_metrics(preds, refs, metric_names(), bootstrap, seed, reg=reg, judge=judge)


__all__ = ["JUDGED_PROTOCOLS", "Judge", "JudgeBackend", "JudgeStats", "Verdict", "judged_task", "score_with_judge"]
