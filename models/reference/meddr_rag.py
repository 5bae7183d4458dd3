"""Retrieval-augmented diagnosis (MedDr): a ``generate`` model built from an ``embed`` model and,
optionally, a ``generate`` model, both taken from the plugin registry by name.

A *database* holds the image embeddings of a dataset split (synthcxr train by default) with each
image's labels and report. For a request, the embedding of its **first image** is compared with the
database by cosine similarity and the ``k`` nearest cases are retrieved (a database image whose key
equals the query's is skipped, so a split never retrieves itself). Then:

``mode=voting`` (no generator): the answer is every finding carried by a strict majority of the k
neighbours (``count > k / 2``; an uncertain label counts as carried when ``uncertain=positive``, the
default), in database label order, joined by ", " (the list format the diagnosis tasks parse).
"No Finding" is never voted on: it is the answer when no finding has a majority. When the prompt has
a ``Candidates:`` line (tasks.prompts), voted labels outside the candidates are dropped, and a prompt
that asks for *one* candidate ("Which one of ...") gets the candidate with the most votes (ties: the
larger summed similarity).

``mode=rag``: a block describing the neighbours (their labels, their reports, or both: ``inject``)
is put before the request's prompt, and the request (same images, decoding options) goes to the
generator.

Arguments (``--model-args``, top level separated by ',', as everywhere)::

    embedder=NAME                 registered model with the embed capability (required)
    embedder_args=K=V;K=V         its own arguments, ';'-separated (or a JSON object string)
    generator=NAME                registered generate model (required for mode=rag)
    generator_args=K=V;K=V        its own arguments, ';'-separated (or a JSON object string)
    database=DATASET:SPLIT        default synthcxr:train
    k=5  mode=rag|voting  inject=labels|reports|both  uncertain=positive|negative
    cache_dir=DIR                 where databases are stored (default $BENCH_CACHE_DIR/meddr-rag)

e.g. ``--model-args embedder=clip-baseline,embedder_args=checkpoint=DIR,mode=voting`` or
``... ,generator=openai,generator_args=model=X;base_url=http://127.0.0.1:8000/v1,mode=rag``.
From Python, ``embedder`` / ``generator`` may also be adapter instances and ``*_args`` dicts.

The database is stored once per (embedder fingerprint, dataset fingerprint) as ``embeddings.npy`` +
``records.json`` in ``cache_dir/<key>/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.interfaces import (
    EMBED,
    GENERATE,
    BenchError,
    GenerationRequest,
    ModelAdapter,
    Sample,
    batched,
    resolve,
    stable_hash,
)

MODEL_NAME = "meddr-rag"
MODES = ("rag", "voting")
INJECT = ("labels", "reports", "both")
UNCERTAIN = ("positive", "negative")
NO_FINDING = "No Finding"
PROMPT_VERSION = "1"
ACCEPTED_ARGS = (
    "embedder",
    "embedder_args",
    "generator",
    "generator_args",
    "database",
    "k",
    "mode",
    "inject",
    "uncertain",
    "cache_dir",
    "device",
)
USAGE = (
    "embedder=NAME (required), embedder_args=K=V;K=V, generator=NAME (required for mode=rag), "
    "generator_args=K=V;K=V, database=DATASET:SPLIT (default synthcxr:train), k=INT (default 5), "
    "mode=rag|voting (default rag), inject=labels|reports|both (default labels), "
    "uncertain=positive|negative (default positive), cache_dir=DIR"
)

RAG_HEADER = (
    "Reference cases: the {k} images most similar to this one in a database of annotated cases "
    "(most similar first) were reported as follows."
)
RAG_FOOTER = "Treat these cases as supporting evidence only; base your answer on the image you are given."

_CANDIDATES = re.compile(r"^Candidates:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_SINGLE = re.compile(r"\bwhich one of\b|\bexactly one candidate\b|<one candidate>", re.IGNORECASE)


# --------------------------------------------------------------------------- arguments


def _convert(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_nested_args(value: Any, what: str) -> dict[str, Any]:
    """``"k=v;k2=v2"`` or a JSON object string or a mapping → dict (ints/floats/bools converted)."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        raise BenchError(f"{MODEL_NAME}: {what} must be 'k=v;k=v' or a JSON object, got {value!r}")
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{MODEL_NAME}: {what} is not valid JSON ({exc})") from None
        if not isinstance(parsed, dict):
            raise BenchError(f"{MODEL_NAME}: {what} must be a JSON object")
        return parsed
    out: dict[str, Any] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"{MODEL_NAME}: {what}: expected key=value pairs separated by ';', got {part!r}")
        out[key.strip()] = _convert(val.strip())
    return out


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise BenchError(f"{MODEL_NAME}: {name} must be one of {'|'.join(allowed)}, got {value!r}. Accepted: {USAGE}")
    return str(value)


