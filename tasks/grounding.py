"""Phrase grounding with a ``ground`` model (MS-CXR protocol, BioViL / LGDEA).

One record per (image, phrase): the model's ``similarity_map(image, phrase)`` ([h, w]; NaN where the
model has no value) and the phrase's boxes in original-image pixels. Scoring is
:mod:`bench.metrics.grounding`: the map is resized (bilinear, align_corners=False) to the original
image and the contrast-to-noise ratio of the map inside vs outside the boxes is averaged over the
phrases where it is defined (undefined phrases are counted with their reason, never scored 0), with a
bootstrap interval, per category and overall. The variants are the task's metrics: ``CNR`` (|μin −
μout| / sqrt(σ²in + σ²out), population variances), ``CNR-signed``, ``CNR-per-box``, ``CNR-unbiased``.
Each metric also carries ``category_mean`` (the unweighted mean of the per-category values).

Phrases:

* A sample that already is one phrase (MS-CXR: ``meta["phrase"]``, category ``meta["category"]``)
  is used as it is.
* A sample with labelled finding boxes (synthcxr) becomes one phrase per present finding that has
  boxes (uncertain findings only with ``uncertain="include"``): the first sentence of the findings
  section (then of the impression) that the offline CheXpert rule labeler marks positive or uncertain
  for that finding (Nodule: "Lung Lesion"), else the canonical phrase ``"{finding} in the
  {location}"`` from ``meta["location"]``. Each record says which (``inputs.phrase_source``:
  ``findings`` / ``impression`` / ``canonical``). ``phrase_source="canonical"`` always uses the
  canonical phrase. The category is the finding.

Maps are stored rounded to ``decimals`` (4) with NaN as null, so a sample file stays small (maps are
patch grids). A record's ``scores`` hold the phrase's value of the task's first metric (``CNR``); the
metrics are recomputed from the maps at scoring time. The metric works at the original image's
resolution: on MS-CXR-sized images (about 2500 x 3000) each variant costs a few tenths of a second per
phrase.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bench.interfaces import BenchError, ModelAdapter, Sample, Task, TaskSpec
from bench.metrics import grounding as G

DEFAULTS: dict[str, Any] = {
    "phrase_source": "report",  # report | canonical (samples with finding boxes, e.g. synthcxr)
    "uncertain": "exclude",  # exclude | include: hedged findings (label -1) as phrases
    "decimals": 4,
}
CANONICAL_TEMPLATE = "{finding} in the {location}"
# finding name -> CheXpert observation of the rule labeler
OBSERVATION = {"Nodule": "Lung Lesion"}
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def finding_sentence(sample: Sample, finding: str) -> tuple[str, str] | None:
    """``(sentence, section)``: the first report sentence the rule labeler finds ``finding`` in."""
    from bench.metrics.chexpert_rules import label_report
    from bench.metrics.clinical import POSITIVE, UNCERTAIN

    observation = OBSERVATION.get(finding, finding)
    for section in ("findings", "impression"):
        for sentence in _SENTENCES.split(sample.sections.get(section, "").strip()):
            if sentence and label_report(sentence).get(observation) in (POSITIVE, UNCERTAIN):
                return sentence, section
    return None


def canonical_phrase(sample: Sample, finding: str) -> str:
    location = (sample.meta.get("location") or {}).get(finding)
    if not location:
        return finding.lower()
    return CANONICAL_TEMPLATE.format(finding=finding.lower(), location=location)


class PhraseGrounding(Task):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.opts = self.options_over(DEFAULTS)
        if self.opts["phrase_source"] not in ("report", "canonical"):
            raise BenchError(f"task {spec.name}: phrase_source must be 'report' or 'canonical'")
        if self.opts["uncertain"] not in ("exclude", "include"):
            raise BenchError(f"task {spec.name}: uncertain must be 'exclude' or 'include'")
        self.variants = [m for m in spec.metrics if m in G.VARIANTS] or ["CNR"]
        unknown_metrics = [m for m in spec.metrics if m not in G.VARIANTS]
        if unknown_metrics:
            raise BenchError(
                f"task {spec.name}: metric(s) {unknown_metrics} are not CNR variants; known: {', '.join(G.VARIANTS)}"
            )

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(self.opts)
        cfg["variants"] = {v: G.VARIANTS[v] for v in self.variants}
        cfg["phrases"] = (
            "meta['phrase'] when the sample is a phrase (MS-CXR); else per present finding with boxes: the first "
            "findings/impression sentence the CheXpert rule labeler marks positive or uncertain for it, else "
            f"the canonical phrase {CANONICAL_TEMPLATE!r}"
        )
        cfg["canonical_template"] = CANONICAL_TEMPLATE
        cfg["resize"] = "map resized to the original image: bilinear, align_corners=False; NaN pixels ignored"
        cfg["average"] = "value: mean over phrases with a defined CNR; category_mean: mean of the per-category values"
        return cfg

    # ------------------------------------------------------------------ samples

    def prepare(self, samples: list[Sample]) -> list[Sample]:
        out: list[Sample] = []
        allowed = (1, -1) if self.opts["uncertain"] == "include" else (1,)
        for sample in samples:
            if sample.meta.get("phrase"):
                if sample.boxes:
                    out.append(sample)
                continue
            findings = list(dict.fromkeys(b.label for b in sample.boxes if b.label))
            for finding in findings:
                if sample.labels.get(finding) not in allowed:
                    continue
                found = finding_sentence(sample, finding) if self.opts["phrase_source"] == "report" else None
                phrase, source = found if found else (canonical_phrase(sample, finding), "canonical")
                meta = {
                    **sample.meta,
                    "phrase": phrase,
                    "phrase_source": source,
                    "category": finding,
                    "image_id": sample.id,
                }
                out.append(
                    replace(
                        sample,
                        id=f"{sample.id}-{_slug(finding)}",
                        boxes=[b for b in sample.boxes if b.label == finding],
                        meta=meta,
                    )
                )
        return out

    @staticmethod
    def image_shape(sample: Sample) -> tuple[int, int]:
        """(height, width) of the original image: from the metadata, else from the image file's header."""
        h, w = sample.meta.get("image_height"), sample.meta.get("image_width")
        if h and w:
            return int(h), int(w)
        ref = sample.image
        if ref.loader is None and ref.path:
            from PIL import Image

            try:
                with Image.open(ref.path) as im:
                    return int(im.height), int(im.width)
            except OSError as exc:
                raise BenchError(f"cannot read image {ref.path}: {exc}") from None
        im = ref.load()
        return int(im.height), int(im.width)

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        decimals = int(self.opts["decimals"])
        for sample in samples:
            phrase = str(sample.meta["phrase"])
            smap = np.asarray(model.similarity_map(sample.image, phrase), dtype=np.float64)
            if smap.ndim != 2 or smap.size == 0:
                raise BenchError(
                    f"model returned a similarity map of shape {smap.shape} for {sample.id}; expected [h, w]"
                )
            if np.isinf(smap).any():
                raise BenchError(f"model returned infinite values in the similarity map for {sample.id}")
            prediction = [[None if math.isnan(v) else round(float(v), decimals) for v in row] for row in smap]
            reference = {
                "boxes": [[b.x, b.y, b.w, b.h] for b in sample.boxes],
                "image_shape": list(self.image_shape(sample)),
                "category": G.sample_category(sample.meta, sample.boxes),
            }
            scores = self._phrase_scores(np.array(prediction, dtype=float), reference, self.variants[:1])
            yield {
                "id": sample.id,
                "inputs": {
                    "image": sample.image.path or sample.image.key,
                    "phrase": phrase,
                    "phrase_source": sample.meta.get("phrase_source", "dataset"),
                },
                "prediction": prediction,
                "reference": reference,
                "scores": {v: (r.value if r.defined else None) for v, r in scores.items()},
            }

    def _phrase_scores(
        self, smap: np.ndarray, reference: Mapping[str, Any], variants: Sequence[str] | None = None
    ) -> dict[str, G.CNRResult]:
        """The variants (all the task's by default) of one phrase from one resize of its map."""
        shape = tuple(int(v) for v in reference["image_shape"])
        if smap.shape != shape:
            smap = G.resize_bilinear(smap, shape)
        return {v: G.cnr(smap, reference["boxes"], None, **G.VARIANTS[v]) for v in variants or self.variants}

    # ------------------------------------------------------------------ scoring

    def _parse(self, record: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """The map (null -> NaN) and the reference of one record, checked."""
        rid = record.get("id")
        try:
            smap = np.array(record["prediction"], dtype=float)
        except (TypeError, ValueError):
            raise BenchError(f"task {self.name}: record {rid!r}: the prediction is not a 2-D list of numbers") from None
        if smap.ndim != 2 or smap.size == 0:
            raise BenchError(f"task {self.name}: record {rid!r}: the similarity map has shape {smap.shape}")
        ref = record.get("reference")
        if not isinstance(ref, Mapping) or "boxes" not in ref:
            raise BenchError(f"task {self.name}: record {rid!r}: the reference has no boxes")
        shape = ref.get("image_shape") or list(smap.shape)
        if len(shape) != 2:
            raise BenchError(f"task {self.name}: record {rid!r}: image_shape {shape!r} is not [height, width]")
        return smap, {"boxes": list(ref["boxes"]), "image_shape": [int(shape[0]), int(shape[1])]}

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, Any]:
        if not records:
            raise BenchError(f"task {self.name}: no predictions to score")
        per_variant: dict[str, list[G.CNRResult]] = {v: [] for v in self.variants}
        for r in records:
            smap, reference = self._parse(r)
            results = self._phrase_scores(smap, reference)
            for v in self.variants:
                per_variant[v].append(results[v])
        categories = [r["reference"].get("category") for r in records]
        out: dict[str, Any] = {}
        for v in self.variants:
            report = G.grounding_report(per_variant[v], categories, bootstrap, seed, variant=v)
            values = [c["value"] for c in report.get("per_category", {}).values() if c["value"] is not None]
            report["category_mean"] = float(np.mean(values)) if values else None
            out[v] = report
        return out


__all__ = ["PhraseGrounding", "canonical_phrase", "finding_sentence"]
