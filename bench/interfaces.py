"""Public interfaces shared by the core, task adapters and model adapters.

Nothing here imports torch: listing plugins and reading results must stay cheap.
Model adapters exchange numpy arrays and plain Python objects with tasks.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# --------------------------------------------------------------------------- errors


class BenchError(Exception):
    """A problem the user can fix (bad input, missing data, wrong name).

    The CLI prints the message alone (no traceback) and exits with status 2.
    """


class ProtocolNotImplemented(BenchError):
    """A registered task whose protocol has not been implemented yet."""


# --------------------------------------------------------------------------- capabilities

EMBED = "embed"
GROUND = "ground"
GENERATE = "generate"
BACKBONE = "backbone"
TRAIN = "train"
CAPABILITIES = (EMBED, GROUND, GENERATE, BACKBONE, TRAIN)

# Label encoding shared by every reader: uncertain stays distinct from negative and from
# "not mentioned" (None).
POSITIVE = 1
NEGATIVE = 0
UNCERTAIN = -1


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in original-image pixels: (x, y) top-left, width, height."""

    label: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class ImageRef:
    """A lazily loaded image.

    ``key`` identifies the pixels (used in cache keys); ``path`` is where they live.
    ``loader`` overrides file reading (e.g. DICOM); it must return a PIL image.
    """

    key: str
    path: str | None = None
    loader: Callable[[], Any] | None = field(default=None, compare=False, repr=False)

    def load(self) -> Any:
        """Return a ``PIL.Image.Image`` (mode ``L`` or ``RGB``)."""
        if self.loader is not None:
            return self.loader()
        if self.path is None:
            raise BenchError(f"image {self.key!r} has neither a path nor a loader")
        from PIL import Image

        try:
            with Image.open(self.path) as im:
                im.load()
                return im.copy()
        except FileNotFoundError:
            raise BenchError(f"image file not found: {self.path}") from None
        except OSError as exc:
            raise BenchError(f"cannot read image {self.path}: {exc}") from None


def as_pil(image: Any) -> Any:
    """Accept an ImageRef, a path or a PIL image and return a PIL image."""
    if isinstance(image, ImageRef):
        return image.load()
    if isinstance(image, (str, os.PathLike)):
        return ImageRef(key=str(image), path=str(image)).load()
    return image