def _database_ref(value: Any) -> tuple[str, str]:
    dataset, sep, split = str(value).partition(":")
    if not dataset or not sep or not split:
        raise BenchError(f"{MODEL_NAME}: database must be DATASET:SPLIT (e.g. synthcxr:train), got {value!r}")
    return dataset, split


# --------------------------------------------------------------------------- sub-models


def _build(name_or_model: Any, args: Mapping[str, Any], device: str, need: str, role: str) -> tuple[ModelAdapter, str]:
    """(adapter, its identity fingerprint); a registered name is built through the registry."""
    if isinstance(name_or_model, ModelAdapter):
        if args:
            raise BenchError(f"{MODEL_NAME}: {role}_args given with a {role} instance")
        model, name = name_or_model, name_or_model.name
    else:
        from bench.plugins import registry
        from bench.runner import instantiate_model

        spec = registry().get("models", str(name_or_model))
        if need not in spec.capabilities:
            raise BenchError(
                f"{MODEL_NAME}: {role} {spec.name!r} lacks the {need} capability "
                f"(it has {', '.join(sorted(spec.capabilities)) or 'none'})"
            )
        model, name = instantiate_model(spec, args, device), spec.name
    if need not in model.capabilities:
        raise BenchError(f"{MODEL_NAME}: {role} {name!r} lacks the {need} capability")
    return model, stable_hash({"model": name, "weights": model.fingerprint()}, 32)


# --------------------------------------------------------------------------- database


