"""RadGraph F1 (Delbrouck et al. 2022, the ``radgraph`` package) with a local model only.

Two parts:

* **Rewards from annotations** (pure, our own code, checked against the package's
  ``radgraph.rewards`` when it is installed). A RadGraph annotation is
  ``{"entities": {"1": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 3, "end_ix": 3,
  "relations": [["located_at", "2"]]}, ...}}``. As in ``F1RadGraph``:

  - *simple*: set-F1 of ``(tokens, label)`` over entities;
  - *partial*: entities without relations as ``(tokens, label)``, entities with at least one
    relation as ``(tokens, label, True)``;
  - *complete*: entities without relations as ``(tokens, label)``; each relation of an entity as
    ``(tokens.lower(), label, relation, target tokens.lower())`` (the package lower-cases only
    these tuples; we keep that);
  - precision = |H ∩ R| / |H|, recall = |H ∩ R| / |R| (0 for an empty set), F1 = 2PR / (P + R)
    (0 when P + R = 0); a report pair where either side has no entity, or either report is the
    empty string, scores 0 (METRICS.md: empty report -> 0).

  RadCliQ's ``radgraph_combined`` (CXR-Report-Metric) is the mean of the entity F1 over
  ``(tokens, label)`` and the relation F1 over ``((tokens, label), (target tokens, target label),
  relation)``, with F1 = 0 whenever a side is empty.

* **The annotator**: the package's ``RadGraph`` model read from a local path
  (``radgraph_path=`` / ``BENCH_RADGRAPH_PATH``): the folder the package unpacks its archive
  into (``config.json``, ``vocabulary/``, ``weights.th``), or the archive itself
  (``radgraph.tar.gz``, ``radgraph-xl.tar.gz``). The model type (``radgraph_model_type=``,
  default ``radgraph``, the original RadGraph model; ``radgraph-xl`` or ``modern-radgraph-xl``)
  chooses the package's text preprocessing. The BERT encoder that ``config.json`` names is
  resolved to a local folder before the package sees it: an existing folder, the local
  Hugging Face cache (never the network), or ``radgraph_encoder=`` / ``BENCH_RADGRAPH_ENCODER``.
  The package is handed a private staging folder, so it never reaches its download branch.

  The package (0.1.18, the latest) does not run with transformers 5: its vendored AllenNLP calls
  ``tokenizer.encode_plus`` and ``build_inputs_with_special_tokens``, which transformers 5 removed.
  There the metric is unavailable with that reason; in an environment with ``transformers<5`` and
  ``radgraph`` (plus ``requests``, which it imports without declaring) it runs offline from the local
  model (exercised by ``test_radgraph_end_to_end_with_a_local_model`` on a tiny random model).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.interfaces import BenchError
from bench.metrics.clinical import option_path
from bench.metrics.unavailable import MetricUnavailable

MODEL_ENV = "BENCH_RADGRAPH_PATH"
ENCODER_ENV = "BENCH_RADGRAPH_ENCODER"
LEVELS = ("simple", "partial", "complete")
MODEL_TYPES = ("radgraph", "radgraph-xl", "modern-radgraph-xl")
DEFAULT_MODEL_TYPE = "radgraph"

Annotation = Mapping[str, Any]

# ----------------------------------------------------------------------------- rewards


def _entities(annotation: Annotation) -> Mapping[str, Mapping[str, Any]]:
    entities = annotation.get("entities", {})
    if not isinstance(entities, Mapping):
        raise ValueError("a RadGraph annotation's 'entities' must be a mapping of id -> entity")
    return entities


def items(annotation: Annotation, level: str) -> set[tuple[Any, ...]]:
    """The set an F1RadGraph reward level compares (see the module docstring)."""
    entities = _entities(annotation)
    out: set[tuple[Any, ...]] = set()
    for entity in entities.values():
        tokens, label, relations = entity["tokens"], entity["label"], entity.get("relations") or []
        if level == "simple":
            out.add((tokens, label))
        elif level == "partial":
            out.add((tokens, label, True) if relations else (tokens, label))
        elif level == "complete":
            if not relations:
                out.add((tokens, label))
            for relation, target in relations:
                out.add((tokens.lower(), label, relation, entities[target]["tokens"].lower()))
        else:
            raise ValueError(f"unknown RadGraph reward level {level!r}; choose one of {', '.join(LEVELS)}")
    return out


def set_f1(hypothesis: Iterable[Any], reference: Iterable[Any]) -> float:
    """F1 of two sets with precision / recall 0 on an empty side (the package's convention)."""
    hyp, ref = set(hypothesis), set(reference)
    common = len(hyp & ref)
    precision = common / len(hyp) if hyp else 0.0
    recall = common / len(ref) if ref else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def reward(hypothesis: Annotation, reference: Annotation, level: str) -> float:
    """F1RadGraph's reward of one report pair at ``level``; 0 when either side has no entity."""
    if level not in LEVELS:
        raise ValueError(f"unknown RadGraph reward level {level!r}; choose one of {', '.join(LEVELS)}")
    if not _entities(hypothesis) or not _entities(reference):
        return 0.0
    return set_f1(items(hypothesis, level), items(reference, level))


def entity_relation_sets(annotation: Annotation) -> tuple[set[Any], set[Any]]:
    """CXR-Report-Metric's entity set {(tokens, label)} and relation set {(source, target, relation)}."""
    entities = _entities(annotation)
    ents = {(e["tokens"], e["label"]) for e in entities.values()}
    rels = set()
    for e in entities.values():
        for relation, target in e.get("relations") or []:
            t = entities[target]
            rels.add(((e["tokens"], e["label"]), (t["tokens"], t["label"]), relation))
    return ents, rels


def radgraph_combined(hypothesis: Annotation, reference: Annotation) -> float:
    """RadCliQ's RadGraph input: (entity F1 + relation F1) / 2."""
    h_ent, h_rel = entity_relation_sets(hypothesis)
    r_ent, r_rel = entity_relation_sets(reference)
    return (set_f1(h_ent, r_ent) + set_f1(h_rel, r_rel)) / 2.0


# ----------------------------------------------------------------------------- annotator


def _encoder_names(config: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """(key path, model name) of every BERT encoder the DyGIE config refers to."""
    paths = [
        ("dataset_reader", "token_indexers", "bert", "model_name"),
        ("model", "embedder", "token_embedders", "bert", "model_name"),
    ]
    out = []
    for path in paths:
        node: Any = config
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, str):
            out.append((path, node))
    return out


def _resolve_encoder(name: str, override: str | None, config_path: Path) -> str:
    if override:
        if not os.path.isdir(override):
            raise BenchError(f"RadGraph encoder folder not found: {override} (radgraph_encoder / {ENCODER_ENV})")
        return os.path.abspath(override)
    candidate = name if os.path.isabs(name) else str(config_path.parent / name)
    if os.path.isdir(candidate):
        return os.path.abspath(candidate)
    if os.path.isdir(name):
        return os.path.abspath(name)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=name, local_files_only=True)
    except Exception:
        raise MetricUnavailable(
            f"RadGraph's encoder {name!r} (named in {config_path}) is not available locally: put it in the "
            f"Hugging Face cache, or give radgraph_encoder= / {ENCODER_ENV} a local folder (nothing is downloaded)"
        ) from None


