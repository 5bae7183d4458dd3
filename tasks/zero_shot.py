"""Zero-shot classification with an ``embed`` model.

Multi-label (CheXzero): per class, a positive prompt ("{}") and a negative prompt ("no {}");
each side's text embedding is the L2-normalised mean of its template embeddings;
p = e^{s+} / (e^{s+} + e^{s-}) with raw cosine similarities; F1/ACC at p ≥ threshold (0.5 by
default, recorded).

Multi-class (CheXpert-5×200 style): class score = cosine similarity to the class's prompt
ensemble; the prediction is the argmax. ``normalize="zscore"`` standardises each class column
across images first (GLoRIA); the default is no normalisation, and the result records which.

Labels keep uncertain (-1) distinct in the records; the ``uncertain`` option decides at
scoring time whether uncertain counts as positive, negative, or removes the sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from bench.interfaces import BenchError, ModelAdapter, Sample, Task, TaskSpec, batched
from bench.metrics.classification import (
    binary_label_matrix,
    chexzero_probability,
    multiclass_report,
    multilabel_report,
    zscore_columns,
)

DEFAULTS: dict[str, Any] = {
    "mode": "multilabel",  # or "multiclass"
    "classes": (),
    "positive_templates": ("{}",),
    "negative_templates": ("no {}",),
    "class_prompts": None,  # optional {class: [prompt, ...]} overriding the templates
    "uncertain": "positive",  # positive | negative | exclude
    "missing": "negative",  # a finding not mentioned counts as absent (blanks -> 0)
    "threshold": 0.5,
    "normalize": "none",  # multiclass: none | zscore
}
UNCERTAIN_POLICIES = ("positive", "negative", "exclude")


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class ZeroShotClassification(Task):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.opts = self.options_over(DEFAULTS)
        self.classes: list[str] = list(self.opts["classes"])
        if not self.classes:
            raise BenchError(f"task {spec.name}: option 'classes' is empty")
        if self.opts["mode"] not in ("multilabel", "multiclass"):
            raise BenchError(f"task {spec.name}: mode must be multilabel or multiclass, not {self.opts['mode']!r}")
        if self.opts["uncertain"] not in UNCERTAIN_POLICIES:
            raise BenchError(f"task {spec.name}: uncertain must be one of {UNCERTAIN_POLICIES}")
        if self.opts["normalize"] not in ("none", "zscore"):
            raise BenchError(f"task {spec.name}: normalize must be 'none' or 'zscore'")

    # ------------------------------------------------------------------ prompts

    def prompts(self) -> dict[str, dict[str, list[str]]]:
        """{class: {"positive": [...], "negative": [...]}} — the exact texts embedded."""
        custom: Mapping[str, Sequence[str]] = self.opts["class_prompts"] or {}
        out = {}
        for c in self.classes:
            name = c.lower()
            pos = list(custom.get(c, [t.format(name) for t in self.opts["positive_templates"]]))
            neg = [t.format(name) for t in self.opts["negative_templates"]]
            out[c] = {"positive": pos, "negative": neg}
        return out

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.opts.items()})
        cfg["prompts"] = self.prompts()
        return cfg

    def _class_embeddings(self, model: ModelAdapter, side: str) -> np.ndarray:
        prompts = self.prompts()
        texts = [t for c in self.classes for t in prompts[c][side]]
        emb = np.asarray(model.encode_texts(texts), dtype=np.float64)
        rows, start = [], 0
        for c in self.classes:
            k = len(prompts[c][side])
            rows.append(_unit(_unit(emb[start : start + k]).mean(axis=0)))
            start += k
        return np.stack(rows)

    # ------------------------------------------------------------------ samples

    def prepare(self, samples: list[Sample]) -> list[Sample]:
        if self.opts["mode"] == "multilabel":
            return samples
        # one-hot subset: exactly one class positive, every other class exactly negative
        keep = []
        for s in samples:
            values = [s.labels.get(c) for c in self.classes]
            if values.count(1) == 1 and all(v in (0, 1) for v in values):
                keep.append(s)
        return keep

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        multiclass = self.opts["mode"] == "multiclass"
        pos = self._class_embeddings(model, "positive")
        neg = None if multiclass else self._class_embeddings(model, "negative")
        for batch in batched(samples, batch_size):
            img = np.asarray(model.encode_images([s.image for s in batch]), dtype=np.float64)
            s_pos = img @ pos.T
            s_neg = None if neg is None else img @ neg.T
            for i, sample in enumerate(batch):
                record: dict[str, Any] = {
                    "id": sample.id,
                    "inputs": {"image": sample.image.path or sample.image.key},
                }
                if multiclass:
                    record["prediction"] = {c: float(v) for c, v in zip(self.classes, s_pos[i], strict=True)}
                    record["reference"] = next(c for c in self.classes if sample.labels.get(c) == 1)
                    if self.opts["normalize"] == "none":
                        pred = self.classes[int(np.argmax(s_pos[i]))]
                        record["scores"] = {"correct": float(pred == record["reference"])}
                else:
                    assert s_neg is not None
                    p = chexzero_probability(s_pos[i], s_neg[i])
                    record["prediction"] = {c: float(v) for c, v in zip(self.classes, p, strict=True)}
                    record["reference"] = {c: sample.labels.get(c) for c in self.classes}
                    record["similarity"] = {
                        "positive": [float(v) for v in s_pos[i]],
                        "negative": [float(v) for v in s_neg[i]],
                    }
                yield record

    # ------------------------------------------------------------------ scoring

    def _binary_labels(self, references: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """0/1 matrix with NaN where a label is excluded by the uncertainty policy."""
        return binary_label_matrix(references, self.classes, self.opts["uncertain"], self.opts["missing"])

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, Any]:
        if not records:
            raise BenchError(f"task {self.name}: no predictions to score")
        for r in records:
            missing = [c for c in self.classes if c not in r["prediction"]]
            if missing:
                raise BenchError(f"task {self.name}: record {r['id']!r} has no prediction for {missing}")
        scores = np.array([[r["prediction"][c] for c in self.classes] for r in records], dtype=np.float64)
        if self.opts["mode"] == "multiclass":
            try:
                labels = np.array([self.classes.index(r["reference"]) for r in records])
            except ValueError:
                raise BenchError(f"task {self.name}: a reference is not one of the classes {self.classes}") from None
            if self.opts["normalize"] == "zscore":
                scores = zscore_columns(scores)
            return multiclass_report(labels, scores, self.classes, bootstrap, seed)
        y = self._binary_labels([r["reference"] for r in records])
        if np.isnan(y).any():
            # uncertain="exclude": a sample with an uncertain label on any class is left out
            keep = ~np.isnan(y).any(axis=1)
            if not keep.any():
                raise BenchError(f"task {self.name}: every sample is excluded by uncertain='exclude'")
            y, scores = y[keep], scores[keep]
        return multilabel_report(y.astype(int), scores, self.classes, self.opts["threshold"], bootstrap, seed)
