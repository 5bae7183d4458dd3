"""``llava-rad``: LLaVA-Rad (Chaves et al.), a small multimodal model for radiology report findings.

Architecture: a CLIP-style image encoder (here the ``clip-baseline`` dual encoder, whose image tower
feeds the language model and whose two towers give this model its ``embed`` capability) -> a
randomly initialised 2-layer MLP projector (``mlp2x_gelu``) mapping every patch token into the word
embedding space -> a Llama-architecture causal language model. The prompt layout is LLaVA's Vicuna
conversation (:mod:`models.components.mllm`).

Training follows the paper's three-stage curriculum (Methods, "Training Strategy"):

1. **image encoder pre-training**: contrastive image-report training of the encoder. Pass
   ``encoder=DIR`` (a trained ``clip-baseline`` checkpoint) to start from one, or let ``fit`` train
   one with the preset's ``encoder_preset`` (``pretrain_encoder=false``: a random encoder, the
   paper's Variant #2 ablation);
2. **alignment**: the encoder and the language model are frozen and only the projector is trained
   to generate the findings section from the image alone (no prompt, no indication);
3. **fine-tuning**: LoRA (peft) on the language model plus the projector, generating the findings
   with the indication as context (the harness's report-generation prompt, so training and
   ``synthcxr_rrg`` evaluation see the same text). ``stage3=false``: the paper's Variant #5.

The paper starts from Vicuna-7B-v1.5; ``lm=DIR`` loads any local transformers causal LM and its
tokenizer. Without it (``tiny``) a small Llama is first pre-trained as a language model on the
training reports (a "stage 0" standing in for Vicuna). The LoRA deltas are merged into the
language model weights when training ends, so a checkpoint is one ``model.safetensors``.
``lora_r=0`` fine-tunes the whole decoder instead; the ``tiny`` preset does so, because its decoder
is the small stage-0 model trained from scratch minutes earlier, not a frozen 7B foundation worth
protecting. Measured on 200 synthcxr validation images (encoder from clip-baseline tiny): LoRA r=16 and
r=64 need more epochs (and r=64 50 % more time per epoch) for the same rule-based F1 (0.48) that
full fine-tuning reaches in 6 epochs at batch 32.

How fast the small decoder learns to read the image depends on the number of updates, not on the
epochs: at batch 32 the reports stay mostly normal (the next-token distribution after "the heart is" is
the same for images with and without cardiomegaly), at batch 8 (the ``tiny`` preset; same epochs and
compute) the generated findings follow the image. ``bench demo`` (synthcxr test split, 2 CPU cores,
about 400 s of training given the encoder): rule-based CheXpert F1 micro-14 0.576 (micro-5 0.599),
BLEU-4 0.164, CIDEr 0.51; at batch 32: 0.405. Standardising the encoder tokens per channel before the
projector (they share a large image-independent component) did not help (0.39 against 0.49 on val).

Presets: ``tiny`` (64 px ViT from clip-baseline's tiny preset, 3-layer 256-wide Llama, a few CPU
minutes) and ``paper`` (the released architecture: ViT-B/14 at 518 px, 2-layer MLP projector,
Vicuna-7B-sized decoder; LLaVA-1.5's recipe for the stage-2/3 optimiser settings, which the paper
does not list: stage 2 lr 1e-3, 1 epoch; stage 3 LoRA r=128, alpha=256, lr 2e-4, 3 epochs; for a
GPU, with ``lm=DIR``).

A released LLaVA-Rad checkpoint converted for transformers loads under the same name with
``--model-args pretrained=DIR`` (through the ``hf-llava`` loader; generation only).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.interfaces import (
    BACKBONE,
    EMBED,
    GENERATE,
    TRAIN,
    BenchError,
    GenerationRequest,
    ModelAdapter,
    Sample,
    as_pil,
    batched,
    stable_hash,
)
from models.components.devices import resolve_device
from models.components.identity import bytes_fingerprint, files_fingerprint
from models.components.image_preprocess import ImagePreprocessor
from models.components.mllm import (
    CausalLMConfig,
    LMTokenizer,
    assemble,
    build_causal_lm,
    capitalize_sentences,
    conversation_prefix,
    frozen,
    lm_generate,
    lm_hidden_size,
    load_causal_lm,
    shifted_lm_loss,
    target_lm_loss,
)
from models.components.projector import build_projector
from models.components.tokenizer import TextTokenizer
from models.components.trainer import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TrainConfig,
    length_grouped_batches,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    state_dict_bytes,
    train,
)
from models.components.vit import PooledImageEncoder
from models.reference import clip_baseline as cb

MODEL_NAME = "llava-rad"
FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"  # the language model's (our own tokenizer)
LM_TOKENIZER_DIR = "lm_tokenizer"  # the language model's (a transformers tokenizer, with lm=DIR)
ENCODER_TOKENIZER_FILE = "encoder_tokenizer.json"  # the CLIP text tower's

GENERATION_MODES = ("projector", "lora", "full")
GRID = 4
VISUAL_TOKENS = ("patches", "pooled+patches", "pooled+grid", "pooled")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "encoder_preset": "tiny",
        "vision_override": {},
        "lm": CausalLMConfig(
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
        ).to_dict(),
        "tokenizer": {"kind": "bpe", "vocab_size": 2000},
        "projector": "mlp2x_gelu",
        # the pooled feature (what the encoder's zero-shot embedding is made from) as one more visual token
        "visual_tokens": "pooled+patches",
        "max_target_tokens": 96,
        "max_new_tokens": 128,
        "train": {
            "stage1_epochs": 6,
            "lm_epochs": 4,
            "lm_lr": 2e-3,
            "lm_visual_prefix": False,
            "align_epochs": 3,
            "align_lr": 2e-3,
            # the decoder learns to read the image late: what matters is the number of updates. Rule F1 on 200
            # synthcxr val images (encoder from clip-baseline tiny), stage 0 / 2 / 3 epochs at batch 32: 5/3/6 0.49;
            # at batch 8: 5/3/6 0.60, 5/3/5 0.50, 3/2/6 0.48, 3/2/4 0.44 (batch 4: 0.38; batch 16, 5/3/6: 0.47).
            # A 3-layer decoder, stage 0 at batch 32 for 4 epochs, length-grouped batches (this preset): 0.59, in
            # 0.75 of the time (5 stage-0 epochs: 0.58-0.59; 5 stage-3 epochs at lr 1.5e-3: 0.54). Fewer visual
            # tokens cost F1: the pooled token + a 4 x 4 grid of patch means 0.43, the pooled token alone 0.35
            "finetune_epochs": 6,
            "finetune_lr": 1e-3,
            "batch_size": 8,
            "lm_batch_size": 32,  # stage 0 (language-model pre-training, no image): a quarter of the steps
            "weight_decay": 0.0,
            "warmup_ratio": 0.03,
            "lora_r": 0,  # full fine-tuning of the small from-scratch decoder (module docstring)
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "grad_accum": 1,
        },
    },
    "paper": {
        "encoder_preset": "paper",
        # BiomedCLIP-CXR: ViT-B/14 (DINOv2 initialisation) at 518 px
        "vision_override": {"image_size": 518, "patch_size": 14, "width": 768, "depth": 12, "heads": 12},
        "lm": CausalLMConfig(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
        ).to_dict(),  # Vicuna-7B-v1.5
        "tokenizer": {"kind": "bpe", "vocab_size": 32000},
        "projector": "mlp2x_gelu",
        "visual_tokens": "patches",
        "max_target_tokens": 512,
        "max_new_tokens": 512,
        "train": {
            "stage1_epochs": 30,
            "lm_epochs": 0,  # the paper's LM is Vicuna-7B-v1.5: give lm=DIR
            "lm_lr": 0.0,
            "lm_visual_prefix": False,
            "align_epochs": 1,
            "align_lr": 1e-3,
            "finetune_epochs": 3,
            "finetune_lr": 2e-4,
            "batch_size": 128,
            "lm_batch_size": 128,
            "weight_decay": 0.0,
            "warmup_ratio": 0.03,
            "lora_r": 128,
            "lora_alpha": 256,
            "lora_dropout": 0.05,
            "grad_accum": 1,
        },
    },
}

_INIT_ARGS = ("checkpoint", "pretrained", "preset", "device", "seed", "batch_size", "max_new_tokens", "prompt")
PROMPT_STYLES = ("native", "task")
_FIT_KEYS = (
    "preset",
    "seed",
    "device",
    "val_data",
    "log",
    "encoder",
    "lm",
    "pretrain_encoder",
    "stage3",
    "visual_tokens",
    *PRESETS["tiny"]["train"].keys(),
)
# Text the tokenizer of an untrained model is built from, so that it encodes prompts without data.
_BUILTIN_TEXT = cb.BUILTIN_VOCAB_TEXT


def _check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise BenchError(f"unknown preset {preset!r} for {MODEL_NAME}: expected one of {', '.join(PRESETS)}")
    return preset


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


_INT_OPTIONS = (
    "stage1_epochs", "lm_epochs", "align_epochs", "finetune_epochs", "batch_size", "lm_batch_size", "grad_accum",
    "lora_r",
)  # fmt: skip
_FLOAT_OPTIONS = ("lm_lr", "align_lr", "finetune_lr", "weight_decay", "warmup_ratio", "lora_dropout", "lora_alpha")
_POSITIVE = ("batch_size", "lm_batch_size", "grad_accum")


def _train_options(preset_train: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's training options overridden by ``config``, type-checked (one clear message per bad value)."""
    hp = {**preset_train, **{k: v for k, v in config.items() if k in preset_train}}
    for keys, kind in ((_INT_OPTIONS, int), (_FLOAT_OPTIONS, float)):
        for k in keys:
            value = hp[k]
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or (kind is int and int(value) != value) or value < 0:
                raise BenchError(f"{MODEL_NAME}.fit: {k} must be a non-negative {kind.__name__}, got {value!r}")
            hp[k] = kind(value)
    for k in _POSITIVE:
        if hp[k] <= 0:
            raise BenchError(f"{MODEL_NAME}.fit: {k} must be positive, got {hp[k]}")
    if not isinstance(hp["lm_visual_prefix"], bool):
        raise BenchError(f"{MODEL_NAME}.fit: lm_visual_prefix must be true or false, got {hp['lm_visual_prefix']!r}")
    return hp


