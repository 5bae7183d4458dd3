"""A model proxy that serves capability calls from the prediction cache.

Tasks call the proxy exactly as they would call the adapter. Each item of a batched call is
looked up on its own; only the misses reach the model, in one call, and are stored at once.
The proxy also counts model calls and time spent inside the model (harness overhead).

Two in-run layers sit in front of the persistent cache. A :class:`RunMemo` keeps embedding-scope
outputs (image and text embeddings, backbone features, similarity maps) for the whole run, so
zero-shot, retrieval and linear-probe tasks on the same images compute each embedding once even
with ``--no-cache``. ``capture`` records every output a task was served, which a distributed
run gathers on rank 0 (:mod:`bench.distributed`). A :class:`BatchPolicy` splits model calls
into the largest batch that fits: with ``--batch-size auto`` it halves on out-of-memory and
remembers the size that worked.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.cache import Key, PredictionCache
from bench.interfaces import BenchError, GenerationRequest, ImageRef, ModelAdapter, as_pil, stable_hash

EMBED_SCOPE = "embed"


@dataclass
class CallStats:
    model_items: int = 0  # items the model computed
    cache_hits: int = 0  # items served from the persistent cache
    reused: int = 0  # items served from this run's memory (computed earlier in the run, or by another rank)
    model_calls: int = 0  # calls that reached the model
    model_seconds: float = 0.0

    def add(self, other: CallStats) -> None:
        self.model_items += other.model_items
        self.cache_hits += other.cache_hits
        self.reused += other.reused
        self.model_calls += other.model_calls
        self.model_seconds += other.model_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "model_items": self.model_items,
            "model_calls": self.model_calls,
            "cache_hits": self.cache_hits,
            "reused": self.reused,
            "model_seconds": round(self.model_seconds, 4),
        }


class RunMemo:
    """Model outputs held in memory for one run: embedding-scope outputs across tasks, and, during a
    distributed task, the outputs every rank computed."""

    def __init__(self) -> None:
        self.values: dict[Key, Any] = {}

    def update(self, items: dict[Key, Any]) -> None:
        self.values.update(items)

    def keep_embeddings(self) -> None:
        """Drop everything but embedding-scope outputs (a task's generations serve no other task)."""
        self.values = {k: v for k, v in self.values.items() if k[1] == EMBED_SCOPE}


AUTO_BATCH_START = 256  # the first batch size ``--batch-size auto`` tries


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA/CPU out-of-memory errors (without importing torch)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory")
    )


def release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class BatchPolicy:
    """How many items one model call gets. ``auto``: start with the task's batch, halve on out-of-memory
    (down to 1), keep the size that fitted for the rest of the run. Otherwise an out-of-memory error
    stops the run with advice."""

    auto: bool = False
    limit: int | None = None  # the largest size known to fit (auto), None before the first failure
    largest_ok: int = 0
    halvings: list[int] = field(default_factory=list)  # the sizes that did not fit

    def run(self, items: list[Any], compute: Callable[[list[Any]], Sequence[Any]]) -> list[Any]:
        out: list[Any] = []
        i = 0
        while i < len(items):
            size = len(items) - i if self.limit is None else min(self.limit, len(items) - i)
            chunk = items[i : i + size]
            try:
                part = list(compute(chunk))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_memory()
                if not self.auto:
                    raise BenchError(
                        f"out of memory with a batch of {size} ({type(exc).__name__}: {str(exc)[:200]}); "
                        "pass a smaller --batch-size, or --batch-size auto to find the largest that fits"
                    ) from None
                if size == 1:
                    raise BenchError(
                        f"out of memory with a batch of 1 ({type(exc).__name__}: {str(exc)[:200]}); the model "
                        "does not fit this device"
                    ) from None
                self.halvings.append(size)
                self.limit = size // 2
                continue
            if len(part) != len(chunk):
                return part  # the caller reports the mismatch
            out.extend(part)
            self.largest_ok = max(self.largest_ok, size)
            i += size
        return out

    def to_json(self, requested: int | str) -> dict[str, Any]:
        used = self.limit or self.largest_ok or None
        return {"requested": requested, "used": used, "out_of_memory_at": self.halvings}


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
        self,
        model: ModelAdapter | LazyModel,
        fingerprint: str,
        cache: PredictionCache | None,
        scope: str,
        memo: RunMemo | None = None,
        batch: BatchPolicy | None = None,
        capture: bool = False,
    ) -> None:
        self._source = model
        self.fingerprint = fingerprint
        self.cache = cache
        self.scope = scope
        self.memo = memo
        self.batch = batch or BatchPolicy()
        self.captured: dict[Key, Any] | None = {} if capture else None
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
        """Serve keys from the run's memory, then the cache; compute the rest (one call per batch the
        policy allows); ``None`` keys are never stored."""
        out: list[Any] = [None] * len(items)
        served = [False] * len(items)
        memo = self.memo.values if self.memo is not None else {}
        for i, key in enumerate(keys):
            if key is not None and key in memo:
                out[i], served[i] = memo[key], True
        self.stats.reused += sum(served)
        lookup = [k for k, done in zip(keys, served, strict=True) if k is not None and not done]
        found = self.cache.get_many(lookup) if self.cache and lookup else {}
        todo: list[int] = []
        for i, key in enumerate(keys):
            if served[i]:
                continue
            if key is not None and key in found:
                out[i] = found[key]
                self.stats.cache_hits += 1
            else:
                todo.append(i)
        if todo:

            def call(chunk: list[Any]) -> Sequence[Any]:
                start = time.perf_counter()
                try:
                    return compute(chunk)
                finally:
                    self.stats.model_seconds += time.perf_counter() - start
                    self.stats.model_calls += 1

            computed = self.batch.run([items[i] for i in todo], call)
            if len(computed) != len(todo):
                raise RuntimeError(f"model {self.model.name!r} returned {len(computed)} outputs for {len(todo)} inputs")
            self.stats.model_items += len(todo)
            store = []
            for i, value in zip(todo, computed, strict=True):
                out[i] = value
                if keys[i] is not None:
                    store.append((keys[i], value))
            if self.cache is not None:
                self.cache.put_many(store)
        if self.memo is not None:
            self.memo.update({k: out[i] for i, k in enumerate(keys) if k is not None and k[1] == EMBED_SCOPE})
        if self.captured is not None:
            self.captured.update({k: out[i] for i, k in enumerate(keys) if k is not None})
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


__all__ = ["BatchPolicy", "CachedModel", "CallStats", "RunMemo", "as_pil"]
