"""Validation of the CheXprompt LLM judge on ReXVal (LLaVA-Rad Fig. 4A-B).

The model under evaluation *is the judge*: any ``generate`` model that answers text-only requests, usually
``openai`` on a local OpenAI-compatible server::

    bench run --model openai --model-args model=NAME,base_url=http://127.0.0.1:8000/v1 --task rexval_agreement

Each of ReXVal's 200 (reference, candidate) pairs is judged with the CheXprompt prompt of
:mod:`bench.metrics.judge` (temperature 0; an unreadable reply is sent back once with the repair instruction;
a reply still unreadable is a judge failure, left out and counted). Scores (:mod:`bench.metrics.judge_agreement`):
Kendall τ-b between the judge's total / significant error counts and the six radiologists' mean, and the
leave-one-rater-out mean absolute differences of the judge and of each left-out rater from the left-in raters'
mean. The judge's replies go through the prediction cache like any generation (scope = this task).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bench.interfaces import BenchError, GenerationRequest, ModelAdapter, Sample, Task, TaskSpec
from bench.metrics.judge import TEMPERATURE, prompt_version
from bench.metrics.judge_agreement import leave_one_rater_out
from bench.metrics.judge_client import Reply
from bench.metrics.judging import Conversation, Judge
from bench.metrics.scoring import score_metrics

DEFAULTS: dict[str, Any] = {"max_new_tokens": 512}


def _conversation_request(conversation: Conversation, max_new_tokens: int) -> GenerationRequest:
    """One text-only request for a chat conversation: the system message apart, the turns in one prompt (the
    unreadable reply of a repair quoted before the repair instruction)."""
    system = next((m["content"] for m in conversation if m["role"] == "system"), None)
    turns = [m for m in conversation if m["role"] != "system"]
    parts = [f"Your previous reply:\n<<<{m['content']}>>>" if m["role"] == "assistant" else m["content"] for m in turns]
    return GenerationRequest(
        images=(),
        prompt="\n\n".join(parts),
        system=system,
        max_new_tokens=max_new_tokens,
        temperature=TEMPERATURE,
        context=(("protocol", "llm_judge"),),
    )


class ModelJudgeBackend:
    """A task's ``generate`` model as the judge's backend (one batched ``generate`` call per batch)."""

    def __init__(self, model: ModelAdapter, max_new_tokens: int) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens

    def complete_many(self, conversations: Sequence[Conversation]) -> list[Reply]:
        if not conversations:
            return []
        requests = [_conversation_request(c, self.max_new_tokens) for c in conversations]
        return [Reply(text=text) for text in self.model.generate(requests)]


def _rater_reference(sample: Sample) -> dict[str, Any]:
    meta = sample.meta
    return {
        "significant_errors": dict(meta["significant_errors"]),
        "total_errors": dict(meta["total_errors"]),
        "mean_significant_errors": meta["mean_significant_errors"],
        "mean_total_errors": meta["mean_total_errors"],
    }


class RexvalAgreement(Task):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.opts = self.options_over(DEFAULTS)
        self.judge_stats: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(self.opts)
        cfg["judge"] = {"prompt_version": prompt_version(), "temperature": TEMPERATURE, **self.judge_stats}
        return cfg

    def prepare(self, samples: list[Sample]) -> list[Sample]:
        for s in samples:
            if "candidate_report" not in s.meta or "total_errors" not in s.meta:
                raise BenchError(f"task {self.name}: sample {s.id!r} is not a ReXVal pair (no rater counts)")
        return samples

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        # the model's replies are cached by the runner's model proxy (scope = this task), like any generation
        backend = ModelJudgeBackend(model, int(self.opts["max_new_tokens"]))
        judge = Judge(backend, batch_size=max(1, batch_size), reports_usage=False)
        for start in range(0, len(samples), max(1, batch_size)):
            batch = samples[start : start + max(1, batch_size)]
            references = [s.sections.get("findings", "") for s in batch]
            candidates = [str(s.meta["candidate_report"]) for s in batch]
            for s, ref, cand, verdict in zip(
                batch, references, candidates, judge.verdicts(references, candidates), strict=True
            ):
                yield {
                    "id": s.id,
                    "inputs": {
                        "reference": ref,
                        "candidate": cand,
                        "candidate_type": s.meta.get("candidate"),
                        "study_id": s.meta.get("study_id"),
                    },
                    "prediction": verdict.judgement.to_json() if verdict.judgement is not None else None,
                    "reference": _rater_reference(s),
                    "judge_reply": verdict.reply,
                    "judge_repaired": verdict.repaired,
                    "judge_failure": verdict.failure,
                }
        summary = judge.summary()
        self.judge_stats = {k: summary[k] for k in ("n_judged", "n_judge_failed", "failure_reasons", "repairs")}

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, Any]:
        if not records:
            raise BenchError(f"task {self.name}: no records to score")
        judged = [r for r in records if r.get("prediction") is not None]
        failed = len(records) - len(judged)
        if len(judged) < 2:
            raise BenchError(
                f"task {self.name}: the judge answered readably for {len(judged)} of {len(records)} pairs; "
                "agreement needs at least two (see judge_reply / judge_failure in the samples file)"
            )
        preds = [r["prediction"] for r in judged]
        refs = [r["reference"] for r in judged]
        try:
            result = score_metrics(preds, refs, list(self.spec.metrics), bootstrap, seed)
            per_rater = leave_one_rater_out(preds, refs)
        except ValueError as exc:
            raise BenchError(f"task {self.name}: {exc}") from None
        for entry in result.values():
            entry["n_judge_failed"] = failed
        if "mad_judge_vs_raters" in result:
            result["mad_judge_vs_raters"]["per_rater"] = {
                rater: {k: (v if math.isfinite(v) else None) for k, v in values.items()}
                for rater, values in per_rater.items()
            }
        return result
