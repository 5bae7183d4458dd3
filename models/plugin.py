"""Registers the built-in models (lazy factories: nothing is built or imported at listing)."""

from __future__ import annotations

from bench.interfaces import BACKBONE, EMBED, TRAIN, ModelSpec
from bench.plugins import hookimpl


@hookimpl
def bench_register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="clip-baseline",
            factory="models.reference.clip_baseline:ClipBaseline",
            capabilities=frozenset({EMBED, BACKBONE, TRAIN}),
            description="CLIP-style dual encoder (small ViT + text transformer, InfoNCE); "
            "`--model-args checkpoint=DIR` for trained weights.",
            kind="dual encoder",
            presets=("tiny", "paper"),
            quick_fingerprint="models.reference.clip_baseline:quick_fingerprint",
        ),
    ]
