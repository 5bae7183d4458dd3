"""Image–text retrieval with an ``embed`` model.

Instance level (LLaVA-Rad): every test image queries every (de-duplicated) report text, and
every unique text queries every image; Recall@K, mean and median rank in both directions.
Category level (LGDEA / MedCLIP on MIMIC-5×200): images of the one-finding subset query the
texts of that subset; Prec@K = share of the top-K texts with the query's class.

Records are written per image and carry every rank and the classes of the top texts, so
``score`` needs no model. A record depends on every sample, so a distributed run shares out the
embeddings (:meth:`ImageTextRetrieval.prefetch`) and ranks on rank 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from bench.distributed import shard_indices, take
from bench.interfaces import BenchError, ModelAdapter, Sample, Task, TaskSpec, batched
from bench.metrics import retrieval as R
from bench.metrics.stats import bootstrap_ci

DEFAULTS: dict[str, Any] = {
    "text_section": "findings",
    "recall_ks": (1, 5, 10),
    "precision_ks": (1, 2, 5, 10),
    "classes": (),  # one-hot classes for category-level Prec@K; empty = instance level only
}


class ImageTextRetrieval(Task):
    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.opts = self.options_over(DEFAULTS)
        self.classes = list(self.opts["classes"])

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.opts.items()})
        cfg["rank"] = "1 + number of items scoring strictly higher than the best positive"
        cfg["duplicates"] = "identical texts merged before ranking"
        return cfg

    def _text(self, sample: Sample) -> str:
        return sample.sections.get(self.opts["text_section"], "").strip()

    def _one_hot_class(self, sample: Sample) -> str | None:
        if not self.classes:
            return None
        values = [sample.labels.get(c) for c in self.classes]
        if values.count(1) == 1 and all(v in (0, 1) for v in values):
            return self.classes[values.index(1)]
        return None

    def prepare(self, samples: list[Sample]) -> list[Sample]:
        return [s for s in samples if self._text(s)]

    distributed = "outputs"

    def prefetch(
        self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int, rank: int, world_size: int
    ) -> None:
        """This rank's batches of the image and the unique-text embeddings :meth:`predict` computes."""
        mine = take(samples, shard_indices(len(samples), batch_size, rank, world_size))
        for b in batched(mine, batch_size):
            model.encode_images([s.image for s in b])
        unique, _ = R.merge_duplicates([self._text(s) for s in samples])
        for b in batched(take(unique, shard_indices(len(unique), batch_size, rank, world_size)), batch_size):
            model.encode_texts(b)

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        texts = [self._text(s) for s in samples]
        unique, text_of = R.merge_duplicates(texts)
        image_emb = np.concatenate(
            [np.asarray(model.encode_images([s.image for s in b]), np.float32) for b in batched(samples, batch_size)]
        )
        text_emb = np.concatenate([np.asarray(model.encode_texts(b), np.float32) for b in batched(unique, batch_size)])
        rank_i2t = R.ranks_of_positives(image_emb, text_emb, [[int(t)] for t in text_of])
        images_of: list[list[int]] = [[] for _ in unique]
        for i, t in enumerate(text_of):
            images_of[t].append(i)
        rank_t2i = R.ranks_of_positives(text_emb, image_emb, images_of)
        classes = [self._one_hot_class(s) for s in samples]
        subset = [i for i, c in enumerate(classes) if c is not None]
        top_classes: dict[int, list[str]] = {}
        if subset:
            kmax = max(self.opts["precision_ks"])
            sub_text = np.stack([text_emb[text_of[i]] for i in subset])
            top = R.topk_indices(image_emb[subset], sub_text, kmax)
            for row, i in enumerate(subset):
                top_classes[i] = [str(classes[subset[j]]) for j in top[row]]
        for i, sample in enumerate(samples):
            yield {
                "id": sample.id,
                "inputs": {"image": sample.image.path or sample.image.key, "text_id": int(text_of[i])},
                "prediction": {
                    "rank_i2t": int(rank_i2t[i]),
                    "rank_t2i": int(rank_t2i[text_of[i]]),
                    "top_classes": top_classes.get(i),
                },
                "reference": {"text": texts[i], "text_id": int(text_of[i]), "class": classes[i]},
                "scores": {f"hit@{k}_i2t": float(rank_i2t[i] <= k) for k in self.opts["recall_ks"]},
            }

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, Any]:
        if not records:
            raise BenchError(f"task {self.name}: no predictions to score")
        i2t = np.array([r["prediction"]["rank_i2t"] for r in records])
        first_of_text: dict[int, int] = {}
        for r in records:
            first_of_text.setdefault(int(r["reference"]["text_id"]), int(r["prediction"]["rank_t2i"]))
        t2i = np.array(list(first_of_text.values()))
        out: dict[str, Any] = {}
        for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
            for k in self.opts["recall_ks"]:
                out[f"Recall@{k} {direction}"] = _mean_metric((ranks <= k).astype(float), bootstrap, seed)
            out[f"MeanRank {direction}"] = _mean_metric(ranks.astype(float), bootstrap, seed)
            med_low, med_high = bootstrap_ci(lambda idx, r=ranks: float(np.median(r[idx])), ranks.size, bootstrap, seed)
            out[f"MedianRank {direction}"] = {
                "value": float(np.median(ranks)),
                "ci95": [med_low, med_high],
                "n": int(ranks.size),
            }
        sub = [r for r in records if r["prediction"].get("top_classes")]
        if sub:
            top = np.array([r["prediction"]["top_classes"] for r in sub])
            query = np.array([r["reference"]["class"] for r in sub])
            for k in self.opts["precision_ks"]:
                out[f"Prec@{k}"] = _mean_metric(R.class_precision_at_k(top, query, k), bootstrap, seed)
        return out


def _mean_metric(values: np.ndarray, bootstrap: int, seed: int) -> dict[str, Any]:
    low, high = bootstrap_ci(lambda idx: float(values[idx].mean()), values.size, bootstrap, seed)
    return {"value": float(values.mean()), "ci95": [low, high], "n": int(values.size)}
