"""Prediction cache: SQLite in WAL mode, one row per model output.

Key = (model fingerprint, scope, sample id, request hash). ``scope`` is the task name for
generation (the prompt belongs to the task) and ``"embed"`` for embeddings, whose request is
fully determined by the pixels or the text, so every task of a run shares them. An LLM judge's
verdicts use scope ``"judge"`` (:func:`judge_key`): keyed by judge model + prompt version and the
(reference, candidate) texts alone, so re-scoring any run or file never asks twice. Only
deterministic requests are stored. Each batch is committed at once, so a run killed with
SIGKILL loses at most the batch in flight.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.interfaces import BenchError, stable_hash

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL,
    scope TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    request TEXT NOT NULL,
    kind TEXT NOT NULL,
    value BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model, scope, sample_id, request)
) WITHOUT ROWID;
"""

Key = tuple[str, str, str, str]
JUDGE_SCOPE = "judge"


def judge_key(judge_model: str, prompt_version: str, reference: str, candidate: str) -> Key:
    """The cache key of one judged pair: judge model + prompt version, then the two texts."""
    judge = stable_hash({"judge_model": judge_model, "prompt_version": prompt_version}, 32)
    return (judge, JUDGE_SCOPE, "", stable_hash({"reference": reference, "candidate": candidate}, 32))


def default_cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "medvlbench"))


def default_cache_path() -> Path:
    return default_cache_dir() / "predictions.sqlite"


def _encode(value: Any) -> tuple[str, bytes]:
    if isinstance(value, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return "npy", buf.getvalue()
    return "json", json.dumps(value).encode()


def _decode(kind: str, blob: bytes) -> Any:
    if kind == "npy":
        return np.load(io.BytesIO(blob), allow_pickle=False)
    return json.loads(blob)


class PredictionCache:
    """A process-safe store of model outputs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"cannot create the cache folder {self.path.parent}: {exc.strerror}") from None
        deadline = time.monotonic() + 60.0
        while True:
            try:
                self._open()
                return
            except sqlite3.OperationalError as exc:
                # several processes (the ranks of a distributed run) creating the file at once: one wins, the
                # others see "database is locked" while it switches to WAL; they wait for it
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise self._unusable(exc) from None
                with contextlib.suppress(sqlite3.Error, AttributeError):
                    self._db.close()
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                raise self._unusable(exc) from None

    def _unusable(self, exc: Exception) -> BenchError:
        return BenchError(
            f"prediction cache {self.path} is corrupt or not a SQLite database ({exc}); "
            "delete it (only cached model outputs are lost) or run with --no-cache"
        )

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise BenchError(
                f"prediction cache {self.path} has schema version {row[0]}, this harness uses "
                f"{SCHEMA_VERSION}; delete the file or pass --no-cache"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PredictionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except sqlite3.DatabaseError as exc:
            raise BenchError(
                f"prediction cache {self.path} cannot be used ({exc}); delete it or run with --no-cache"
            ) from None

    def get_many(self, keys: Sequence[Key]) -> dict[Key, Any]:
        """Return the cached values for those keys that are present."""
        found: dict[Key, Any] = {}

        def run() -> None:
            for start in range(0, len(keys), 400):
                chunk = keys[start : start + 400]
                clause = " OR ".join(["(model=? AND scope=? AND sample_id=? AND request=?)"] * len(chunk))
                params = [part for key in chunk for part in key]
                rows = self._db.execute(
                    f"SELECT model, scope, sample_id, request, kind, value FROM predictions WHERE {clause}",
                    params,
                ).fetchall()
                for model, scope, sid, req, kind, blob in rows:
                    found[(model, scope, sid, req)] = _decode(kind, blob)

        self._guard(run)
        return found

    def put_many(self, items: Iterable[tuple[Key, Any]]) -> None:
        """Store values in one transaction (all or nothing)."""
        now = time.time()
        rows = [(*key, *_encode(value), now) for key, value in items]
        if not rows:
            return

        def run() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?)", rows)

        self._guard(run)

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self._guard(lambda: self._db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
        return self._guard(
            lambda: self._db.execute("SELECT COUNT(*) FROM predictions WHERE model=?", (model,)).fetchone()[0]
        )