@dataclasses.dataclass
class Database:
    embeddings: np.ndarray  # [N, D], L2-normalised float32
    ids: list[str]
    keys: list[str]  # image keys
    labels: list[dict[str, int | None]]
    reports: list[str]
    fingerprint: str

    @property
    def label_names(self) -> list[str]:
        names: dict[str, None] = {}
        for lab in self.labels:
            names.update(dict.fromkeys(lab))
        return list(names)

    def search(self, query: np.ndarray, k: int, exclude_key: str | None = None) -> list[tuple[int, float]]:
        """Top-k (index, cosine similarity), most similar first; ties by database order."""
        q = _normalise(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
        if q.shape[0] != self.embeddings.shape[1]:
            raise BenchError(
                f"{MODEL_NAME}: query embedding has dimension {q.shape[0]}, the database {self.embeddings.shape[1]}"
            )
        sims = self.embeddings @ q
        order = np.argsort(-sims, kind="stable")
        out: list[tuple[int, float]] = []
        for i in order:
            if exclude_key is not None and self.keys[int(i)] == exclude_key:
                continue
            out.append((int(i), float(sims[i])))
            if len(out) == k:
                break
        return out


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def default_cache_dir() -> Path:
    base = os.environ.get("BENCH_CACHE_DIR") or "~/.cache/medvlbench"
    return Path(base).expanduser() / MODEL_NAME


def load_database_samples(dataset: str, split: str) -> tuple[list[Sample], str]:
    """The samples of a registered dataset split and their fingerprint (ids, image keys, labels)."""
    from bench.plugins import registry
    from bench.runner import data_root, dataset_fingerprint, dataset_folder

    spec = registry().get("datasets", dataset)
    if split not in spec.splits:
        raise BenchError(f"{MODEL_NAME}: dataset {dataset} has no split {split!r}; valid: {', '.join(spec.splits)}")
    samples = [s for s in resolve(spec.loader)(dataset_folder(spec, data_root(None)), split) if s.images]
    if not samples:
        raise BenchError(f"{MODEL_NAME}: database {dataset}:{split} has no samples with an image")
    return samples, dataset_fingerprint(f"{dataset}:{split}", samples)


def build_database(
    embedder: ModelAdapter,
    embedder_fp: str,
    samples: Sequence[Sample],
    samples_fp: str,
    cache_dir: Path | None,
    batch_size: int = 64,
) -> Database:
    """Embed the samples' first images (or read them from ``cache_dir``, keyed by both fingerprints)."""
    key = stable_hash({"embedder": embedder_fp, "dataset": samples_fp}, 32)
    folder = cache_dir / key if cache_dir is not None else None
    if folder is not None and (folder / "records.json").is_file() and (folder / "embeddings.npy").is_file():
        records = json.loads((folder / "records.json").read_text())
        emb = np.load(folder / "embeddings.npy")
        return Database(emb, records["ids"], records["keys"], records["labels"], records["reports"], key)
    chunks = [np.asarray(embedder.encode_images([s.image for s in b]), dtype=np.float32) for b in batched(samples, 64)]
    emb = _normalise(np.concatenate(chunks))
    db = Database(
        emb,
        [s.id for s in samples],
        [s.image.key for s in samples],
        [dict(s.labels) for s in samples],
        [s.report for s in samples],
        key,
    )
    if folder is not None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        np.save(tmp / "embeddings.npy", emb)
        records = {"ids": db.ids, "keys": db.keys, "labels": db.labels, "reports": db.reports}
        (tmp / "records.json").write_text(json.dumps({**records, "embedder": embedder_fp, "dataset": samples_fp}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process published it first
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    return db


# --------------------------------------------------------------------------- identity without building


def _sub_quick(name: Any, args: Any, role: str) -> str | None:
    from bench.plugins import registry

    if not isinstance(name, str) or not name:
        return None
    spec = registry().get("models", name)
    if spec.quick_fingerprint is None:
        return None
    fp = resolve(spec.quick_fingerprint)(parse_nested_args(args, f"{role}_args"))
    return None if fp is None else stable_hash({"model": spec.name, "weights": fp}, 32)


def quick_fingerprint(args: Mapping[str, Any]) -> str | None:
    """``MedDrRAG(**args).fingerprint()`` without building the sub-models or the database, when both
    sub-models have quick fingerprints; None otherwise (or when the arguments are invalid: the adapter
    itself then reports them)."""
    try:
        mode = args.get("mode", "rag")
        k, inject, uncertain = args.get("k", 5), args.get("inject", "labels"), args.get("uncertain", "positive")
        if mode not in MODES or inject not in INJECT or uncertain not in UNCERTAIN:
            return None
        embedder_fp = _sub_quick(args.get("embedder"), args.get("embedder_args"), "embedder")
        generator_fp = (
            _sub_quick(args.get("generator"), args.get("generator_args"), "generator") if mode == "rag" else None
        )
        if embedder_fp is None or (mode == "rag" and generator_fp is None):
            return None
        _, samples_fp = load_database_samples(*_database_ref(args.get("database", "synthcxr:train")))
    except BenchError:
        return None
    db_fp = stable_hash({"embedder": embedder_fp, "dataset": samples_fp}, 32)
    return _identity(embedder_fp, generator_fp, db_fp, k, mode, inject, uncertain)


def _identity(
    embedder_fp: str, generator_fp: str | None, db_fp: str, k: Any, mode: str, inject: str, uncertain: str
) -> str:
    return stable_hash(
        {
            "embedder": embedder_fp,
            "generator": generator_fp,
            "database": db_fp,
            "k": k,
            "mode": mode,
            "inject": inject if mode == "rag" else None,
            "uncertain": uncertain if mode == "voting" else None,
            "prompt_version": PROMPT_VERSION,
        },
        32,
    )


# --------------------------------------------------------------------------- the adapter


class MedDrRAG(ModelAdapter):
    name = MODEL_NAME
    capabilities = frozenset({GENERATE})

    def __init__(
        self,
        embedder: Any = None,
        embedder_args: Any = None,
        generator: Any = None,
        generator_args: Any = None,
        database: Any = "synthcxr:train",
        k: Any = 5,
        mode: Any = "rag",
        inject: Any = "labels",
        uncertain: Any = "positive",
        cache_dir: Any = None,
        device: str = "auto",
        database_samples: Sequence[Sample] | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise BenchError(f"{MODEL_NAME}: unknown argument(s) {', '.join(sorted(unknown))}. Accepted: {USAGE}")
        if embedder is None or embedder == "":
            raise BenchError(f"{MODEL_NAME}: argument embedder is required. Accepted: {USAGE}")
        self.mode = _choice("mode", mode, MODES)
        self.inject = _choice("inject", inject, INJECT)
        self.uncertain = _choice("uncertain", uncertain, UNCERTAIN)
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise BenchError(f"{MODEL_NAME}: k must be a positive integer, got {k!r}. Accepted: {USAGE}")
        self.k = k
        if self.mode == "rag" and (generator is None or generator == ""):
            raise BenchError(f"{MODEL_NAME}: mode=rag needs generator=NAME. Accepted: {USAGE}")
        emb_args = parse_nested_args(embedder_args, "embedder_args")
        gen_args = parse_nested_args(generator_args, "generator_args")
        if database_samples is None:
            db_name, db_split = _database_ref(database)
        super().__init__(
            embedder=embedder if isinstance(embedder, str) else getattr(embedder, "name", "?"),
            embedder_args=emb_args,
            generator=generator if generator is None or isinstance(generator, str) else generator.name,
            generator_args=gen_args,
            database=str(database) if database_samples is None else "<given samples>",
            k=k,
            mode=self.mode,
            inject=self.inject,
            uncertain=self.uncertain,
        )
        self.embedder, self.embedder_fp = _build(embedder, emb_args, device, EMBED, "embedder")
        self.generator: ModelAdapter | None = None
        self.generator_fp: str | None = None
        if self.mode == "rag":
            self.generator, self.generator_fp = _build(generator, gen_args, device, GENERATE, "generator")
        if database_samples is None:
            samples, samples_fp = load_database_samples(db_name, db_split)
        else:
            samples = list(database_samples)
            samples_fp = stable_hash([[s.id, [im.key for im in s.images], s.labels] for s in samples], 32)
        cache = Path(str(cache_dir)).expanduser() if cache_dir else default_cache_dir()
        self.db = build_database(self.embedder, self.embedder_fp, samples, samples_fp, cache)
        self.finding_names = [n for n in self.db.label_names if n != NO_FINDING]

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        return _identity(
            self.embedder_fp, self.generator_fp, self.db.fingerprint, self.k, self.mode, self.inject, self.uncertain
        )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "retrieval-augmented",
            "mode": self.mode,
            "k": self.k,
            "inject": self.inject if self.mode == "rag" else None,
            "voting_rule": "finding carried by > k/2 neighbours; 'No Finding' when none"
            if self.mode == "voting"
            else None,
            "embedder": self.embedder.describe(),
            "generator": self.generator.describe() if self.generator is not None else None,
            "database": {"source": self.args["database"], "size": len(self.db.ids), "key": self.db.fingerprint},
        }

    def num_parameters(self) -> int | None:
        parts = [self.embedder.num_parameters()] + ([self.generator.num_parameters()] if self.generator else [])
        return None if any(p is None for p in parts) else sum(int(p) for p in parts)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ retrieval

    def retrieve(self, requests: Sequence[GenerationRequest]) -> list[list[tuple[int, float]]]:
        """The k nearest database cases (index, cosine) of each request's first image."""
        for r in requests:
            if not r.images:
                raise BenchError(f"{MODEL_NAME}: request {r.sample_id or ''} has no image to retrieve with")
        queries = np.asarray(self.embedder.encode_images([r.images[0] for r in requests]), dtype=np.float32)
        return [self.db.search(q, self.k, r.images[0].key) for q, r in zip(queries, requests, strict=True)]

    def _carries(self, index: int, label: str) -> bool:
        v = self.db.labels[index].get(label)
        return v == 1 or (v == -1 and self.uncertain == "positive")

    def positive_labels(self, index: int) -> list[str]:
        return [n for n in self.finding_names if self._carries(index, n)] or [NO_FINDING]

    def vote(self, neighbours: Sequence[tuple[int, float]], prompt: str = "") -> str:
        votes = {n: sum(self._carries(i, n) for i, _ in neighbours) for n in self.finding_names}
        weight = {n: sum(s for i, s in neighbours if self._carries(i, n)) for n in self.finding_names}
        m = _CANDIDATES.search(prompt)
        candidates = [c.strip() for c in m.group(1).split(";") if c.strip()] if m else None
        if candidates is not None:
            lower = {c.lower(): c for c in candidates}
            votes = {lower[n.lower()]: v for n, v in votes.items() if n.lower() in lower}
            weight = {lower[n.lower()]: w for n, w in weight.items() if n.lower() in lower}
            if _SINGLE.search(prompt):
                if NO_FINDING.lower() in lower:
                    votes.setdefault(
                        lower[NO_FINDING.lower()], sum(self.positive_labels(i) == [NO_FINDING] for i, _ in neighbours)
                    )
                if not votes:
                    return candidates[0]
                return max(votes, key=lambda n: (votes[n], weight.get(n, 0.0)))
        chosen = [n for n, v in votes.items() if v > len(neighbours) / 2]
        return ", ".join(chosen) if chosen else NO_FINDING

    def augment(self, prompt: str, neighbours: Sequence[tuple[int, float]]) -> str:
        lines = [RAG_HEADER.format(k=len(neighbours))]
        for rank, (i, sim) in enumerate(neighbours, 1):
            if self.inject in ("labels", "both"):
                lines.append(f"Case {rank} (similarity {sim:.2f}) findings: {', '.join(self.positive_labels(i))}")
            if self.inject in ("reports", "both"):
                report = " ".join(self.db.reports[i].split()) or "(no report)"
                lines.append(f"Case {rank} (similarity {sim:.2f}) report: {report}")
        lines.append(RAG_FOOTER)
        return "\n".join(lines) + "\n\n" + prompt

    # ------------------------------------------------------------------ generate

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        if not requests:
            return []
        found = self.retrieve(requests)
        if self.mode == "voting":
            return [self.vote(nb, r.prompt) for nb, r in zip(found, requests, strict=True)]
        assert self.generator is not None
        augmented = [
            dataclasses.replace(r, prompt=self.augment(r.prompt, nb)) for nb, r in zip(found, requests, strict=True)
        ]
        return self.generator.generate(augmented)
