"""MedDr's diagnosis-guided bootstrapping: training text generated from labelled images.

A general-domain vision-language model knows what diseases look like in words but is unreliable at
reading them off an image; told the diagnosis, it can describe the image consistently with it. For each
sample that has an image and labels, a registered ``generate`` model is given the sample's first image and
a prompt stating the findings the labels mark present (1), absent (0) and uncertain (-1), and writes the
findings paragraph of a report. Unmentioned labels (None) are not stated; "No Finding" is never listed as
absent or uncertain (it is implied by the other lines). The prompt template is the caller's (``bench
meddr-bootstrap`` uses ``tasks.prompts.BOOTSTRAP_FINDINGS``): placeholders ``{image_kind}``, ``{present}``,
``{absent}``, ``{uncertain}`` (comma-separated names, ``none`` when empty).

Each output record: ``{"id", "image", "labels", "prompt", "report", "generator", "generator_fingerprint"}``
(``image`` is the image's file path, or its key when it has none). Samples without labels or without an
image are skipped and counted.

Resumable: generation goes through the harness's prediction cache (:class:`bench.cached_model.CachedModel`,
scope ``meddr-bootstrap``, key = generator fingerprint + sample id + request hash), committed one batch at
a time, so a crash loses at most the batch in flight and a re-run does not call the model again for the
finished ones (the model is not even built when its fingerprint is known from its arguments and every
request is cached). The generator is built with the same helpers as ``meddr-rag``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cache import PredictionCache
from bench.cached_model import CachedModel, LazyModel
from bench.interfaces import (
    GENERATE,
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    BenchError,
    GenerationRequest,
    ModelAdapter,
    Sample,
    batched,
)
from models.reference.meddr_rag import MODEL_NAME as RAG_NAME
from models.reference.meddr_rag import NO_FINDING, _build, _sub_quick, parse_nested_args

NAME = "meddr-bootstrap"
SCOPE = "meddr-bootstrap"  # the prediction-cache scope of bootstrapped reports
DEFAULT_IMAGE_KIND = "chest X-ray"
NONE_LISTED = "none"
_PLACEHOLDERS = ("image_kind", "present", "absent", "uncertain")


@dataclass
class BootstrapStats:
    """Counts filled in while :func:`bootstrap_reports` runs."""

    written: int = 0
    cached: int = 0  # reports served from the prediction cache
    generated: int = 0  # reports the generator wrote in this run
    skipped_no_labels: int = 0
    skipped_no_image: int = 0
    generator: str | None = None
    generator_fingerprint: str | None = None

    @property
    def skipped(self) -> int:
        return self.skipped_no_labels + self.skipped_no_image


# --------------------------------------------------------------------------- labels -> prompt


def label_groups(labels: Mapping[str, int | None]) -> tuple[list[str], list[str], list[str]]:
    """(present, absent, uncertain) finding names in the labels' order; unmentioned (None) labels are left out
    and "No Finding" appears only as present."""
    present = [n for n, v in labels.items() if v == POSITIVE]
    absent = [n for n, v in labels.items() if v == NEGATIVE and n != NO_FINDING]
    uncertain = [n for n, v in labels.items() if v == UNCERTAIN and n != NO_FINDING]
    return present, absent, uncertain


def skip_reason(sample: Sample) -> str | None:
    """``"no_labels"`` / ``"no_image"`` when the sample cannot be bootstrapped, else None."""
    if not any(label_groups(sample.labels)):
        return "no_labels"
    if not sample.images:
        return "no_image"
    return None


def bootstrap_prompt(labels: Mapping[str, int | None], template: str, image_kind: str) -> str:
    present, absent, uncertain = (", ".join(names) or NONE_LISTED for names in label_groups(labels))
    return template.format(image_kind=image_kind, present=present, absent=absent, uncertain=uncertain)


def check_options(prompt_template: str, max_new_tokens: int, batch_size: int) -> None:
    """Refuse a template with unknown placeholders and non-positive sizes (before any work starts)."""
    for option, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if value < 1:
            raise BenchError(f"{NAME}: {option} must be at least 1, got {value}")
    try:
        prompt_template.format(**dict.fromkeys(_PLACEHOLDERS, ""))
    except (KeyError, IndexError, ValueError) as exc:
        raise BenchError(
            f"{NAME}: prompt template cannot be filled ({type(exc).__name__}: {exc}); "
            f"its placeholders may be {', '.join('{' + p + '}' for p in _PLACEHOLDERS)}"
        ) from None


# --------------------------------------------------------------------------- the generator


@contextlib.contextmanager
def _own_messages() -> Iterator[None]:
    """The meddr-rag helpers name meddr-rag in their messages; here the command is meddr-bootstrap."""
    try:
        yield
    except BenchError as exc:
        text = str(exc)
        if text.startswith(f"{RAG_NAME}:"):
            raise BenchError(NAME + text[len(RAG_NAME) :]) from None
        raise


def generator_arguments(value: Any) -> dict[str, Any]:
    """``K=V;K=V`` or a JSON object string or a mapping → dict (the meddr-rag syntax)."""
    with _own_messages():
        return parse_nested_args(value, "generator_args")


def check_generator(name: str) -> str:
    """Refuse an unknown model or one without ``generate`` before anything is built; the registered name."""
    from bench.plugins import registry

    spec = registry().get("models", name)
    if GENERATE not in spec.capabilities:
        raise BenchError(
            f"{NAME}: generator {spec.name!r} lacks the generate capability (it has "
            f"{', '.join(sorted(spec.capabilities)) or 'none'}); `bench list models` shows the generate models"
        )
    return spec.name


def open_generator(
    generator: ModelAdapter | str, generator_args: Any = None, device: str = "auto", lazy: bool = True
) -> tuple[ModelAdapter | LazyModel, str, str]:
    """(model, its name, its fingerprint). A registered name whose fingerprint is known from its arguments
    gives a :class:`LazyModel` when ``lazy`` (built on the first cache miss)."""
    args = generator_arguments(generator_args)
    with _own_messages():
        if isinstance(generator, ModelAdapter):
            model, fp = _build(generator, args, device, GENERATE, "generator")
            return model, model.name, fp
        name = check_generator(str(generator))
        quick = _sub_quick(name, args, "generator") if lazy else None
        if quick is None:
            model, fp = _build(name, args, device, GENERATE, "generator")
            return model, name, fp

    def build() -> ModelAdapter:
        with _own_messages():
            model, fp = _build(name, args, device, GENERATE, "generator")
        if fp != quick:
            raise BenchError(f"{NAME}: generator {name!r}: its quick fingerprint disagrees with the built model's")
        return model

    return LazyModel(build), name, quick


# --------------------------------------------------------------------------- bootstrapping


def bootstrap_reports(
    generator: ModelAdapter | str,
    samples: Iterable[Sample],
    *,
    prompt_template: str,
    generator_args: Any = None,
    image_kind: str = DEFAULT_IMAGE_KIND,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    cache: PredictionCache | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
    stats: BootstrapStats | None = None,
) -> Iterator[dict[str, Any]]:
    """One record per sample with an image and labels, in sample order (see the module docstring).

    ``generator``: a registered model name (``generator_args`` its arguments) or a ModelAdapter instance.
    ``cache``: the prediction cache that makes a run resumable (None: nothing stored). ``stats`` is
    filled in as records are produced; ``log`` (a ``str -> None`` callable) gets the final counts.
    """
    check_options(prompt_template, max_new_tokens, batch_size)
    stats = stats if stats is not None else BootstrapStats()
    usable: list[Sample] = []
    for s in samples:
        reason = skip_reason(s)
        if reason == "no_labels":
            stats.skipped_no_labels += 1
        elif reason == "no_image":
            stats.skipped_no_image += 1
        else:
            usable.append(s)
    if not usable:
        if log is not None:
            log(summary_line(stats))
        return
    model, name, fp = open_generator(generator, generator_args, device, lazy=cache is not None)
    stats.generator, stats.generator_fingerprint = name, fp
    proxy = CachedModel(model, fp, cache, scope=SCOPE)
    for batch in batched(usable, batch_size):
        requests = [
            GenerationRequest(
                images=(s.image,),
                prompt=bootstrap_prompt(s.labels, prompt_template, image_kind),
                max_new_tokens=max_new_tokens,
                sample_id=s.id,
            )
            for s in batch
        ]
        hits_before = proxy.stats.cache_hits
        reports = proxy.generate(requests)
        hits = proxy.stats.cache_hits - hits_before
        stats.cached += hits
        stats.generated += len(batch) - hits
        for s, request, report in zip(batch, requests, reports, strict=True):
            stats.written += 1
            yield {
                "id": s.id,
                "image": s.image.path or s.image.key,
                "labels": dict(s.labels),
                "prompt": request.prompt,
                "report": str(report).strip(),
                "generator": name,
                "generator_fingerprint": fp,
            }
    if log is not None:
        log(summary_line(stats))


def summary_line(stats: BootstrapStats) -> str:
    return (
        f"{NAME}: {stats.written} reports ({stats.cached} from the cache, {stats.generated} generated); "
        f"skipped {stats.skipped_no_labels} samples without labels and {stats.skipped_no_image} without an image"
    )


# --------------------------------------------------------------------------- the output file


def check_output_file(path: Path) -> None:
    """Refuse an output that is a folder or whose folder cannot be created or written to."""
    if path.is_dir():
        raise BenchError(f"{NAME}: output {path} is a folder; give a file name such as {path / 'reports.jsonl'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise BenchError(f"{NAME}: cannot write the output file {path}: {exc.strerror or exc}") from None
