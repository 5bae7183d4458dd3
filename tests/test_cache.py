"""Prediction cache: round trips, atomic batches, corrupt files."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from bench.cache import PredictionCache
from bench.cached_model import CachedModel
from bench.interfaces import EMBED, BenchError, GenerationRequest, ImageRef, ModelAdapter


def test_round_trip_arrays_and_json(tmp_path):
    with PredictionCache(tmp_path / "c.sqlite") as cache:
        arr = np.arange(6, dtype=np.float32).reshape(2, 3)
        cache.put_many([(("m", "embed", "s1", "image"), arr), (("m", "t", "s1", "h"), "a report")])
        got = cache.get_many([("m", "embed", "s1", "image"), ("m", "t", "s1", "h"), ("m", "t", "x", "h")])
        assert np.array_equal(got[("m", "embed", "s1", "image")], arr)
        assert got[("m", "embed", "s1", "image")].dtype == np.float32
        assert got[("m", "t", "s1", "h")] == "a report"
        assert ("m", "t", "x", "h") not in got
        assert cache.count() == 2 and cache.count("m") == 2 and cache.count("other") == 0
    # WAL mode persists in the file
    mode = sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_many_keys_in_chunks(tmp_path):
    with PredictionCache(tmp_path / "c.sqlite") as cache:
        items = [(("m", "embed", f"s{i}", "image"), i) for i in range(1000)]
        cache.put_many(items)
        got = cache.get_many([k for k, _ in items])
        assert len(got) == 1000 and got[("m", "embed", "s999", "image")] == 999


def test_corrupt_cache_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "predictions.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BenchError, match=r"corrupt or not a SQLite database.*--no-cache"):
        PredictionCache(bad)


class CountingModel(ModelAdapter):
    """A real (tiny, deterministic) embedder: image embedding from the key's hash."""

    name = "counting"
    capabilities = frozenset({EMBED})

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def fingerprint(self) -> str:
        return "counting-v1"

    def encode_images(self, images):
        self.seen += [im.key for im in images]
        return np.stack([np.full(4, len(im.key), np.float32) for im in images])

    def encode_texts(self, texts):
        self.seen += list(texts)
        return np.stack([np.full(4, len(t), np.float32) for t in texts])

    def generate(self, requests):
        self.seen += [r.prompt for r in requests]
        return [r.prompt.upper() for r in requests]


def test_cached_model_serves_hits_and_computes_only_misses(tmp_path):
    model = CountingModel()
    with PredictionCache(tmp_path / "c.sqlite") as cache:
        proxy = CachedModel(model, "fp", cache, scope="task")
        a = proxy.encode_images([ImageRef("img-a"), ImageRef("img-bb")])
        assert model.seen == ["img-a", "img-bb"]
        b = proxy.encode_images([ImageRef("img-bb"), ImageRef("img-ccc"), ImageRef("img-a")])
        assert model.seen == ["img-a", "img-bb", "img-ccc"]  # only the miss reached the model
        assert np.array_equal(b[0], a[1]) and np.array_equal(b[2], a[0])
        assert proxy.stats.cache_hits == 2 and proxy.stats.model_items == 3
        # another proxy (another task) shares embeddings but not generations
        other = CachedModel(model, "fp", cache, scope="task2")
        other.encode_images([ImageRef("img-a")])
        assert other.stats.cache_hits == 1
        req = GenerationRequest(images=(ImageRef("img-a"),), prompt="hi", sample_id="s1")
        assert proxy.generate([req]) == ["HI"]
        assert proxy.generate([req]) == ["HI"] and model.seen.count("hi") == 1
        other.generate([req])
        assert model.seen.count("hi") == 2
        sampled = GenerationRequest(images=(), prompt="warm", temperature=0.7, sample_id="s2")
        proxy.generate([sampled])
        proxy.generate([sampled])
        assert model.seen.count("warm") == 2  # non-deterministic requests are never cached


def test_cached_model_without_cache_still_counts():
    model = CountingModel()
    proxy = CachedModel(model, "fp", None, scope="t")
    proxy.encode_texts(["a", "a"])
    assert proxy.stats.model_items == 2 and proxy.stats.cache_hits == 0


def test_a_fully_cached_run_never_builds_the_model(tmp_path, monkeypatch):
    """With a quick fingerprint (checkpoint files hashed), a second identical run is served from the
    cache without loading the weights, and records the same model description."""
    from bench import api, runner
    from models.reference.clip_baseline import ClipBaseline

    ckpt = tmp_path / "ck"
    ClipBaseline(device="cpu", seed=3).save(ckpt)
    builds = []
    real = runner.instantiate_model

    def counting(*args, **kwargs):
        builds.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "instantiate_model", counting)
    options = dict(
        model_args={"checkpoint": str(ckpt)},
        output=str(tmp_path / "runs"),
        cache_path=str(tmp_path / "cache.sqlite"),
        limit=12,
        bootstrap=0,
        progress=False,
        device="cpu",
    )
    first = api.evaluate("clip-baseline", ["synthcxr_zs", "synthcxr_retrieval"], log=lambda m: None, **options)
    assert len(builds) == 1
    second = api.evaluate("clip-baseline", ["synthcxr_zs", "synthcxr_retrieval"], log=lambda m: None, **options)
    assert len(builds) == 1  # nothing was missing from the cache: the weights were never loaded
    for task in ("synthcxr_zs", "synthcxr_retrieval"):
        assert second.results["tasks"][task]["metrics"] == first.results["tasks"][task]["metrics"]
        assert second.results["tasks"][task]["calls"]["model_items"] == 0
    assert second.results["model"] == first.results["model"]
    # a changed checkpoint is a different model: it is built and recomputed
    ClipBaseline(device="cpu", seed=4).save(ckpt)
    third = api.evaluate("clip-baseline", ["synthcxr_zs"], log=lambda m: None, **options)
    assert len(builds) == 2
    assert third.results["model"]["fingerprint"] != first.results["model"]["fingerprint"]
    assert third.results["tasks"]["synthcxr_zs"]["calls"]["model_items"] > 0