def findings_of(sample: Sample) -> str:
    """The generation target: the findings section, else the whole report."""
    return (sample.sections.get("findings") or "").strip() or (sample.report or "").strip()


# The instruction LLaVA-Rad is fine-tuned with (stage 3), in our own words; the indication follows it.
FINDINGS_PROMPT = "Write the findings section of the report for this chest X-ray."
INDICATION_LINE = "Reason for the exam: {indication}"


def native_prompt(indication: str | None) -> str:
    """The stage-3 prompt: the instruction, then the indication when there is one."""
    indication = " ".join((indication or "").split())
    return f"{FINDINGS_PROMPT}\n{INDICATION_LINE.format(indication=indication)}" if indication else FINDINGS_PROMPT


def rrg_prompt(sample: Sample) -> str:
    """The stage-3 training prompt of a sample (its indication section as context)."""
    return native_prompt(sample.sections.get("indication"))


def request_prompt(request: GenerationRequest, style: str) -> str:
    """The prompt a request is decoded with: with ``style="native"`` a report-generation request
    (``context`` protocol ``report_generation``) gets the prompt the model was fine-tuned with,
    rebuilt from the request's indication; anything else uses the task's prompt text."""
    if style == "native" and request.context_value("protocol") == "report_generation":
        return native_prompt(request.context_value("indication"))
    return request.prompt