def _model_folder(path: Path, model_type: str, scratch: Path) -> Path:
    """The folder holding config.json / vocabulary / weights.th (unpacking an archive into scratch)."""
    if path.is_file() and tarfile.is_tarfile(path):
        target = scratch / "unpacked"
        target.mkdir()
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(target, filter="data")
        path = target
    if path.is_dir() and not (path / "config.json").is_file() and (path / model_type / "config.json").is_file():
        path = path / model_type
    missing = [name for name in ("config.json", "weights.th", "vocabulary") if not (path / name).exists()]
    if missing:
        raise BenchError(
            f"{path} is not a RadGraph model: missing {', '.join(missing)} (expected the unpacked "
            f"{model_type}.tar.gz of the radgraph package: config.json, vocabulary/, weights.th)"
        )
    return path


def _check_package() -> None:
    """MetricUnavailable unless the radgraph package can run here."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("radgraph") is None:
        raise MetricUnavailable("the radgraph package is not installed (pip install radgraph; it needs transformers<5)")
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
    except ImportError as exc:
        raise MetricUnavailable(f"RadGraph needs transformers: {exc}") from None
    if not hasattr(PreTrainedTokenizerBase, "encode_plus"):
        versions = {p: importlib.metadata.version(p) for p in ("radgraph", "transformers")}
        raise MetricUnavailable(
            f"the radgraph package ({versions['radgraph']}) calls tokenizer.encode_plus and "
            f"build_inputs_with_special_tokens, which transformers {versions['transformers']} no longer has: "
            "compute RadGraph F1 in an environment with transformers<5"
        )
    try:
        import radgraph  # noqa: F401  (its vendored allennlp imports requests, undeclared)
    except ImportError as exc:
        raise MetricUnavailable(f"the radgraph package does not import here ({exc})") from None


class RadGraphAnnotator:
    """The ``radgraph`` package's model, loaded offline from a local path; annotations cached per text."""

    def __init__(
        self, path: str | Path, model_type: str = DEFAULT_MODEL_TYPE, encoder: str | None = None, device: str = "cpu"
    ) -> None:
        if model_type not in MODEL_TYPES:
            raise BenchError(f"unknown RadGraph model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
        _check_package()
        from radgraph import RadGraph

        path = Path(path).expanduser()
        if not path.exists():
            raise BenchError(f"RadGraph model not found: {path} (radgraph_path / {MODEL_ENV})")
        self._scratch = tempfile.TemporaryDirectory(prefix="medvlbench-radgraph-")
        scratch = Path(self._scratch.name)
        folder = _model_folder(path, model_type, scratch)
        config = json.loads((folder / "config.json").read_text())
        for keys, name in _encoder_names(config):
            node = config
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = _resolve_encoder(name, encoder, folder / "config.json")
        # the package reads <cache>/<model_type>/{config.json,vocabulary,weights.th}; a non-empty
        # folder there means it never tries to download
        staged = scratch / "cache" / model_type
        staged.mkdir(parents=True)
        (staged / "config.json").write_text(json.dumps(config))
        for name in ("vocabulary", "weights.th"):
            (staged / name).symlink_to((folder / name).resolve())
        cuda = int(device.split(":")[1]) if device.startswith("cuda:") else (0 if device == "cuda" else -1)
        with contextlib.redirect_stdout(io.StringIO()):
            self.model = RadGraph(model_type=model_type, model_cache_dir=str(scratch / "cache"), cuda=cuda)
        self.model_type = model_type
        self._cache: dict[str, dict[str, Any]] = {}

    def annotate(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One annotation per text (an empty text gets no entities)."""
        todo = sorted({t for t in texts if t.strip() and t not in self._cache})
        if todo:
            with contextlib.redirect_stdout(io.StringIO()):
                out = self.model(todo)
            for i, text in enumerate(todo):
                self._cache[text] = out.get(str(i), {"entities": {}})
        return [self._cache[t] if t.strip() else {"entities": {}} for t in texts]


@functools.lru_cache(maxsize=2)
def load_annotator(path: str, model_type: str, encoder: str | None, device: str) -> RadGraphAnnotator:
    return RadGraphAnnotator(path, model_type, encoder, device)


def annotator_from_options(options: Mapping[str, Any]) -> RadGraphAnnotator:
    """The annotator named by ``radgraph_path`` / ``BENCH_RADGRAPH_PATH`` (MetricUnavailable when unset)."""
    path = option_path(options, "radgraph_path", MODEL_ENV)
    if path is None:
        raise MetricUnavailable(
            f"RadGraph weights not configured: give radgraph_path= or set {MODEL_ENV} to a local RadGraph model "
            "(the radgraph package's radgraph.tar.gz or its unpacked folder; nothing is downloaded)"
        )
    model_type = str(options.get("radgraph_model_type") or DEFAULT_MODEL_TYPE)
    encoder = option_path(options, "radgraph_encoder", ENCODER_ENV)
    device = str(options.get("device") or "cpu")
    return load_annotator(os.path.abspath(path), model_type, encoder, device)


def rewards_from_options(
    predictions: Sequence[str], references: Sequence[str], level: str, options: Mapping[str, Any]
) -> list[float]:
    """Per-pair rewards at ``level``; an empty prediction or reference scores 0 (not annotated)."""
    if level not in LEVELS:
        raise ValueError(f"unknown RadGraph reward level {level!r}")
    annotator = annotator_from_options(options)
    hyps = annotator.annotate(predictions)
    refs = annotator.annotate(references)
    return [
        0.0 if not (p.strip() and r.strip()) else reward(h, g, level)
        for p, r, h, g in zip(predictions, references, hyps, refs, strict=True)
    ]


def combined_from_options(
    predictions: Sequence[str], references: Sequence[str], options: Mapping[str, Any]
) -> list[float]:
    """Per-pair RadCliQ ``radgraph_combined``."""
    annotator = annotator_from_options(options)
    hyps = annotator.annotate(predictions)
    refs = annotator.annotate(references)
    return [radgraph_combined(h, g) for h, g in zip(hyps, refs, strict=True)]
