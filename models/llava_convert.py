"""LLaVA checkpoints in the original repository's format -> the transformers ``Llava`` model.

The original LLaVA code (haotian-liu/LLaVA; LLaVA-Med and LLaVA-Rad build on it) saves a
``LlavaLlamaForCausalLM`` (or ``LlavaMistralForCausalLM``): a language-model ``config.json`` with
extra ``mm_*`` keys and a state dict in the language model's own naming plus the projector::

    model.embed_tokens.weight, model.layers.N.*, model.norm.weight, lm_head.weight
    model.mm_projector.0.{weight,bias}, model.mm_projector.2.{weight,bias}   (mm_projector_type "mlp2x_gelu")
    model.mm_projector.{weight,bias}                                          (mm_projector_type "linear")
    model.vision_tower.vision_tower.vision_model.*                            (optional: the CLIP tower)

The CLIP vision tower is otherwise read from the directory named by ``mm_vision_tower``. The tower
output fed to the projector is ``hidden_states[mm_vision_select_layer]`` of the CLIP vision model,
without the CLS token when ``mm_vision_select_feature`` is "patch" -- exactly what transformers'
``LlavaModel`` computes with ``vision_feature_layer`` and ``vision_feature_select_strategy="default"``
("full" for "cls_patch").

Mapping onto transformers' ``LlavaForConditionalGeneration`` (names of its in-memory state dict):

* language model -> ``model.language_model.*`` (``lm_head`` stays);
* ``mlp2x_gelu`` -> ``multi_modal_projector.linear_1`` / GELU / ``linear_2``;
* ``linear`` -> ``linear_1`` followed by the identity: ``projector_hidden_act="linear"`` and
  ``linear_2`` = identity matrix with zero bias (exact: x @ I + 0 == x);
* CLIP tower -> ``model.vision_tower.*`` (transformers 5 keeps no ``vision_model.`` level).

The original code marks the image position with the id -200 (never an embedding row); the Llava
model needs a real token. :func:`pad_embedding_rows` grows ``embed_tokens`` / ``lm_head`` with zero
rows when the ``<image>`` token added to the tokenizer lies beyond the stored rows (its embedding is
never read -- image features replace it -- and its output logit is suppressed at generation).

:func:`to_original_state_dict` is the inverse mapping (used to write checkpoints in the original
layout, e.g. for round-trip tests).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.interfaces import BenchError

PROJECTORS = ("linear", "mlp2x_gelu")
SELECT_FEATURES = {"patch": "default", "cls_patch": "full"}
TEXT_MODEL_TYPES = {"llava": "llama", "llava_llama": "llama", "llama": "llama", "llava_mistral": "mistral"}
IMAGE_TOKEN = "<image>"
IM_START, IM_END = "<im_start>", "<im_end>"

# config keys of the original format that are not language-model settings
MM_KEYS = (
    "mm_vision_tower",
    "mm_hidden_size",
    "mm_projector_type",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_use_im_start_end",
    "mm_use_im_patch_token",
    "mm_patch_merge_type",
    "mm_projector_lr",
    "mm_vision_tower_lr",
    "mm_vision_tower_config",
    "mm_vision_tower_checkpoint",
    "image_aspect_ratio",
    "image_grid_pinpoints",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "use_mm_proj",
    "unfreeze_mm_vision_tower",
    "vision_tower",
)

_LM = "model.language_model."
_PROJ = "model.multi_modal_projector."
_TOWER = "model.vision_tower."
_ORIG_TOWER = "model.vision_tower.vision_tower."
_CLIP_TEXT_PREFIXES = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


# --------------------------------------------------------------------------- format detection


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a JSON object")
    return data


def is_original_format(config: Mapping[str, Any]) -> bool:
    """A config.json of the original LLaVA repository (language-model config + ``mm_*`` keys)."""
    return "mm_vision_tower" in config and "text_config" not in config


def projector_type(config: Mapping[str, Any], where: str) -> str:
    kind = str(config.get("mm_projector_type", "linear"))
    if kind not in PROJECTORS:
        raise BenchError(
            f"{where}: mm_projector_type {kind!r} is not supported (supported: {', '.join(PROJECTORS)}); "
            "deeper MLP projectors have no transformers Llava equivalent"
        )
    return kind


def check_supported(config: Mapping[str, Any], where: str) -> None:
    """Refuse original-format features that the transformers Llava model cannot express."""
    tower = str(config.get("mm_vision_tower") or "")
    if tower.startswith("hf-hub:") or config.get("mm_vision_tower_config") or config.get("mm_vision_tower_checkpoint"):
        raise BenchError(
            f"{where}: mm_vision_tower {tower!r} is an open_clip/timm vision tower (e.g. LLaVA-Rad's BiomedCLIP-CXR); "
            "hf-llava supports CLIP vision towers in transformers format only"
        )
    aspect = config.get("image_aspect_ratio")
    if aspect not in (None, "square", "pad", "resize"):
        raise BenchError(
            f"{where}: image_aspect_ratio {aspect!r} (LLaVA-NeXT any-resolution tiling) is not supported by hf-llava; "
            "use a transformers-format LLaVA-NeXT checkpoint with --model hf-vlm"
        )
    merge = config.get("mm_patch_merge_type", "flat")
    if merge not in (None, "flat"):
        raise BenchError(f"{where}: mm_patch_merge_type {merge!r} is not supported by hf-llava (only 'flat')")
    feature = config.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURES:
        raise BenchError(
            f"{where}: mm_vision_select_feature {feature!r} is not supported (expected one of "
            f"{', '.join(SELECT_FEATURES)})"
        )
    model_type = config.get("model_type", "llava")
    if model_type not in TEXT_MODEL_TYPES:
        raise BenchError(
            f"{where}: model_type {model_type!r} is not a LLaVA language model hf-llava can convert "
            f"(supported: {', '.join(sorted(TEXT_MODEL_TYPES))})"
        )
    projector_type(config, where)


def text_config_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's own config (``mm_*`` keys removed, model_type llama / mistral)."""
    out = {k: v for k, v in config.items() if k not in MM_KEYS and not k.startswith("mm_")}
    out["model_type"] = TEXT_MODEL_TYPES[str(config.get("model_type", "llava"))]
    for key in ("architectures", "_name_or_path", "transformers_version", "auto_map"):
        out.pop(key, None)
    return out


