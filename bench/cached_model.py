"""A model proxy that serves capability calls from the prediction cache.

Tasks call the proxy exactly as they would call the adapter. Each item of a batched call is
looked up on its own; only the misses reach the model, in one call, and are stored at once.
The proxy also counts model calls and time spent inside the model (harness overhead).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.cache import Key, PredictionCache
from bench.interfaces import GenerationRequest, ImageRef, ModelAdapter, as_pil, stable_hash

EMBED_SCOPE = "embed"


@dataclass
class CallStats:
    model_items: int = 0  # items the model computed
    cache_hits: int = 0  # items served from the cache
    model_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model_items": self.model_items,
            "cache_hits": self.cache_hits,
            "model_seconds": round(self.model_seconds, 4),
        }


def _image_key(image: Any) -> str:
    if isinstance(image, ImageRef):
        return image.key
    if isinstance(image, str):
        return image
    raise TypeError("cached image calls need ImageRef inputs (they carry the cache key)")


class LazyModel:
    """Builds the adapter on first use: a run served entirely from the cache never loads weights."""

    def __init__(self, build: Callable[[], ModelAdapter]) -> None:
        self._build = build
        self._model: ModelAdapter | None = None

    @property
    def built(self) -> bool:
        return self._model is not None

    def get(self) -> ModelAdapter:
        if self._model is None:
            self._model = self._build()
        return self._model


class CachedModel:
    """Wraps a ModelAdapter (or a LazyModel); ``cache=None`` disables storage but keeps the accounting."""

    def __init__(
        self, model: ModelAdapter | LazyModel, fingerprint: str, cache: PredictionCache | None, scope: str
    ) -> None:
        self._source = model
        self.fingerprint = fingerprint
        self.cache = cache
        self.scope = scope
        self.stats = CallStats()

    @property
    def model(self) -> ModelAdapter:
        return self._source.get() if isinstance(self._source, LazyModel) else self._source

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_source", "model"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def _through(
        self,
        keys: Sequence[Key | None],
        items: Sequence[Any],
        compute: Callable[[list[Any]], Sequence[Any]],
    ) -> list[Any]:
        """Serve cached keys, compute the rest in one call; ``None`` keys are never cached."""
        found = self.cache.get_many([k for k in keys if k is not None]) if self.cache else {}
        out: list[Any] = [None] * len(items)
        todo: list[int] = []
        for i, key in enumerate(keys):
            if key is not None and key in found:
                out[i] = found[key]
            else:
                todo.append(i)
        self.stats.cache_hits += len(items) - len(todo)
        if todo:
            start = time.perf_counter()
            computed = compute([items[i] for i in todo])
            self.stats.model_seconds += time.perf_counter() - start
            self.stats.model_items += len(todo)
            if len(computed) != len(todo):
                raise RuntimeError(f"model {self.model.name!r} returned {len(computed)} outputs for {len(todo)} inputs")
            store = []
            for i, value in zip(todo, computed, strict=True):
                out[i] = value
                if keys[i] is not None:
                    store.append((keys[i], value))
            if self.cache is not None:
                self.cache.put_many(store)
        return out

    # ------------------------------------------------------------------ embed

    def encode_images(self, images: Sequence[ImageRef]) -> np.ndarray:
        keys = [(self.fingerprint, EMBED_SCOPE, _image_key(im), "image") for im in images]
        rows = self._through(keys, images, lambda xs: list(np.asarray(self.model.encode_images(xs))))
        return np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, 0), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        keys = [(self.fingerprint, EMBED_SCOPE, "", "text:" + stable_hash(t, 32)) for t in texts]
        rows = self._through(keys, texts, lambda xs: list(np.asarray(self.model.encode_texts(xs))))
        return np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, 0), np.float32)

    # ------------------------------------------------------------------ ground

    def similarity_map(self, image: ImageRef, phrase: str) -> np.ndarray:
        key = (self.fingerprint, EMBED_SCOPE, _image_key(image), "map:" + stable_hash(phrase, 32))
        [value] = self._through([key], [(image, phrase)], lambda xs: [np.asarray(self.model.similarity_map(*xs[0]))])
        return value

    def image_features(
        self, images: Sequence[ImageRef], name: str, compute: Callable[[list[ImageRef]], np.ndarray]
    ) -> np.ndarray:
        """Features a task computes from this model's images (e.g. a frozen backbone's, for a linear probe),
        cached like image embeddings: keyed by the model fingerprint, the image and ``name``, which must name
        everything else the features depend on. Every task and training fraction on the same images shares
        them; ``compute(images) -> [n, D]`` runs on the misses only."""
        keys = [(self.fingerprint, EMBED_SCOPE, _image_key(im), "features:" + name) for im in images]
        rows = self._through(keys, images, lambda xs: list(np.asarray(compute(xs), dtype=np.float32)))
        return np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, 0), np.float32)

    # ------------------------------------------------------------------ generate

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        keys: list[Key | None] = [
            (self.fingerprint, self.scope, r.sample_id or "", r.request_hash()) if r.deterministic else None
            for r in requests
        ]
        return self._through(keys, requests, lambda xs: list(self.model.generate(xs)))


__all__ = ["CachedModel", "CallStats", "as_pil"]