# --------------------------------------------------------------------------- the network


class LlavaRadModel(nn.Module):
    """``encoder`` (a clip-baseline ClipModel) + ``projector`` + ``lm`` (a causal LM)."""

    def __init__(self, config: Mapping[str, Any], lm: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = cb.ClipModel(config["encoder"])
        self.lm = lm if lm is not None else self._lm_from_config(config)
        width = self.encoder.visual.width
        self.projector = build_projector(config["projector"], width, lm_hidden_size(self.lm))
        self.visual_tokens = config.get("visual_tokens", "patches")
        if self.visual_tokens not in VISUAL_TOKENS:
            raise BenchError(f"visual_tokens must be one of {', '.join(VISUAL_TOKENS)}, got {self.visual_tokens!r}")

    @staticmethod
    def _lm_from_config(config: Mapping[str, Any]) -> nn.Module:
        if config.get("lm_source") == "transformers":
            from transformers import AutoConfig, AutoModelForCausalLM

            lm_cfg = dict(config["lm"])
            return AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_cfg.pop("model_type"), **lm_cfg))
        return build_causal_lm(config["lm"], config.get("lm_ids"))

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """The visual tokens fed to the projector ``[B, P, width]``: the encoder's patch tokens (LLaVA),
        preceded by its pooled feature when ``visual_tokens`` is ``"pooled+patches"`` (tiny preset)."""
        pooled, patches = self.encoder.visual(images)
        if self.visual_tokens == "pooled+patches":
            return torch.cat([pooled[:, None], patches], dim=1)
        if self.visual_tokens == "pooled":
            return pooled[:, None]
        if self.visual_tokens == "pooled+grid":  # the patch grid average-pooled to GRID x GRID tokens
            b, n, w = patches.shape
            side = math.isqrt(n)
            grid = patches.transpose(1, 2).reshape(b, w, side, side)
            grid = F.adaptive_avg_pool2d(grid, min(GRID, side)).flatten(2).transpose(1, 2)
            return torch.cat([pooled[:, None], grid], dim=1)
        return patches

    def embed_ids(self, ids: Sequence[int], device: torch.device) -> torch.Tensor:
        return self.lm.get_input_embeddings()(torch.tensor(list(ids), dtype=torch.long, device=device))