def vision_config_dict(tower_config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The CLIP vision config from a tower's config.json (a CLIPVisionModel or a full CLIPModel)."""
    model_type = tower_config.get("model_type")
    if model_type == "clip":
        vision = dict(tower_config.get("vision_config") or {})
    elif model_type == "clip_vision_model":
        vision = dict(tower_config)
    else:
        raise BenchError(
            f"{where}: the vision tower's config.json has model_type {model_type!r}; hf-llava supports CLIP towers "
            "('clip' or 'clip_vision_model')"
        )
    vision["model_type"] = "clip_vision_model"
    for key in ("architectures", "_name_or_path", "transformers_version"):
        vision.pop(key, None)
    return vision


# --------------------------------------------------------------------------- state dicts


def load_weights(directory: Path) -> dict[str, Any]:
    """All tensors of a checkpoint directory: (sharded) safetensors, else (sharded) pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file

    def shards(index_name: str) -> list[Path] | None:
        index = directory / index_name
        if not index.is_file():
            return None
        names = sorted(set(read_json(index).get("weight_map", {}).values()))
        if not names:
            raise BenchError(f"{index}: weight_map is empty")
        return [directory / n for n in names]

    files = shards("model.safetensors.index.json")
    if files is None and (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    if files is None:
        files = shards("pytorch_model.bin.index.json")
    if files is None and (directory / "pytorch_model.bin").is_file():
        files = [directory / "pytorch_model.bin"]
    if files is None and (directory / "adapter_config.json").is_file():
        raise BenchError(
            f"{directory} holds a LoRA adapter (adapter_config.json) that needs its base model: merge it into the "
            "base first (LLaVA's scripts/merge_lora_weights.py) and pass the merged folder"
        )
    if files is None:
        raise BenchError(
            f"{directory}: no weights found (expected model.safetensors, model.safetensors.index.json, "
            "pytorch_model.bin or pytorch_model.bin.index.json)"
        )
    state: dict[str, Any] = {}
    for path in files:
        if not path.is_file():
            raise BenchError(f"{directory}: weight shard {path.name} listed in the index is missing")
        try:
            if path.suffix == ".safetensors":
                state.update(load_file(str(path)))
            else:
                try:
                    state.update(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
                except RuntimeError:  # files in the legacy (pre-zip) serialisation cannot be memory-mapped
                    state.update(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # corrupt files raise a variety of errors
            raise BenchError(f"cannot read weights {path}: {exc}") from None
    return state


def original_key_to_hf(key: str, projector: str) -> str | None:
    """The transformers Llava name of an original-format key; None for keys without a counterpart."""
    if key == "lm_head.weight":
        return key
    if key.startswith(_ORIG_TOWER):
        rest = key[len(_ORIG_TOWER) :]
        rest = rest[len("vision_model.") :] if rest.startswith("vision_model.") else rest
        return _TOWER + rest
    if key.startswith("model.mm_projector."):
        rest = key[len("model.mm_projector.") :]
        if projector == "linear":
            return _PROJ + "linear_1." + rest if rest in ("weight", "bias") else None
        m = re.fullmatch(r"(\d+)\.(weight|bias)", rest)
        if not m or m.group(1) not in ("0", "2"):
            return None
        return _PROJ + ("linear_1." if m.group(1) == "0" else "linear_2.") + m.group(2)
    if key.startswith("model."):
        return _LM + key[len("model.") :]
    return None


def hf_key_to_original(key: str, projector: str) -> str | None:
    """Inverse of :func:`original_key_to_hf` (``linear_2`` of a linear projector has no original key)."""
    if key == "lm_head.weight":
        return key
    if key.startswith(_TOWER):
        return _ORIG_TOWER + "vision_model." + key[len(_TOWER) :]
    if key.startswith(_PROJ):
        layer, _, param = key[len(_PROJ) :].partition(".")
        if projector == "linear":
            return "model.mm_projector." + param if layer == "linear_1" else None
        return f"model.mm_projector.{'0' if layer == 'linear_1' else '2'}.{param}"
    if key.startswith(_LM):
        return "model." + key[len(_LM) :]
    return None


def clip_tower_to_hf(state: Mapping[str, Any]) -> dict[str, Any]:
    """A CLIP tower directory's weights (CLIPVisionModel or full CLIPModel, with or without the
    ``vision_model.`` level) -> ``model.vision_tower.*``; text-side weights are dropped."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(_CLIP_TEXT_PREFIXES):
            continue
        rest = key[len("vision_model.") :] if key.startswith("vision_model.") else key
        out[_TOWER + rest] = value
    return out


