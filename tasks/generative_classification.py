"""Zero-shot classification and label-set diagnosis by a ``generate`` model answering from a candidate list.

LLaVA-RadZ's generative MLLM baselines and MedDr's diagnosis tasks: the model sees the image and the
candidate labels and names its answer in free text (``tasks.prompts``; ``prompt_style="plain"`` asks for
the answer alone, ``"cot"`` for step-by-step reasoning closed by a line ``Answer: ...``).

Answer → label (re-done at scoring time from the raw text, so re-scoring never trusts a stored parse):

1. the answer text: after the last ``Answer:`` marker when there is one (its first line); without a
   marker, a chain-of-thought answer's last non-empty line, a plain answer's whole text;
2. MultiMedEval's normalisation (:func:`bench.metrics.vqa.normalize_answer`) of answer and candidates;
   an exact match wins;
3. else the candidate with the best sentence BLEU-1 (answer as hypothesis, candidate as reference,
   :func:`bench.metrics.vqa.bleu1`), the first one on ties (MultiMedEval's rule; ties are counted);
   a best BLEU-1 of 0 leaves the answer unparseable.

``mode="multiclass"``: one label per image (the one-hot subset: one class positive, every other one
negative); an unparseable answer counts as wrong. ACC = share correct (per class: recall), F1 = macro
F1 over classes (one-vs-rest counts; an unparseable answer predicts no class).

``mode="multilabel"``: the answer is a list split on commas, semicolons, "and", "/" and new lines; each
item is mapped as above; items written as a negation ("no edema") are dropped. An answer with no
mapped item is unparseable and predicts no label. ACC and F1 are macro means over classes of the
per-class accuracy / F1 (:func:`bench.metrics.classification.multilabel_report`); the ACC entry also
gives ``exact_set_match`` (share of images whose label set is predicted exactly). Uncertain reference
labels follow ``uncertain`` (positive | negative | exclude), unmentioned ones ``missing``.

Every metric entry carries ``unparseable`` (count) and ``unparseable_rate``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.interfaces import BenchError, GenerationRequest, ModelAdapter, Sample, Task, TaskSpec, batched
from bench.metrics.classification import binary_label_matrix, multilabel_report
from bench.metrics.stats import bootstrap_ci
from bench.metrics.vqa import bleu1, normalize_answer
from tasks import prompts

MODES = ("multiclass", "multilabel")
STYLES = ("plain", "cot")
UNCERTAIN_POLICIES = ("positive", "negative", "exclude")
DEFAULTS: dict[str, Any] = {
    "mode": "multiclass",
    "classes": (),
    "prompt_style": "plain",  # plain | cot
    "image_kind": "chest X-ray",
    "max_new_tokens": None,  # default: 64 (plain), 512 (cot)
    "uncertain": "positive",  # multilabel references
    "missing": "negative",
}

_ANSWER_MARKER = re.compile(r"\banswer\s*(?:is)?\s*[:：]", re.IGNORECASE)
_LIST_SPLIT = re.compile(r"[,;/\n]|\band\b|\bor\b", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_NEGATIONS = ("no ", "not ", "without ", "absence of ", "negative for ", "0 ")


# --------------------------------------------------------------------------- answer parsing


def extract_answer(text: str, style: str) -> tuple[str, bool]:
    """(the answer part of a model's text, whether an ``Answer:`` marker was found)."""
    text = text or ""
    markers = list(_ANSWER_MARKER.finditer(text))
    if markers:
        rest = text[markers[-1].end() :].strip()
        lines = [ln.strip() for ln in rest.splitlines() if ln.strip()]
        return (lines[0] if lines else ""), True
    if style == "cot":
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return (lines[-1] if lines else ""), False
    return text.strip(), False


@dataclass(frozen=True)
class LabelMatch:
    label: str | None  # None: unparseable
    method: str | None  # "exact" | "bleu1" | None
    score: float = 0.0  # BLEU-1 of the chosen candidate (1.0 for exact)
    tie: bool = False  # several candidates shared the best BLEU-1 (the first one was taken)


def map_to_label(answer: str, classes: Sequence[str]) -> LabelMatch:
    """Normalised exact match, else best BLEU-1 against the candidates (MultiMedEval), else None."""
    norm = normalize_answer(answer or "")
    if not norm:
        return LabelMatch(None, None)
    cands = [normalize_answer(c) for c in classes]
    for c, cn in zip(classes, cands, strict=True):
        if cn == norm:
            return LabelMatch(c, "exact", 1.0)
    scores = [bleu1(norm, cn) for cn in cands]
    best = max(scores)
    if best <= 0:
        return LabelMatch(None, None)
    return LabelMatch(classes[scores.index(best)], "bleu1", float(best), scores.count(best) > 1)


def parse_label_list(answer: str, classes: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """Labels named in a list answer (in class order) and counts of items: mapped, unmapped, negated, ties."""
    counts = {"items": 0, "mapped": 0, "unmapped": 0, "negated": 0, "ties": 0}
    whole = map_to_label(answer, classes)
    if whole.method == "exact":
        counts.update(items=1, mapped=1)
        return [str(whole.label)], counts
    found: set[str] = set()
    for raw in _LIST_SPLIT.split(answer or ""):
        item = _BULLET.sub("", raw).strip()
        if not normalize_answer(item):
            continue
        counts["items"] += 1
        match = map_to_label(item, classes)
        if match.method != "exact" and (normalize_answer(item) + " ").startswith(_NEGATIONS):
            counts["negated"] += 1
            continue
        if match.label is None:
            counts["unmapped"] += 1
            continue
        counts["mapped"] += 1
        counts["ties"] += int(match.tie)
        found.add(match.label)
    return [c for c in classes if c in found], counts


# --------------------------------------------------------------------------- the task


class GenerativeClassification(Task):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.opts = self.options_over(DEFAULTS)
        self.classes: list[str] = list(self.opts["classes"])
        if len(self.classes) < 2:
            raise BenchError(f"task {spec.name}: option 'classes' needs at least two candidates")
        for name, allowed in (("mode", MODES), ("prompt_style", STYLES), ("uncertain", UNCERTAIN_POLICIES)):
            if self.opts[name] not in allowed:
                raise BenchError(f"task {spec.name}: option {name} must be one of {', '.join(allowed)}")
        if self.opts["max_new_tokens"] is None:
            self.opts["max_new_tokens"] = 512 if self.opts["prompt_style"] == "cot" else 64

    @property
    def multiclass(self) -> bool:
        return self.opts["mode"] == "multiclass"

    def template(self) -> str:
        cot = self.opts["prompt_style"] == "cot"
        if self.multiclass:
            return prompts.COT_SINGLE if cot else prompts.CLASSIFY_SINGLE
        return prompts.COT_MULTI if cot else prompts.CLASSIFY_MULTI

    def prompt(self) -> str:
        candidates = prompts.CANDIDATE_SEPARATOR.join(self.classes)
        return self.template().format(image_kind=self.opts["image_kind"], candidates=candidates)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.opts.items()})
        cfg["prompt_template"] = self.template()
        cfg["prompt"] = self.prompt()
        cfg["decoding"] = {"temperature": 0.0, "max_new_tokens": self.opts["max_new_tokens"]}
        cfg["answer_mapping"] = (
            "text after the last 'Answer:' marker (else: cot = last line, plain = whole text); normalised exact "
            "match, else best BLEU-1 against the candidates (first on ties); BLEU-1 = 0 -> unparseable (wrong)"
        )
        return cfg

    # ------------------------------------------------------------------ samples

    def prepare(self, samples: list[Sample]) -> list[Sample]:
        samples = [s for s in samples if s.images]
        if not self.multiclass:
            return samples
        keep = []
        for s in samples:
            values = [s.labels.get(c) for c in self.classes]
            if values.count(1) == 1 and all(v in (0, 1) for v in values):
                keep.append(s)
        return keep

    def parse(self, text: Any) -> dict[str, Any]:
        """The record's ``parsed`` block: answer text, labels, how they were found."""
        if not isinstance(text, str):
            raise BenchError(f"task {self.name}: a prediction is {type(text).__name__}, expected the model's text")
        answer, marker = extract_answer(text, self.opts["prompt_style"])
        if self.multiclass:
            match = map_to_label(answer, self.classes)
            labels = [match.label] if match.label else []
            detail: dict[str, Any] = {"method": match.method, "bleu1": match.score, "tie": match.tie}
        else:
            labels, detail = parse_label_list(answer, self.classes)
        return {"answer": answer, "marker": marker, "labels": labels, "unparseable": not labels, **detail}

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        prompt = self.prompt()
        for batch in batched(samples, batch_size):
            requests = [
                GenerationRequest(
                    images=(s.image,),
                    prompt=prompt,
                    max_new_tokens=int(self.opts["max_new_tokens"]),
                    temperature=0.0,
                    sample_id=s.id,
                )
                for s in batch
            ]
            texts = model.generate(requests)
            for s, text in zip(batch, texts, strict=True):
                parsed = self.parse(text)
                if self.multiclass:
                    reference: Any = next(c for c in self.classes if s.labels.get(c) == 1)
                    scores = {"correct": float(parsed["labels"] == [reference])}
                else:
                    reference = {c: s.labels.get(c) for c in self.classes}
                    scores = {}
                yield {
                    "id": s.id,
                    "inputs": {"image": s.image.path or s.image.key, "prompt": prompt},
                    "prediction": text,
                    "reference": reference,
                    "parsed": parsed,
                    "scores": scores,
                }

    # ------------------------------------------------------------------ scoring

    def _binary_labels(self, references: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not all(isinstance(ref, Mapping) for ref in references):
            raise BenchError(f"task {self.name}: a reference is not a {{class: label}} mapping")
        return binary_label_matrix(references, self.classes, self.opts["uncertain"], self.opts["missing"])

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, Any]:
        if not records:
            raise BenchError(f"task {self.name}: no predictions to score")
        parsed = [self.parse(r["prediction"]) for r in records]
        k = len(self.classes)
        pred = np.zeros((len(records), k), dtype=int)
        for i, p in enumerate(parsed):
            for label in p["labels"]:
                pred[i, self.classes.index(label)] = 1
        unparseable = np.array([p["unparseable"] for p in parsed], dtype=bool)
        if self.multiclass:
            out = self._score_multiclass(records, pred, bootstrap, seed)
        else:
            y = self._binary_labels([r["reference"] for r in records])
            keep = ~np.isnan(y).any(axis=1)
            if not keep.any():
                raise BenchError(f"task {self.name}: every sample is excluded by uncertain='exclude'")
            y, pred, unparseable = y[keep].astype(int), pred[keep], unparseable[keep]
            report = multilabel_report(y, pred.astype(float), self.classes, 0.5, bootstrap, seed)
            out = {"ACC": _decisions(report["ACC"]), "F1": _decisions(report["F1"])}
            exact = (y == pred).all(axis=1).astype(float)
            low, high = bootstrap_ci(lambda idx: float(exact[idx].mean()), len(exact), bootstrap, seed)
            out["ACC"]["exact_set_match"] = {"value": float(exact.mean()), "ci95": [low, high]}
        for m in out.values():
            m["unparseable"] = int(unparseable.sum())
            m["unparseable_rate"] = float(unparseable.mean())
        names = [m for m in self.spec.metrics if m in out] or list(out)
        return {name: out[name] for name in names}

    def _score_multiclass(
        self, records: Sequence[Mapping[str, Any]], pred: np.ndarray, bootstrap: int, seed: int
    ) -> dict[str, Any]:
        try:
            labels = np.array([self.classes.index(r["reference"]) for r in records])
        except ValueError:
            raise BenchError(f"task {self.name}: a reference is not one of the classes {self.classes}") from None
        onehot = np.eye(len(self.classes), dtype=int)[labels]
        # macro F1 over classes from one-vs-rest counts = multi-class macro F1; an unparseable row predicts nothing
        f1 = _decisions(multilabel_report(onehot, pred.astype(float), self.classes, 0.5, bootstrap, seed)["F1"])
        correct = pred[np.arange(len(labels)), labels].astype(float) * (pred.sum(axis=1) == 1)
        low, high = bootstrap_ci(lambda idx: float(correct[idx].mean()), len(correct), bootstrap, seed)
        recall = {
            c: (float(correct[labels == j].mean()) if (labels == j).any() else None) for j, c in enumerate(self.classes)
        }
        acc = {
            "value": float(correct.mean()),
            "ci95": [low, high],
            "n": len(correct),
            "recall": recall,
            "average": "micro (accuracy)",
        }
        return {"ACC": acc, "F1": f1}


def _decisions(entry: dict[str, Any]) -> dict[str, Any]:
    """A multilabel_report entry computed on 0/1 decisions: its threshold metadata does not apply."""
    entry.pop("threshold", None)
    entry.pop("threshold_policy", None)
    entry["decision"] = "labels parsed from the answer"
    return entry
