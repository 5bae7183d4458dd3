"""Visual question answering with a ``generate`` model (MedDr Table 1; MultiMedEval metrics).

Each sample's question goes into one prompt (``tasks.prompts``): a closed question (the dataset's
``answer_type``, never the gold answer) asks for yes/no or the shortest answer, an open question for one
word or a short phrase, and a multiple-choice question (``meta["choices"]``, PMC-VQA) lists its options
and asks for the text of the right one. Greedy decoding (temperature 0). The raw answer is the
prediction; scoring normalises answer and gold as MultiMedEval does (:mod:`bench.metrics.vqa`), records
per-sample scores and reports every metric with a bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bench.interfaces import BenchError, GenerationRequest, ModelAdapter, Sample, Task, TaskSpec, batched
from bench.metrics.vqa import METRICS, score_answer, vqa_report
from tasks import prompts

DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 32,
    "images": "all",  # all | first: the sample's images sent with the question
}


def _image_input(sample: Sample) -> list[str]:
    return [im.path or im.key for im in sample.images]


class VisualQuestionAnswering(Task):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.opts = self.options_over(DEFAULTS)
        if self.opts["images"] not in ("all", "first"):
            raise BenchError(f"task {spec.name}: option images must be 'all' or 'first'")
        self.skipped = 0

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(self.opts)
        cfg["prompts"] = {"closed": prompts.VQA_CLOSED, "open": prompts.VQA_OPEN, "choices": prompts.VQA_CHOICES}
        cfg["decoding"] = {"temperature": 0.0, "max_new_tokens": self.opts["max_new_tokens"]}
        cfg["closed_question"] = "the dataset's answer_type chooses the prompt; metrics decide by the gold (yes/no)"
        cfg["skipped_without_question_or_answer"] = self.skipped
        return cfg

    def prompt(self, sample: Sample) -> str:
        question = " ".join((sample.question or "").split())
        choices = sample.meta.get("choices") if isinstance(sample.meta, Mapping) else None
        if isinstance(choices, Mapping) and choices:
            options = "\n".join(f"{k}: {v}" for k, v in choices.items())
            return prompts.VQA_CHOICES.format(question=question, options=options)
        template = prompts.VQA_CLOSED if sample.answer_type == "closed" else prompts.VQA_OPEN
        return template.format(question=question)

    def prepare(self, samples: list[Sample]) -> list[Sample]:
        keep = [s for s in samples if s.question and s.answer is not None and str(s.answer).strip() and s.images]
        self.skipped = len(samples) - len(keep)
        return keep

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        for batch in batched(samples, batch_size):
            requests = []
            for s in batch:
                images = tuple(s.images) if self.opts["images"] == "all" else (s.image,)
                requests.append(
                    GenerationRequest(
                        images=images,
                        prompt=self.prompt(s),
                        max_new_tokens=int(self.opts["max_new_tokens"]),
                        temperature=0.0,
                        sample_id=s.id,
                    )
                )
            answers = model.generate(requests)
            for s, req, answer in zip(batch, requests, answers, strict=True):
                yield {
                    "id": s.id,
                    "inputs": {
                        "images": _image_input(s)[: len(req.images)],
                        "question": s.question,
                        "prompt": req.prompt,
                    },
                    "prediction": answer,
                    "reference": str(s.answer),
                    "answer_type": s.answer_type,
                    "scores": score_answer(str(answer), str(s.answer)).to_json(),
                }

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, Any]:
        if not records:
            raise BenchError(f"task {self.name}: no predictions to score")
        report = vqa_report([r["prediction"] for r in records], [r["reference"] for r in records], bootstrap, seed)
        names = [m for m in self.spec.metrics if m in METRICS] or list(METRICS)
        return {name: report[name] for name in names}