def to_hf_state_dict(
    state: Mapping[str, Any], projector: str, tower: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Original-format weights (+ optionally a separate CLIP tower's) -> Llava names.

    Returns the converted dict and the original keys that had no counterpart. Tower weights
    included in the checkpoint take precedence over the separate tower's.
    """
    import torch

    out: dict[str, Any] = dict(clip_tower_to_hf(tower)) if tower is not None else {}
    ignored: list[str] = []
    for key, value in state.items():
        new = original_key_to_hf(key, projector)
        if new is None:
            ignored.append(key)
        else:
            out[new] = value
    if projector == "linear":
        w = out.get(_PROJ + "linear_1.weight")
        if w is not None:
            hidden = w.shape[0]
            out[_PROJ + "linear_2.weight"] = torch.eye(hidden, dtype=w.dtype)
            out[_PROJ + "linear_2.bias"] = torch.zeros(hidden, dtype=w.dtype)
    return out, ignored


def to_original_state_dict(state: Mapping[str, Any], projector: str, include_tower: bool) -> dict[str, Any]:
    """Llava weights -> the original layout (the tower only when ``include_tower``)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key.startswith(_TOWER) and not include_tower:
            continue
        new = hf_key_to_original(key, projector)
        if new is not None:
            out[new] = value
    return out


def pad_embedding_rows(state: dict[str, Any], rows: int) -> int:
    """Grow ``embed_tokens`` and ``lm_head`` to at least ``rows`` rows with zeros; returns the row count."""
    import torch

    have = 0
    for key in (_LM + "embed_tokens.weight", "lm_head.weight"):
        w = state.get(key)
        if w is None:
            continue
        have = w.shape[0]
        if have < rows:
            state[key] = torch.cat([w, torch.zeros(rows - have, w.shape[1], dtype=w.dtype)], dim=0)
    return max(have, rows)


def llava_config_kwargs(config: Mapping[str, Any], image_token_id: int) -> dict[str, Any]:
    """Arguments of ``LlavaConfig`` (besides the sub-configs) for an original-format config."""
    projector = projector_type(config, "config.json")
    return {
        "image_token_index": image_token_id,
        "vision_feature_layer": int(config.get("mm_vision_select_layer", -2)),
        "vision_feature_select_strategy": SELECT_FEATURES[config.get("mm_vision_select_feature", "patch")],
        "projector_hidden_act": "gelu" if projector == "mlp2x_gelu" else "linear",
        "multimodal_projector_bias": True,
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
    }


def original_config(
    text_config: Mapping[str, Any],
    vision_hidden: int,
    *,
    projector: str,
    vision_tower: str,
    select_layer: int = -2,
    select_feature: str = "patch",
    image_aspect_ratio: str = "pad",
    use_im_start_end: bool = False,
    model_type: str = "llava_llama",
) -> dict[str, Any]:
    """A config.json in the original format (for writing checkpoints in that layout)."""
    cfg = {k: v for k, v in text_config.items() if k not in ("model_type", "architectures", "transformers_version")}
    arch = "LlavaMistralForCausalLM" if model_type == "llava_mistral" else "LlavaLlamaForCausalLM"
    cfg.update(
        {
            "architectures": [arch],
            "model_type": model_type,
            "mm_vision_tower": vision_tower,
            "mm_hidden_size": vision_hidden,
            "mm_projector_type": projector,
            "mm_vision_select_layer": select_layer,
            "mm_vision_select_feature": select_feature,
            "mm_use_im_start_end": use_im_start_end,
            "mm_use_im_patch_token": False,
            "mm_patch_merge_type": "flat",
            "image_aspect_ratio": image_aspect_ratio,
            "use_mm_proj": True,
            "tune_mm_mlp_adapter": False,
        }
    )
    return cfg
