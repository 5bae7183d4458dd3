"""Radiology report (findings) generation with a ``generate`` model.

The reference is the sample's findings section; samples without one are skipped and counted. With
``context="indication"`` (LLaVA-Rad's stage-3 setting) the prompt carries the report's indication
section; a sample without an indication gets the image-only prompt and is counted. ``context="none"``
prompts with the image alone. Greedy decoding (temperature 0), ``max_new_tokens`` tokens at most.

Scoring runs the task's registered metrics by name (:func:`bench.metrics.scoring.score_metrics`):
corpus metrics with sufficient statistics (BLEU, CIDEr, METEOR, the label F1s, …) are bootstrapped
exactly; a metric whose tool or local weights are missing (CheXbert, RadGraph, …) is reported
unavailable with its reason and a null value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bench.interfaces import BenchError, GenerationRequest, ModelAdapter, Sample, Task, TaskSpec, batched
from bench.metrics.scoring import score_metrics
from tasks import prompts

CONTEXTS = ("indication", "none")
DEFAULTS: dict[str, Any] = {
    "context": "indication",  # indication | none
    "reference_section": "findings",
    "max_new_tokens": 256,
    "images": "first",  # first | all: the sample's images sent to the model
}


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


class ReportGeneration(Task):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.opts = self.options_over(DEFAULTS)
        if self.opts["context"] not in CONTEXTS:
            raise BenchError(f"task {spec.name}: option context must be one of {', '.join(CONTEXTS)}")
        if self.opts["images"] not in ("first", "all"):
            raise BenchError(f"task {spec.name}: option images must be 'first' or 'all'")
        self.skipped_without_reference = 0
        self.without_indication = 0

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(self.opts)
        cfg["prompts"] = {"image_only": prompts.RRG_IMAGE_ONLY}
        if self.opts["context"] == "indication":
            cfg["prompts"]["with_indication"] = prompts.RRG_WITH_INDICATION
        cfg["decoding"] = {"temperature": 0.0, "max_new_tokens": self.opts["max_new_tokens"]}
        cfg["skipped_without_reference"] = self.skipped_without_reference
        cfg["prompted_without_indication"] = self.without_indication
        return cfg

    def reference(self, sample: Sample) -> str:
        return _clean(sample.sections.get(self.opts["reference_section"]))

    def prompt(self, sample: Sample) -> tuple[str, str | None]:
        """The prompt and the indication it carries (None: image only)."""
        indication = _clean(sample.sections.get("indication")) if self.opts["context"] == "indication" else ""
        if indication:
            return prompts.RRG_WITH_INDICATION.format(indication=indication), indication
        return prompts.RRG_IMAGE_ONLY, None

    def prepare(self, samples: list[Sample]) -> list[Sample]:
        keep = [s for s in samples if s.images and self.reference(s)]
        self.skipped_without_reference = len(samples) - len(keep)
        return keep

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        self.without_indication = 0
        for batch in batched(samples, batch_size):
            requests, contexts = [], []
            for s in batch:
                text, indication = self.prompt(s)
                if indication is None and self.opts["context"] == "indication":
                    self.without_indication += 1
                images = tuple(s.images) if self.opts["images"] == "all" else (s.image,)
                requests.append(
                    GenerationRequest(
                        images=images,
                        prompt=text,
                        max_new_tokens=int(self.opts["max_new_tokens"]),
                        temperature=0.0,
                        sample_id=s.id,
                        context=(("protocol", "report_generation"), ("indication", indication or "")),
                    )
                )
                contexts.append(indication)
            reports = model.generate(requests)
            for s, req, indication, report in zip(batch, requests, contexts, reports, strict=True):
                yield {
                    "id": s.id,
                    "inputs": {
                        "images": [im.path or im.key for im in req.images],
                        "prompt": req.prompt,
                        "indication": indication,
                    },
                    "prediction": report,
                    "reference": self.reference(s),
                }

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, Any]:
        if not records:
            raise BenchError(f"task {self.name}: no predictions to score")
        for r in records:
            if not isinstance(r.get("prediction"), str) or not isinstance(r.get("reference"), str):
                raise BenchError(f"task {self.name}: record {r.get('id')!r} needs a text prediction and reference")
        preds = [r["prediction"] for r in records]
        refs = [r["reference"] for r in records]
        return score_metrics(preds, refs, list(self.spec.metrics), bootstrap, seed)