@dataclass
class Sample:
    """One dataset item, the same record for every reader.

    labels: finding -> 1 positive, 0 negative, -1 uncertain; a finding absent from the
    mapping (or mapped to None) was not mentioned.
    sections: report sections by lower-case name: "indication", "findings", "impression", ...
    """

    id: str
    dataset: str
    split: str
    images: list[ImageRef] = field(default_factory=list)
    labels: dict[str, int | None] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)
    boxes: list[Box] = field(default_factory=list)
    question: str | None = None
    answer: str | None = None
    answer_type: str | None = None  # "closed" | "open"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> ImageRef:
        if not self.images:
            raise BenchError(f"sample {self.id!r} of {self.dataset} has no image")
        return self.images[0]

    @property
    def report(self) -> str:
        """Findings and impression joined, the text most protocols compare against."""
        parts = [self.sections.get(k, "") for k in ("findings", "impression")]
        return " ".join(p for p in parts if p).strip()


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class GenerationRequest:
    """One generation call: images + prompt + decoding options.

    ``context`` carries the structured fields the task built its prompt from, as ``(name, value)``
    pairs (e.g. ``("protocol", "report_generation"), ("indication", "...")``), so that a model
    trained with a prompt of its own (LLaVA-Rad's) can rebuild that prompt; every other model
    reads ``prompt`` only. It is part of the request hash when present.
    """

    images: tuple[ImageRef, ...]
    prompt: str
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    system: str | None = None
    sample_id: str | None = None
    context: tuple[tuple[str, str], ...] = ()

    def context_value(self, name: str) -> str | None:
        return next((v for k, v in self.context if k == name), None)

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0.0

    def request_hash(self) -> str:
        payload = {
            "images": [im.key for im in self.images],
            "prompt": self.prompt,
            "system": self.system,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.context:  # absent from older hashes, which stay valid
            payload["context"] = [list(kv) for kv in self.context]
        return stable_hash(payload)


class ModelAdapter:
    """Base class for model adapters. Subclasses implement the capability methods.

    ``capabilities`` is declared on the class; the runner checks it against a task's
    ``requires`` before any work starts.
    """

    name: str = "model"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, **args: Any) -> None:
        self.args = dict(args)

    def fingerprint(self) -> str:
        """Identifies the weights + adapter arguments (cache key component)."""
        raise NotImplementedError

    def num_parameters(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": "unknown"}

    # embed
    def encode_images(self, images: Sequence[ImageRef]) -> Any:  # -> np.ndarray [N, D]
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> Any:  # -> np.ndarray [N, D]
        raise NotImplementedError

    # ground
    def similarity_map(self, image: ImageRef, phrase: str) -> Any:  # -> np.ndarray [h, w]
        raise NotImplementedError

    # generate
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        raise NotImplementedError

    # backbone: ``module(preprocess(images)) -> [N, feature_dim]`` features; a fresh copy per call, so that
    # fine-tuning it changes neither the adapter's outputs nor its fingerprint
    def image_backbone(self) -> tuple[Any, int]:  # -> (torch.nn.Module, feature_dim)
        raise NotImplementedError

    def preprocess(self, images: Sequence[ImageRef]) -> Any:  # -> torch.Tensor, the backbone's input batch (CPU)
        raise NotImplementedError

    # train
    def fit(self, train_data: Sequence[Sample], config: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def save(self, directory: str | Path) -> None:
        raise NotImplementedError

    def load(self, directory: str | Path) -> None:
        raise NotImplementedError


@runtime_checkable
class EmbedModel(Protocol):
    def encode_images(self, images: Sequence[ImageRef]) -> Any: ...
    def encode_texts(self, texts: Sequence[str]) -> Any: ...


# --------------------------------------------------------------------------- registry specs


def resolve(target: str | Callable[..., Any]) -> Any:
    """Resolve a lazy ``"package.module:attr"`` reference (imported only when used)."""
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset reader. ``loader(root, split, **options) -> list[Sample]`` (lazy reference).

    ``needs_root``: False for generated datasets (synthcxr), which need no download.
    ``check(root, **options) -> bench.data.common.CheckReport`` validates a local copy without
    loading every image (optional, lazy; without it ``bench data check`` loads every split and
    opens a sample of images). ``obtain``, ``licence`` and ``layout`` are shown by ``bench data info``.
    """

    name: str
    loader: str | Callable[..., list[Sample]]
    description: str = ""
    splits: tuple[str, ...] = ("train", "val", "test")
    needs_root: bool = True
    folder: str | None = None  # sub-folder of the data root
    obtain: str = ""  # where a user gets the data
    check: str | Callable[..., Any] | None = None
    licence: str = ""
    layout: str = ""  # the expected files under the dataset's folder


@dataclass(frozen=True)
class ModelSpec:
    """A model factory. ``factory(**model_args) -> ModelAdapter`` (lazy reference)."""

    name: str
    factory: str | Callable[..., ModelAdapter]
    capabilities: frozenset[str]
    description: str = ""
    kind: str = "unknown"  # "dual encoder" | "generative" | ...
    presets: tuple[str, ...] = ()  # training presets, for `bench train`
    # ``quick_fingerprint(model_args) -> str | None``: the adapter's fingerprint computed without
    # building the model (e.g. a hash of checkpoint files), or None when that is not possible.
    # With it, a run whose predictions are all cached never loads the model.
    quick_fingerprint: str | Callable[[Mapping[str, Any]], str | None] | None = None


@dataclass(frozen=True)
class MetricSpec:
    """A metric function. ``fn`` is a lazy reference; ``level`` is "corpus" or "sample"."""

    name: str
    fn: str | Callable[..., Any]
    higher_is_better: bool = True
    description: str = ""
    level: str = "corpus"
    family: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """A named task instance = dataset split + protocol + metrics.

    ``factory(spec) -> Task``; a spec whose factory is None has no protocol implementation
    yet and is refused with a clear message.
    """

    name: str
    dataset: str
    protocol: str
    split: str
    metrics: tuple[str, ...]
    requires: frozenset[str]
    factory: str | Callable[..., Task] | None
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    family: str = ""  # leaderboard tab: zero-shot, fine-tune, grounding, ...
    dataset_options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "split": self.split,
            "metrics": list(self.metrics),
            "requires": sorted(self.requires),
            "implemented": self.factory is not None,
            "family": self.family,
            "description": self.description,
            "options": dict(self.options),
        }


# --------------------------------------------------------------------------- tasks


@dataclass
class MetricValue:
    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "ci95": [self.low, self.high], "n": self.n}
        if self.extra:
            out.update(self.extra)
        return out


class Task:
    """A protocol bound to a spec. Two phases, kept apart so scoring can be redone.

    ``predict`` yields one JSON-serialisable record per sample, in order:
    ``{"id", "inputs", "prediction", "reference", ...}``.
    ``score`` turns records back into metrics (no model needed).
    """

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def options_over(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The spec's options over the protocol's ``defaults``; an option the protocol does not know is refused."""
        unknown = set(self.spec.options) - set(defaults)
        if unknown:
            raise BenchError(f"task {self.spec.name}: unknown option(s) {sorted(unknown)}; valid: {sorted(defaults)}")
        return {**defaults, **self.spec.options}

    #: Other splits of the task's dataset the protocol learns from (e.g. ``("train", "val")`` for fine-tuning).
    #: The runner loads them with the task's dataset options and passes them to :meth:`use_splits` before
    #: ``predict``; ``--limit`` applies to the evaluated split only.
    extra_splits: tuple[str, ...] = ()

    def use_splits(self, splits: Mapping[str, list[Sample]]) -> None:
        """Receive the :attr:`extra_splits` (split name → samples)."""
        if self.extra_splits:
            raise NotImplementedError(f"task {self.name} declares extra_splits but does not take them")

    def data_selection(self) -> Mapping[str, Any]:
        """What the protocol chose from the extra splits (e.g. the hash of each seed's training subset ids).
        The runner hashes it into the result's dataset fingerprint, so that the fingerprint changes whenever
        the selection does. Empty for tasks that only read the evaluated split."""
        return {}

    def prepare(self, samples: list[Sample]) -> list[Sample]:
        """Filter/order samples for this protocol (e.g. one class per image)."""
        return samples

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    #: How a distributed run (``torchrun``) divides the task. ``"records"``: each record depends on its own
    #: sample only, so each rank predicts its share of the samples and rank 0 gathers the records.
    #: ``"outputs"``: records depend on every sample (retrieval ranks, a classifier trained on features), so
    #: each rank computes its share of the model outputs in :meth:`prefetch`, rank 0 gathers them and runs
    #: :meth:`predict` over all samples with every model call answered from them.
    distributed: str = "records"

    def prefetch(
        self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int, rank: int, world_size: int
    ) -> None:
        """Make, through ``model`` (the runner's caching proxy), this rank's share of the model calls that
        :meth:`predict` will make (tasks with ``distributed = "outputs"``). Shares are whole batches of the
        one-process run (:func:`bench.distributed.shard_indices`) so that the outputs are the same."""
        raise NotImplementedError(f"task {self.name} declares distributed='outputs' but has no prefetch")

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, MetricValue]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The task's full configuration, recorded in the result."""
        return {"protocol": self.spec.protocol, "split": self.spec.split, **dict(self.spec.options)}


# --------------------------------------------------------------------------- helpers


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short, stable hash of a JSON-serialisable object."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:length]


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
