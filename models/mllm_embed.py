"""``hf-vlm-embed`` / ``hf-llava-embed``: a generative model's hidden states as embeddings.

The "CLIP inference strategy" of LLaVA-RadZ (Table 1): the multimodal LLM itself embeds images and
texts, and zero-shot / retrieval tasks compare them by cosine similarity. These variants keep the
``generate`` capability of ``hf-vlm`` / ``hf-llava`` and add ``embed`` (capabilities are declared per
registered name, so the opt-in is a separate model name rather than an argument).

* ``encode_images``: ``embed_input=image`` (default) feeds each image alone -- the tokenizer's BOS
  and the image's placeholder tokens, no template and no text -- and pools the hidden states of the
  image tokens only. ``embed_input=prompt`` feeds the generation prompt of the image with the fixed
  instruction ``embed_prompt`` (default "Describe the image.") and pools all its tokens.
* ``encode_texts``: each text alone (the tokenizer's special tokens, no template), pooled over its
  tokens.
* Pooling (``embed_pool``): ``mean`` over the pooled positions (padding and the BOS token left
  out) or ``last`` (the last pooled position). Layer (``embed_layer``): index into the
  language model's ``hidden_states`` (0 = input embeddings, -1 = last layer, the default).
  Vectors are L2-normalised float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bench.interfaces import EMBED, GENERATE, BenchError, GenerationRequest
from models.hf_llava import LLAVA_ARGS, HFLlava
from models.hf_vlm import VLM_ARGS, HFVisionLanguageModel, quick_identity

POOLS = ("mean", "last")
INPUTS = ("image", "prompt")
DEFAULT_EMBED_PROMPT = "Describe the image."
EMBED_ARGS: dict[str, tuple[type, Any]] = {
    "embed": (bool, True),
    "embed_pool": (str, "mean"),
    "embed_layer": (int, -1),
    "embed_input": (str, "image"),
    "embed_prompt": (str, DEFAULT_EMBED_PROMPT),
}


def check_embed_settings(model: str, settings: dict[str, Any]) -> dict[str, Any]:
    if not settings["embed"]:
        base = model.removesuffix("-embed")
        raise BenchError(f"model {model}: embed=false is --model {base} (generation only)")
    if settings["embed_pool"] not in POOLS:
        raise BenchError(f"model {model}: embed_pool must be one of {', '.join(POOLS)}, got {settings['embed_pool']!r}")
    if settings["embed_input"] not in INPUTS:
        raise BenchError(
            f"model {model}: embed_input must be one of {', '.join(INPUTS)}, got {settings['embed_input']!r}"
        )
    return settings


class EmbedMixin:
    """``embed`` from hidden states; mixed into an HFVisionLanguageModel subclass."""

    capabilities = frozenset({EMBED, GENERATE})

    @classmethod
    def parse_settings(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        return check_embed_settings(cls.name, super().parse_settings(args))  # type: ignore[misc]

    @classmethod
    def identity_extra(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        extra = dict(super().identity_extra(settings))  # type: ignore[misc]
        extra["embed"] = {k: settings[k] for k in ("embed_pool", "embed_layer", "embed_input")}
        if settings["embed_input"] == "prompt":
            extra["embed"]["embed_prompt"] = settings["embed_prompt"]
        return extra

    def describe(self) -> dict[str, Any]:
        info = super().describe()  # type: ignore[misc]
        s = self.settings  # type: ignore[attr-defined]
        image_input = (
            "each image alone: BOS + its image tokens, pooled over the image tokens"
            if s["embed_input"] == "image"
            else f"the generation prompt of the image with {s['embed_prompt']!r}, pooled over its tokens"
        )
        info["embedding"] = {
            "method": "hidden states of the language model (LLaVA-RadZ 'CLIP inference strategy')",
            "layer": s["embed_layer"],
            "pool": s["embed_pool"],
            "image_input": image_input,
            "text_input": "each text alone with the tokenizer's special tokens, pooled over its tokens (BOS left out)",
            "normalised": "L2",
        }
        return info

    # ------------------------------------------------------------------ embed

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        model: Any = self
        out = [np.zeros((0, 0), dtype=np.float32)]
        rows = []
        for start in range(0, len(images), model.batch_size):
            chunk = list(images[start : start + model.batch_size])
            if model.settings["embed_input"] == "image":
                inputs = model.image_only_inputs(chunk)
                rows.append(self._pooled(inputs, image_tokens=True))
            else:
                prompt = model.settings["embed_prompt"]
                requests = [GenerationRequest(images=(im,), prompt=prompt) for im in chunk]
                rows.append(self._pooled(model.model_inputs(requests), image_tokens=False))
        return np.concatenate(rows).astype(np.float32, copy=False) if rows else out[0]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise BenchError("encode_texts() expects a sequence of strings, not a single string")
        model: Any = self
        rows = []
        for start in range(0, len(texts), model.batch_size):
            chunk = [str(t) for t in texts[start : start + model.batch_size]]
            rows.append(self._pooled(model.text_only_inputs(chunk), image_tokens=False))
        return np.concatenate(rows).astype(np.float32, copy=False) if rows else np.zeros((0, 0), np.float32)

    def _pooled(self, inputs: Mapping[str, Any], image_tokens: bool) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        model: Any = self
        batch = model.to_device(inputs)
        with torch.inference_mode():
            out = model.model(**batch, output_hidden_states=True, return_dict=True)
        hidden_states = out.hidden_states
        layer = model.settings["embed_layer"]
        if not -len(hidden_states) <= layer < len(hidden_states):
            raise BenchError(
                f"model {model.name}: embed_layer={layer} is out of range: the language model returns "
                f"{len(hidden_states)} hidden states (0 = input embeddings, -1 = last layer)"
            )
        states = hidden_states[layer].float()
        ids = batch["input_ids"]
        mask = batch["attention_mask"].bool()
        if image_tokens:
            mask = mask & (ids == model.image_token_id)
        else:
            bos = model.tokenizer.bos_token_id
            if bos is not None:
                keep = mask & (ids != bos)
                mask = torch.where(keep.any(dim=1, keepdim=True), keep, mask)  # a text of BOS alone keeps it
        if not bool(mask.any(dim=1).all()):
            raise BenchError(f"model {model.name}: an input has no tokens to pool (empty text or no image tokens)")
        if model.settings["embed_pool"] == "mean":
            weights = mask.unsqueeze(-1).float()
            pooled = (states * weights).sum(dim=1) / weights.sum(dim=1)
        else:
            positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
            last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values
            pooled = states[torch.arange(states.shape[0], device=states.device), last]
        return F.normalize(pooled, dim=-1).cpu().numpy()


class HFVLMEmbed(EmbedMixin, HFVisionLanguageModel):
    name = "hf-vlm-embed"
    arg_spec: ClassVar[Mapping[str, tuple[type, Any]]] = {**VLM_ARGS, **EMBED_ARGS}


class HFLlavaEmbed(EmbedMixin, HFLlava):
    name = "hf-llava-embed"
    arg_spec: ClassVar[Mapping[str, tuple[type, Any]]] = {**LLAVA_ARGS, **EMBED_ARGS}


def quick_fingerprint_vlm(args: Mapping[str, Any]) -> str | None:
    return quick_identity(HFVLMEmbed, args)


def quick_fingerprint_llava(args: Mapping[str, Any]) -> str | None:
    return quick_identity(HFLlavaEmbed, args)