def build_sequences(
    model: LlavaRadModel,
    tok: LMTokenizer,
    image_tokens: torch.Tensor | None,
    prompts: Sequence[str | None],
    targets: Sequence[list[int]] | None,
    pad_left: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``<s> USER: <image>\\n{prompt} ASSISTANT: {target}</s>`` for each row (no prompt: image only)."""
    device = next(model.projector.parameters()).device
    chunks, labels = [], []
    for b, prompt in enumerate(prompts):
        before, after = conversation_prefix(tok, prompt)
        row = [model.embed_ids(before, device)]
        lab: list[torch.Tensor | None] = [None]
        if image_tokens is not None:
            row.append(image_tokens[b])
            lab.append(None)
        row.append(model.embed_ids(after, device))
        lab.append(None)
        if targets is not None:
            target = [*targets[b], tok.eos_id]
            row.append(model.embed_ids(target, device))
            lab.append(torch.tensor(target, dtype=torch.long))
        chunks.append(row)
        labels.append(lab)
    return assemble(chunks, labels if targets is not None else None, pad_left=pad_left)


def generate_with(
    model: LlavaRadModel,
    tok: LMTokenizer,
    preprocess: Callable[[Sequence[Any]], torch.Tensor],
    requests: Sequence[GenerationRequest],
    *,
    prompt_of: Callable[[GenerationRequest], str],
    batch_size: int,
    max_new_limit: int,
) -> list[str]:
    """Decode ``requests`` with a LLaVA-layout model (``llava-rad``, and ``llava-radz``'s foundation).

    Requests with and without an image are decoded in separate groups (different layouts); within a
    group, rows that share decoding options (temperature, top-p, token budget) are decoded together.
    The token budget is the request's, capped by ``max_new_limit`` and by the room left in the
    decoder's context.
    """
    device = next(model.projector.parameters()).device
    max_positions = int(getattr(model.lm.config, "max_position_embeddings", 4096))
    model.eval()

    def group_texts(group: list[GenerationRequest], has_image: bool) -> list[str]:
        with torch.inference_mode():
            image_tokens = None
            if has_image:
                x = preprocess([r.images[0] for r in group]).to(device)
                image_tokens = model.projector(model.patch_features(x))
            prompts = [prompt_of(r) for r in group]
            embeds, mask, _ = build_sequences(model, tok, image_tokens, prompts, None, pad_left=True)
        room = max_positions - embeds.shape[1]
        results = [""] * len(group)
        options: dict[tuple[float, float, int], list[int]] = {}
        for i, r in enumerate(group):
            budget = max(0, min(int(r.max_new_tokens), max_new_limit, room))
            options.setdefault((r.temperature, r.top_p, budget), []).append(i)
        for (temperature, top_p, budget), rows in options.items():
            seed = int(stable_hash([group[i].request_hash() for i in rows])[:8], 16)
            ids = lm_generate(
                model.lm,
                embeds[rows],
                mask[rows],
                eos_id=tok.eos_id,
                pad_id=tok.pad_id,
                max_new_tokens=budget,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
            )
            for i, row in zip(rows, ids, strict=True):
                text = tok.decode(row)
                results[i] = capitalize_sentences(text) if tok.own else text
        return results

    out: list[str] = []
    for chunk in batched(requests, batch_size):
        texts: dict[int, str] = {}
        for has_image in (True, False):
            idx = [i for i, r in enumerate(chunk) if bool(r.images) == has_image]
            if idx:
                texts.update(zip(idx, group_texts([chunk[i] for i in idx], has_image), strict=True))
        out.extend(texts[i] for i in range(len(chunk)))
    return out


# --------------------------------------------------------------------------- identity


def _tokenizer_files(directory: Path, config: Mapping[str, Any]) -> list[str]:
    if config.get("lm_source") == "transformers":
        return sorted(f"{LM_TOKENIZER_DIR}/{p.name}" for p in (directory / LM_TOKENIZER_DIR).iterdir() if p.is_file())
    return [TOKENIZER_FILE]


def checkpoint_fingerprint(directory: str | Path) -> str:
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"{MODEL_NAME}: cannot read {directory / CONFIG_FILE}: {exc}") from None
    names = [WEIGHTS_FILE, CONFIG_FILE, ENCODER_TOKENIZER_FILE, *_tokenizer_files(directory, config)]
    return files_fingerprint(directory, names)


def quick_fingerprint(args: Mapping[str, Any]) -> str | None:
    """``LlavaRad(**args).fingerprint()`` without building the model, when a checkpoint names it."""
    if args.get("pretrained"):
        from models.hf_llava import quick_fingerprint as hf_quick

        return hf_quick({k: v for k, v in args.items() if k not in ("preset", "seed")})
    checkpoint = args.get("checkpoint")
    if not checkpoint or not Path(str(checkpoint)).is_dir():
        return None
    return with_decoding_settings(checkpoint_fingerprint(str(checkpoint)), args)


def with_decoding_settings(weights_fp: str, args: Mapping[str, Any]) -> str:
    """The model's identity: its weights, plus the arguments that change what it generates when they
    differ from the defaults (so cached generations of one setting are never served to another)."""
    settings = {
        "prompt": args.get("prompt") or "native",
        "max_new_tokens": int(args["max_new_tokens"]) if args.get("max_new_tokens") else None,
    }
    if settings == {"prompt": "native", "max_new_tokens": None}:
        return weights_fp
    return stable_hash({"weights": weights_fp, **settings})


# --------------------------------------------------------------------------- the adapter


class LlavaRad(ModelAdapter):
    name = MODEL_NAME
    capabilities = frozenset({GENERATE, EMBED, BACKBONE, TRAIN})

    def __init__(
        self,
        checkpoint: str | None = None,
        pretrained: str | None = None,
        preset: str = "tiny",
        device: str = "auto",
        seed: int = 0,
        batch_size: int = 32,
        max_new_tokens: int | None = None,
        prompt: str = "native",
        **kwargs: Any,
    ) -> None:
        self._released = None
        if pretrained is not None:  # a released checkpoint: the hf-llava loader, same name
            if checkpoint is not None:
                raise BenchError(f"{MODEL_NAME}: give checkpoint=DIR (ours) or pretrained=DIR (released), not both")
            from models.hf_llava import HFLlava

            self._released = HFLlava(pretrained=pretrained, device=device, batch_size=batch_size, **kwargs)
            super().__init__(pretrained=pretrained, **self._released.args)
            return
        if kwargs:
            raise BenchError(
                f"{MODEL_NAME}: unknown argument(s) {', '.join(sorted(kwargs))}; accepted: {', '.join(_INIT_ARGS)} "
                "(with pretrained=DIR also the hf-llava arguments)"
            )
        super().__init__(
            checkpoint=checkpoint,
            preset=preset,
            device=device,
            seed=seed,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            prompt=prompt,
        )
        _check_preset(preset)
        if int(batch_size) <= 0:
            raise BenchError(f"{MODEL_NAME}: batch_size must be positive, got {batch_size}")
        if prompt not in PROMPT_STYLES:
            raise BenchError(f"{MODEL_NAME}: prompt must be one of {', '.join(PROMPT_STYLES)}, got {prompt!r}")
        self.prompt_style = prompt
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.max_new_tokens_override = int(max_new_tokens) if max_new_tokens else None
        self.checkpoint: str | None = None
        self.training_summary: dict[str, Any] | None = None
        if checkpoint is not None:
            self.load(checkpoint)
        else:
            self._init_random(preset, self.seed)

    # ------------------------------------------------------------------ construction

    def _install(
        self,
        config: dict[str, Any],
        model: LlavaRadModel,
        tokenizer: Any,
        encoder_tokenizer: TextTokenizer,
    ) -> None:
        self.config = config
        self.preset = config["preset"]
        self.tok = LMTokenizer(tokenizer)
        self.encoder_tokenizer = encoder_tokenizer
        self.preprocessor = ImagePreprocessor.from_dict(config["encoder"]["preprocess"])
        self.model = model.to(self.device).eval()

    @staticmethod
    def _config(
        preset: str,
        encoder_config: Mapping[str, Any],
        lm_config: Mapping[str, Any],
        lm_source: str,
        ids: Any,
        visual_tokens: str | None = None,
    ) -> dict[str, Any]:
        p = PRESETS[preset]
        return _jsonable(
            {
                "model": MODEL_NAME,
                "format_version": FORMAT_VERSION,
                "preset": preset,
                "encoder": encoder_config,
                "lm": lm_config,
                "lm_source": lm_source,
                "lm_ids": ids,
                "projector": p["projector"],
                "visual_tokens": visual_tokens or p["visual_tokens"],
                "max_target_tokens": p["max_target_tokens"],
                "max_new_tokens": p["max_new_tokens"],
            }
        )

    @staticmethod
    def _encoder_config(preset: str, vocab_size: int) -> dict[str, Any]:
        p = PRESETS[preset]
        config = cb.build_config(p["encoder_preset"], vocab_size)
        if p["vision_override"]:
            config["vision"] = {**config["vision"], **p["vision_override"]}
            config["preprocess"] = {**config["preprocess"], "size": config["vision"]["image_size"]}
        return config

    def _init_random(self, preset: str, seed: int) -> None:
        p = PRESETS[preset]
        texts = [*cb.split_sentences(_BUILTIN_TEXT), FINDINGS_PROMPT, INDICATION_LINE]
        enc_tok = TextTokenizer.train(cb.split_sentences(_BUILTIN_TEXT), vocab_size=2000, kind="wordpiece")
        lm_tok = TextTokenizer.train(texts, vocab_size=p["tokenizer"]["vocab_size"], kind=p["tokenizer"]["kind"])
        ids = {"pad": lm_tok.pad_id, "bos": lm_tok.cls_id, "eos": lm_tok.sep_id}
        config = self._config(
            preset,
            self._encoder_config(preset, enc_tok.vocab_size),
            {**p["lm"], "vocab_size": lm_tok.vocab_size},
            "own",
            ids,
        )
        seed_everything(seed)
        self._install(config, LlavaRadModel(config), lm_tok, enc_tok)
        self._random_init = True

    def load(self, directory: str | Path) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise BenchError(f"{MODEL_NAME}: checkpoint directory not found: {directory}")
        config, state = load_checkpoint(directory)
        if config.get("model") != MODEL_NAME:
            raise BenchError(f"checkpoint {directory} holds model {config.get('model')!r}, not {MODEL_NAME!r}")
        if not (directory / ENCODER_TOKENIZER_FILE).is_file():
            raise BenchError(f"{MODEL_NAME}: checkpoint {directory} is missing {ENCODER_TOKENIZER_FILE}")
        enc_tok = TextTokenizer.load(directory / ENCODER_TOKENIZER_FILE)
        if config.get("lm_source") == "transformers":
            from transformers import AutoTokenizer

            if not (directory / LM_TOKENIZER_DIR).is_dir():
                raise BenchError(f"{MODEL_NAME}: checkpoint {directory} is missing {LM_TOKENIZER_DIR}/")
            try:
                lm_tok: Any = AutoTokenizer.from_pretrained(str(directory / LM_TOKENIZER_DIR), local_files_only=True)
            except (OSError, ValueError, TypeError) as exc:
                raise BenchError(f"checkpoint {directory}: cannot load {LM_TOKENIZER_DIR}/: {exc}") from None
        else:
            if not (directory / TOKENIZER_FILE).is_file():
                raise BenchError(f"{MODEL_NAME}: checkpoint {directory} is missing {TOKENIZER_FILE}")
            lm_tok = TextTokenizer.load(directory / TOKENIZER_FILE)
        try:
            model = LlavaRadModel(config)
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"checkpoint {directory}: config.json is incomplete: {exc}") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BenchError(f"checkpoint {directory}: weights do not match config.json: {exc}") from None
        self._install(config, model, lm_tok, enc_tok)
        self._random_init = False
        self.checkpoint = str(directory)

    def _extra_files(self) -> dict[str, str | bytes]:
        files: dict[str, str | bytes] = {ENCODER_TOKENIZER_FILE: self.encoder_tokenizer.to_str()}
        if self.tok.own:
            files[TOKENIZER_FILE] = self.tok.tokenizer.to_str()
        return files

    def save(self, directory: str | Path) -> None:
        self._require_own("save")
        directory = Path(directory)
        save_checkpoint(directory, self.model, self.config, self._extra_files())
        if not self.tok.own:
            self.tok.tokenizer.save_pretrained(str(directory / LM_TOKENIZER_DIR))
            # a transformers tokenizer is named by its saved files: from now on this model is that checkpoint
            self.checkpoint = str(directory)

    def _require_own(self, what: str) -> None:
        if self._released is not None:
            raise BenchError(
                f"{MODEL_NAME}: {what} is not available for a released checkpoint loaded with pretrained= "
                "(the hf-llava loader supports generation only)"
            )

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        if self._released is not None:
            return self._released.fingerprint()
        return with_decoding_settings(self.weights_fingerprint(), self.args)

    def weights_fingerprint(self) -> str:
        if self._random_init:
            return stable_hash({"random-init": self.config, "seed": self.seed})
        if self.checkpoint is not None:
            return checkpoint_fingerprint(self.checkpoint)
        if not self.tok.own:  # the transformers tokenizer's files exist only once saved
            return stable_hash(
                {"unsaved": self.config, "weights": bytes_fingerprint([("w", state_dict_bytes(self.model))])}
            )
        parts = [
            (WEIGHTS_FILE, state_dict_bytes(self.model)),
            (CONFIG_FILE, json.dumps(dict(self.config), indent=2, sort_keys=True).encode()),
            (ENCODER_TOKENIZER_FILE, self.encoder_tokenizer.to_str().encode("utf-8")),
            (TOKENIZER_FILE, self.tok.tokenizer.to_str().encode("utf-8")),
        ]
        return bytes_fingerprint(parts)

    def num_parameters(self) -> int:
        if self._released is not None:
            return int(self._released.num_parameters() or 0)
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        if self._released is not None:
            return {**self._released.describe(), "kind": "generative", "loaded_as": "hf-llava"}
        return {
            "kind": "generative",
            "preset": self.preset,
            "checkpoint": self.checkpoint,
            "trained": not self._random_init,
            "image_size": self.config["encoder"]["vision"]["image_size"],
            "language_model": {k: self.config["lm"].get(k) for k in ("hidden_size", "num_hidden_layers")},
            "parameters": self.num_parameters(),
            "training": self.config.get("train"),
        }

    # ------------------------------------------------------------------ generate

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        return self.preprocessor([as_pil(im) for im in images])

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        if self._released is not None:
            return self._released.generate(requests)
        limit = self.max_new_tokens_override or int(self.config["max_new_tokens"])
        return generate_with(
            self.model,
            self.tok,
            self.preprocess,
            requests,
            prompt_of=lambda r: request_prompt(r, self.prompt_style),
            batch_size=self.batch_size,
            max_new_limit=limit,
        )

    # ------------------------------------------------------------------ embed / backbone (the encoder)

    @property
    def embed_dim(self) -> int:
        return int(self.config["encoder"]["embed_dim"])

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        self._require_own("embed")
        out = [np.zeros((0, self.embed_dim), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(images, self.batch_size):
                x = self.preprocess(chunk).to(self.device)
                out.append(self.model.encoder.encode_image(x).float().cpu().numpy())
        return np.concatenate(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self._require_own("embed")
        if isinstance(texts, str):
            raise BenchError("encode_texts() expects a sequence of strings, not a single string")
        out = [np.zeros((0, self.embed_dim), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(texts, self.batch_size):
                ids, mask, owner = cb.tokenize_texts(self.encoder_tokenizer, chunk, self.config["encoder"])
                owner = owner.to(self.device) if owner is not None else None
                emb = self.model.encoder.encode_text(ids.to(self.device), mask.to(self.device), owner, len(chunk))
                out.append(emb.float().cpu().numpy())
        return np.concatenate(out)

    def image_backbone(self) -> tuple[nn.Module, int]:
        self._require_own("backbone")
        module = PooledImageEncoder(copy.deepcopy(self.model.encoder.visual)).to(self.device).eval()
        return module, module.feature_dim

    # ------------------------------------------------------------------ train

    def fit(self, train_data: Sequence[Sample], config: Mapping[str, Any]) -> None:
        """The three-stage curriculum (module docstring). Config keys: ``_FIT_KEYS``."""
        self._require_own("training")
        config = dict(config or {})
        unknown = sorted(set(config) - set(_FIT_KEYS))
        if unknown:
            raise BenchError(
                f"{MODEL_NAME}.fit: unknown config key(s) {', '.join(unknown)}; accepted: {', '.join(_FIT_KEYS)}"
            )
        preset = _check_preset(config.get("preset") or self.preset)
        p = PRESETS[preset]
        hp = _train_options(p["train"], config)
        visual_tokens = str(config.get("visual_tokens") or p["visual_tokens"])
        if visual_tokens not in VISUAL_TOKENS:
            raise BenchError(
                f"{MODEL_NAME}.fit: visual_tokens must be one of {', '.join(VISUAL_TOKENS)}, got {visual_tokens!r}"
            )
        seed = int(config.get("seed", self.seed))
        device = resolve_device(config["device"]) if config.get("device") else self.device
        log: Callable[[str], None] = config.get("log") or (lambda _m: None)
        samples = [s for s in train_data if s.images and findings_of(s)]
        if len(samples) < 2:
            raise BenchError(
                f"{MODEL_NAME}.fit needs at least 2 samples with an image and a report, got {len(train_data)}"
            )
        val = [s for s in (config.get("val_data") or []) if s.images and findings_of(s)]
        t0 = time.perf_counter()
        summary: dict[str, Any] = {"samples": len(samples), "skipped": len(train_data) - len(samples)}

        # ---- stage 1: the image encoder
        encoder_dir = config.get("encoder")
        if encoder_dir:
            enc = cb.ClipBaseline(checkpoint=str(encoder_dir), device=str(device))
            summary["stage1"] = {"encoder": str(encoder_dir), "encoder_fingerprint": enc.fingerprint()}
        elif config.get("pretrain_encoder", True):
            enc = cb.ClipBaseline(preset=p["encoder_preset"], device=str(device), seed=seed)
            log(f"{MODEL_NAME} stage 1: contrastive pre-training of the image encoder ({hp['stage1_epochs']} epochs)")
            enc.fit(train_data, {"epochs": int(hp["stage1_epochs"]), "seed": seed, "device": str(device)})
            summary["stage1"] = {"trained_epochs": int(hp["stage1_epochs"])}
        else:
            enc = cb.ClipBaseline(preset=p["encoder_preset"], device=str(device), seed=seed)
            summary["stage1"] = {"encoder": "random (no pre-training: Variant #2)"}
        encoder_config = dict(enc.config)
        if p["vision_override"] and encoder_config["vision"]["image_size"] != p["vision_override"]["image_size"]:
            log(
                f"{MODEL_NAME}: the encoder's image size {encoder_config['vision']['image_size']} differs from the "
                f"preset's {p['vision_override']['image_size']}; the encoder's is used"
            )

        # ---- the language model (stage 0 without lm=DIR)
        lm_dir = config.get("lm")
        if lm_dir:
            from transformers import AutoTokenizer

            lm = load_causal_lm(lm_dir)
            try:
                lm_tok_raw: Any = AutoTokenizer.from_pretrained(str(lm_dir), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise BenchError(f"cannot load the tokenizer of the language model in {lm_dir}: {exc}") from None
            tok = LMTokenizer(lm_tok_raw)
            lm_config = {**lm.config.to_dict(), "model_type": lm.config.model_type}
            lm_source = "transformers"
            ids = {"pad": tok.pad_id, "bos": tok.bos_id, "eos": tok.eos_id}
        else:
            if int(hp["lm_epochs"]) <= 0:
                raise BenchError(
                    f"{MODEL_NAME} preset {preset!r} starts from a pre-trained language model: give lm=DIR "
                    "(a local transformers causal LM folder, e.g. Vicuna-7B-v1.5)"
                )
            texts = [t for s in samples for t in (findings_of(s), s.report) if t]
            prompt_texts = [rrg_prompt(s) for s in samples[:50]]
            lm_tok_raw = TextTokenizer.train(
                texts + prompt_texts, vocab_size=p["tokenizer"]["vocab_size"], kind=p["tokenizer"]["kind"]
            )
            tok = LMTokenizer(lm_tok_raw)
            ids = {"pad": tok.pad_id, "bos": tok.bos_id, "eos": tok.eos_id}
            seed_everything(seed)
            lm = build_causal_lm({**p["lm"], "vocab_size": tok.vocab_size}, ids)
            lm_config = {**p["lm"], "vocab_size": tok.vocab_size}
            lm_source = "own"
        model_config = self._config(preset, encoder_config, lm_config, lm_source, ids, visual_tokens)
        seed_everything(seed)
        model = LlavaRadModel(model_config, lm=lm)
        model.encoder.load_state_dict(enc.model.state_dict())
        model.to(device)
        frozen(model.encoder)
        max_target = int(model_config["max_target_tokens"])
        targets = [tok.encode(findings_of(s))[:max_target] for s in samples]
        common = {"device": device, "log": log, "seed": seed, "hp": hp}

        # ---- image features (the encoder is frozen in every later stage)
        pre = ImagePreprocessor.from_dict(encoder_config["preprocess"])
        features = self._features(model, pre, samples, device)
        val_features = self._features(model, pre, val, device) if val else None
        val_targets = [tok.encode(findings_of(s))[:max_target] for s in val]

        if lm_source == "own":
            max_len = int(p["lm"]["max_position_embeddings"]) - 2
            lm_texts = [tok.encode(s.report)[:max_len] for s in samples]
            if hp["lm_visual_prefix"]:
                # Stand-in for Vicuna's ability to read whatever precedes the text: the small decoder is
                # pre-trained on whole reports behind a visual prefix (a stage-0 projector, discarded).
                log(
                    f"{MODEL_NAME} stage 0: decoder pre-training on {len(samples)} reports behind a visual "
                    f"prefix ({hp['lm_epochs']} epochs)"
                )
                val_texts = [tok.encode(s.report)[:max_target] for s in val]
                summary["stage0"] = self._train_generation(
                    model,
                    tok,
                    features,
                    [None] * len(samples),
                    [t[:max_target] for t in lm_texts],
                    val_features,
                    [None] * len(val),
                    val_texts,
                    epochs=int(hp["lm_epochs"]),
                    lr=float(hp["lm_lr"]),
                    mode="full",
                    **common,
                )
                seed_everything(seed + 1)
                model.projector = build_projector(
                    model_config["projector"], model.encoder.visual.width, lm_hidden_size(model.lm)
                ).to(device)
            else:
                log(
                    f"{MODEL_NAME} stage 0: language-model pre-training on {len(samples)} reports "
                    f"({hp['lm_epochs']} epochs)"
                )
                summary["stage0"] = self._train_lm(
                    model, tok, lm_texts, epochs=int(hp["lm_epochs"]), lr=float(hp["lm_lr"]), **common
                )

        # ---- stage 2: alignment, projector only, image as the sole input
        frozen(model.lm)
        log(f"{MODEL_NAME} stage 2: projector alignment, image only ({hp['align_epochs']} epochs)")
        summary["stage2"] = self._train_generation(
            model,
            tok,
            features,
            [None] * len(samples),
            targets,
            val_features,
            [None] * len(val),
            val_targets,
            epochs=int(hp["align_epochs"]),
            lr=float(hp["align_lr"]),
            mode="projector",
            **common,
        )

        # ---- stage 3: LoRA on the language model + projector, with the indication
        if config.get("stage3", True) and int(hp["finetune_epochs"]) > 0:
            how = f"LoRA r={int(hp['lora_r'])}" if int(hp["lora_r"]) > 0 else "full"
            log(f"{MODEL_NAME} stage 3: {how} fine-tuning with the indication ({hp['finetune_epochs']} epochs)")
            summary["stage3"] = self._train_generation(
                model,
                tok,
                features,
                [rrg_prompt(s) for s in samples],
                targets,
                val_features,
                [rrg_prompt(s) for s in val],
                val_targets,
                epochs=int(hp["finetune_epochs"]),
                lr=float(hp["finetune_lr"]),
                mode="lora" if int(hp["lora_r"]) > 0 else "full",
                **common,
            )
        else:
            summary["stage3"] = "skipped (Variant #5)"
        for prm in model.parameters():
            prm.requires_grad_(True)
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        model_config = _jsonable({**model_config, "train": {**hp, "seed": seed, **summary}})
        self.device = device
        self._install(model_config, model.eval(), lm_tok_raw, enc.tokenizer)
        self._random_init = False
        self.checkpoint = None
        self.training_summary = summary
        log(f"{MODEL_NAME}: trained in {summary['seconds']}s")

    # ------------------------------------------------------------------ training stages

    @staticmethod
    def _features(
        model: LlavaRadModel, pre: ImagePreprocessor, samples: Sequence[Sample], device: torch.device
    ) -> torch.Tensor:
        """Frozen-encoder patch tokens for every sample ``[N, P, width]`` (CPU, float32)."""
        out = []
        model.encoder.eval()
        with torch.inference_mode():
            for chunk in batched([s.image for s in samples], 64):
                out.append(model.patch_features(pre(chunk).to(device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    @staticmethod
    def _train_config(hp: Mapping[str, Any], epochs: int, lr: float, seed: int, steps: int, log: bool) -> TrainConfig:
        return TrainConfig(
            epochs=epochs,
            lr=lr,
            weight_decay=float(hp["weight_decay"]),
            warmup_ratio=float(hp["warmup_ratio"]),
            grad_accum=int(hp["grad_accum"]),
            max_grad_norm=1.0,
            seed=seed,
            val_mode="min",
            log_every=max(1, steps // 2) if log else 0,
        )

    def _train_lm(
        self,
        model: LlavaRadModel,
        tok: LMTokenizer,
        texts: list[list[int]],
        *,
        epochs: int,
        lr: float,
        device: torch.device,
        log: Callable[[str], None],
        seed: int,
        hp: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Stage 0: next-token prediction on report text (``<s> report </s>``)."""
        batch_size = min(int(hp["lm_batch_size"]), len(texts))
        steps = max(1, len(texts) // batch_size)

        def batches(epoch: int):
            gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
            order = torch.randperm(len(texts), generator=gen).tolist()
            for b in range(steps):
                rows = [[tok.bos_id, *texts[i], tok.eos_id] for i in order[b * batch_size : (b + 1) * batch_size]]
                length = max(len(r) for r in rows)
                ids = torch.full((len(rows), length), tok.pad_id, dtype=torch.long)
                labels = torch.full((len(rows), length), -100, dtype=torch.long)
                for k, r in enumerate(rows):
                    ids[k, : len(r)] = torch.tensor(r)
                    labels[k, : len(r)] = torch.tensor(r)
                yield {"ids": ids, "mask": (labels != -100).long(), "labels": labels}

        def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = m(input_ids=batch["ids"], attention_mask=batch["mask"]).logits
            return shifted_lm_loss(logits, batch["labels"])

        tcfg = self._train_config(hp, epochs, lr, seed, steps, bool(log))
        result = train(model.lm, batches, loss_fn, tcfg, steps_per_epoch=steps, device=device, log=log)
        return {"epochs": epochs, "steps": result.steps, "final_loss": result.final_loss}

    def _train_generation(
        self,
        model: LlavaRadModel,
        tok: LMTokenizer,
        features: torch.Tensor,
        prompts: list[str | None],
        targets: list[list[int]],
        val_features: torch.Tensor | None,
        val_prompts: list[str | None],
        val_targets: list[list[int]],
        *,
        epochs: int,
        lr: float,
        mode: str,
        device: torch.device,
        log: Callable[[str], None],
        seed: int,
        hp: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Stage 2 (projector only) or stage 3 (LoRA on the LM + projector): findings cross-entropy."""
        stage = _GenerationStage(model, mode, hp)
        batch_size = min(int(hp["batch_size"]), len(targets))
        steps = max(1, len(targets) // batch_size)
        n_trainable = sum(p.numel() for p in stage.parameters() if p.requires_grad)

        def batch_of(feats: torch.Tensor, pr: list[str | None], tg: list[list[int]], idx: list[int]) -> dict[str, Any]:
            return {"features": feats[idx], "prompts": [pr[i] for i in idx], "targets": [tg[i] for i in idx]}

        # batches of similar sequence length (prompt + findings; the image tokens are the same for all): less padding
        lengths = [
            len(targets[i]) + (len(tok.encode(prompts[i] or "")) if prompts[i] else 0) for i in range(len(targets))
        ]

        def batches(epoch: int):
            gen = torch.Generator().manual_seed(seed * 1000003 + epoch + 7 * GENERATION_MODES.index(mode))
            for idx in length_grouped_batches(lengths, batch_size, gen):
                yield batch_of(features, prompts, targets, idx)

        def loss_fn(m: _GenerationStage, batch: dict[str, Any]) -> torch.Tensor:
            return m(batch["features"].to(device), batch["prompts"], batch["targets"], tok)

        validate = None
        if val_features is not None and len(val_targets):

            def validate(m: _GenerationStage, epoch: int) -> dict[str, float]:
                total, n = 0.0, 0
                for start in range(0, len(val_targets), batch_size):
                    idx = list(range(start, min(start + batch_size, len(val_targets))))
                    b = batch_of(val_features, val_prompts, val_targets, idx)
                    total += float(loss_fn(m, b)) * len(idx)
                    n += len(idx)
                return {"loss": total / max(n, 1)}

        tcfg = self._train_config(hp, epochs, lr, seed, steps, bool(log))
        result = train(
            stage,
            batches,
            loss_fn,
            tcfg,
            steps_per_epoch=steps,
            device=device,
            log=log,
            validate=validate,
            val_metric="loss",
        )
        stage.finish()
        out = {
            "epochs": epochs,
            "steps": result.steps,
            "trainable_parameters": n_trainable,
            "final_loss": result.final_loss,
        }
        if result.best_metric is not None:
            out.update(best_val_loss=result.best_metric, best_epoch=result.best_epoch)
        out["trains"] = {"projector": "projector", "lora": "LoRA adapters + projector", "full": "decoder + projector"}[
            mode
        ]
        if mode == "lora":
            out["lora"] = {
                "r": int(hp["lora_r"]),
                "alpha": int(hp["lora_alpha"]),
                "dropout": float(hp["lora_dropout"]),
                "target_modules": LORA_TARGETS,
                "merged": True,
            }
        return out


class _GenerationStage(nn.Module):
    """The trainable view of a LlavaRadModel: ``mode`` "projector" (stage 2: the projector alone),
    "lora" (stage 3: peft LoRA adapters on the language model + the projector; :meth:`finish` merges
    them into the language model) or "full" (the whole language model + the projector)."""

    def __init__(self, model: LlavaRadModel, mode: str, hp: Mapping[str, Any]) -> None:
        super().__init__()
        if mode not in GENERATION_MODES:
            raise BenchError(f"unknown training mode {mode!r}: expected one of {', '.join(GENERATION_MODES)}")
        self.base = model
        self.mode = mode
        self.projector = model.projector
        for prm in self.projector.parameters():
            prm.requires_grad_(True)
        if mode == "full":
            self.lm = model.lm
            for prm in self.lm.parameters():
                prm.requires_grad_(True)
        elif mode == "lora":
            from peft import LoraConfig, get_peft_model

            frozen(model.lm)
            self.lm = get_peft_model(
                model.lm,
                LoraConfig(
                    r=int(hp["lora_r"]),
                    lora_alpha=int(hp["lora_alpha"]),
                    lora_dropout=float(hp["lora_dropout"]),
                    target_modules=LORA_TARGETS,
                    bias="none",
                ),
            )
        else:
            self.lm = frozen(model.lm)

    def forward(
        self, features: torch.Tensor, prompts: list[str | None], targets: list[list[int]], tok: LMTokenizer
    ) -> torch.Tensor:
        image_tokens = self.projector(features)
        embeds, mask, labels = build_sequences(self.base, tok, image_tokens, prompts, targets, pad_left=False)
        assert labels is not None
        return target_lm_loss(self.lm, embeds, mask, labels)

    def finish(self) -> None:
        if self.mode == "lora":
            self.base.lm = self.lm.merge_and_unload()
        frozen(self.base.lm)
