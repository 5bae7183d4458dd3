"""``clip-baseline``: a CLIP-style dual encoder trained from scratch on image-report pairs.

A small ViT and a small text transformer are projected linearly into a shared space and trained
with the symmetric InfoNCE loss (learnable temperature: logit scale initialised to 1/0.07 and
clamped at 100). Identical captions in a batch count as positives of each other instead of
false negatives.

Text pooling (``text_pooling``): ``"text"`` encodes a report as one sequence; ``"sentences"``
(tiny preset) encodes each sentence and takes the mean of the projected sentence embeddings, so
a one-sentence zero-shot prompt lies in the same space as the reports. Training drops each
sentence of a report with probability ``sentence_dropout`` (text augmentation) and can add
``sentences_per_image`` single sentences per image as extra captions (``sentence_loss_weight``).

Presets: ``tiny`` (trains on the synthetic dataset in a few CPU minutes; a conv stem with one
full-resolution conv and max pooling over patch tokens, so findings a few pixels wide such as
nodules and apical pneumothoraces are not averaged away) and ``paper``
(CLIP ViT-B/16 at 224 px, 12-layer 512-wide text transformer, embed 512, batch 256, lr 5e-4,
weight decay 0.2; for a GPU).
"""

from __future__ import annotations

import copy
import json
import math
import re
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
    GROUND,
    TRAIN,
    BenchError,
    ModelAdapter,
    Sample,
    as_pil,
    batched,
    stable_hash,
)
from models.components.devices import resolve_device
from models.components.identity import bytes_fingerprint, files_fingerprint
from models.components.image_preprocess import ImagePreprocessor, TrainAugment
from models.components.projector import LinearProjector
from models.components.text_batch import distinct_texts, pool_rows, sentence_captions
from models.components.text_encoder import TextEncoderConfig, TextTransformer
from models.components.tokenizer import TextTokenizer
from models.components.trainer import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TrainConfig,
    TrainResult,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    state_dict_bytes,
    train,
)
from models.components.vit import PooledImageEncoder, VisionTransformer, ViTConfig

MODEL_NAME = "clip-baseline"
FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
LOGIT_SCALE_INIT = 1 / 0.07
LOGIT_SCALE_MAX = 100.0

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vision": {
            "image_size": 64,
            "patch_size": 8,
            "in_chans": 1,
            "width": 160,
            "depth": 4,
            "heads": 4,
            "pool": "max",
            "stem": "conv",
            "stem_full_res": True,
        },
        "text": {"max_length": 64, "width": 128, "depth": 2, "heads": 4, "pool": "mean", "causal": False},
        "embed_dim": 128,
        "text_pooling": "sentences",
        "tokenizer": {"kind": "wordpiece", "vocab_size": 2000},
        "preprocess": {"channels": 1, "mean": [0.5], "std": [0.25], "resize_mode": "resize"},
        "train": {
            "epochs": 20,
            "batch_size": 32,
            "lr": 1e-3,
            "weight_decay": 0.05,
            "warmup_ratio": 0.1,
            "min_lr_ratio": 0.0,
            "max_grad_norm": 1.0,
            "grad_accum": 1,
            "sentences_per_image": 2,
            "sentence_loss_weight": 1.0,
            "sentence_dropout": 0.2,
            "augment": False,
        },
    },
    "paper": {
        "vision": {
            "image_size": 224,
            "patch_size": 16,
            "in_chans": 3,
            "width": 768,
            "depth": 12,
            "heads": 12,
        },
        "text": {"max_length": 77, "width": 512, "depth": 12, "heads": 8, "pool": "eos", "causal": True},
        "embed_dim": 512,
        "text_pooling": "text",
        "tokenizer": {"kind": "bpe", "vocab_size": 30000},
        "preprocess": {"channels": 3, "mean": CLIP_MEAN, "std": CLIP_STD, "resize_mode": "center_crop"},
        "train": {
            "epochs": 30,
            "batch_size": 256,
            "lr": 5e-4,
            "weight_decay": 0.2,
            "warmup_ratio": 0.05,
            "min_lr_ratio": 0.0,
            "max_grad_norm": 1.0,
            "grad_accum": 1,
            "sentences_per_image": 0,
            "sentence_loss_weight": 1.0,
            "sentence_dropout": 0.2,
            "augment": True,
        },
    },
}

# Used to build the tokenizer of an untrained model, so that it encodes text without any data.
BUILTIN_VOCAB_TEXT = """
No acute cardiopulmonary process. The lungs are clear. No focal consolidation, pleural effusion or
pneumothorax. The cardiomediastinal silhouette is normal. Heart size is normal. Mild cardiomegaly.
Moderate cardiomegaly. Enlarged cardiac silhouette. Small left pleural effusion. Large right pleural
effusion. Bilateral pleural effusions. Blunting of the costophrenic angle. Right upper lobe
consolidation. Left lower lobe consolidation concerning for pneumonia. Airspace opacity. Bibasilar
atelectasis. Subsegmental atelectasis. Linear atelectasis at the lung bases. Pulmonary edema.
Mild interstitial edema. Vascular congestion. Small apical pneumothorax. Left pneumothorax.
Pulmonary nodule in the right upper lobe. A nodule measuring 8 mm. Calcified granuloma.
No finding. Normal chest radiograph. Possible atelectasis. May represent consolidation.
Cannot exclude a small pneumothorax. Unchanged compared to prior. Improved. Worsened. Stable.
Support devices: endotracheal tube, nasogastric tube, central venous catheter, pacemaker.
Osseous structures are intact. Degenerative changes of the spine. Elevated hemidiaphragm.
""".strip()

_INIT_ARGS = ("checkpoint", "preset", "device", "seed", "batch_size")
_FIT_KEYS = (
    "preset", "epochs", "lr", "seed", "device", "val_data", "log",
    "batch_size", "weight_decay", "warmup_ratio", "max_grad_norm", "grad_accum",
    "sentences_per_image", "sentence_loss_weight", "sentence_dropout", "augment", "continue",
)  # fmt: skip
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text.strip()) if s.strip()]


def text_units(texts: Sequence[str], sentence_pooling: bool) -> tuple[list[str], list[int]]:
    """The strings the text tower encodes for ``texts`` and, for each, the index of its text."""
    if not sentence_pooling:
        return [str(t) for t in texts], list(range(len(texts)))
    units, owner = [], []
    for k, text in enumerate(texts):
        sents = split_sentences(str(text)) or [str(text)]
        units.extend(sents)
        owner.extend([k] * len(sents))
    return units, owner


def tokenize_texts(
    tokenizer: TextTokenizer, texts: Sequence[str], config: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(ids, mask, owner)`` for ``ClipModel.encode_text``; ``owner`` is None without sentence pooling."""
    pooling = config.get("text_pooling", "text") == "sentences"
    units, owner = text_units(texts, pooling)
    ids, mask = tokenizer.encode(units, max_length=config["text"]["max_length"])
    return ids, mask, (torch.tensor(owner, dtype=torch.long) if pooling else None)


def _check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise BenchError(f"unknown preset {preset!r} for {MODEL_NAME}: expected one of {', '.join(PRESETS)}")
    return preset


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def build_config(preset: str, vocab_size: int) -> dict[str, Any]:
    """The full model config (architecture + preprocessing + defaults) for ``preset``."""
    _check_preset(preset)
    p = copy.deepcopy(PRESETS[preset])
    vision = ViTConfig(**p["vision"]).to_dict()
    text = TextEncoderConfig(**{**p["text"], "vocab_size": vocab_size, "pad_id": 0}).to_dict()
    preprocess = ImagePreprocessor(size=vision["image_size"], **p["preprocess"]).to_dict()
    return _jsonable(
        {
            "model": MODEL_NAME,
            "format_version": FORMAT_VERSION,
            "preset": preset,
            "vision": vision,
            "text": text,
            "embed_dim": p["embed_dim"],
            "text_pooling": p.get("text_pooling", "text"),
            "tokenizer": p["tokenizer"],
            "preprocess": preprocess,
            "logit_scale_init": LOGIT_SCALE_INIT,
            "logit_scale_max": LOGIT_SCALE_MAX,
        }
    )


# --------------------------------------------------------------------------- the network


class ClipModel(nn.Module):
    """Image tower + text tower + linear projections + learnable temperature."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.visual = VisionTransformer(ViTConfig(**config["vision"]))
        self.text = TextTransformer(TextEncoderConfig(**config["text"]))
        self.image_proj = LinearProjector(self.visual.width, config["embed_dim"])
        self.text_proj = LinearProjector(self.text.width, config["embed_dim"])
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config["logit_scale_init"])))
        self.logit_scale_max = float(config["logit_scale_max"])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.visual(images)[0]), dim=-1)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Projected, not yet normalised embedding of each row's text: ``[N, embed_dim]``."""
        return self.text_proj(self.text(input_ids, attention_mask)[0])

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        owner: torch.Tensor | None = None,
        n_texts: int | None = None,
    ) -> torch.Tensor:
        """L2-normalised text embeddings.

        Without ``owner`` each row is one text. With ``owner`` (``[S]`` long) the rows are
        sentences and text ``k`` is the mean of the projected embeddings of its sentences
        (``owner == k``), normalised: a report is embedded as the pool of its sentences, so a
        one-sentence prompt lives in the same space as the reports the model was trained on.
        """
        z = self.text_features(input_ids, attention_mask)
        if owner is not None:
            z = pool_rows(z, owner, n_texts)
        return F.normalize(z, dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)


def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    scale: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between ``B`` images and ``T`` texts.

    ``positives[i, j]`` (bool ``[B, T]``) marks text ``j`` as a caption of image ``i``; the
    targets spread evenly over each row's (image -> text) and each column's (text -> image)
    positives. ``None`` means the usual one-to-one pairing (``B == T``, diagonal positives).
    """
    logits = scale * image_emb.float() @ text_emb.float().t()
    if positives is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    pos = positives.float()
    loss_i = -((pos / pos.sum(dim=1, keepdim=True)) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    pos_t = pos.t()
    loss_t = -((pos_t / pos_t.sum(dim=1, keepdim=True)) * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)


def caption_positives(owner: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, n_images: int) -> torch.Tensor:
    """``[n_images, T]`` bool: text ``j`` belongs to image ``i`` or is identical to one of its texts.

    ``owner[j]`` is the index of the image text ``j`` was drawn for. Identical captions of
    different images (e.g. "No pneumothorax.") are positives of each other, not false negatives.
    """
    ids = ids * mask
    same = (ids[:, None, :] == ids[None, :, :]).all(dim=-1).float()  # [T, T]
    own = F.one_hot(owner.to(ids.device), n_images).t().float()  # [B, T]
    return (own @ same) > 0


# --------------------------------------------------------------------------- identity without loading


def checkpoint_fingerprint(directory: str | Path) -> str:
    """Hash of a checkpoint's files (weights, config, tokenizer), read without building the model."""
    return files_fingerprint(directory, (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE))


def quick_fingerprint(args: Mapping[str, Any]) -> str | None:
    """The fingerprint ``ClipBaseline(**args).fingerprint()`` would give, when it is cheap to know
    (a checkpoint); None otherwise (the runner then builds the model)."""
    checkpoint = args.get("checkpoint")
    if not checkpoint or not Path(str(checkpoint)).is_dir():
        return None  # the adapter itself reports a missing checkpoint
    return checkpoint_fingerprint(str(checkpoint))


# --------------------------------------------------------------------------- the adapter


class ClipBaseline(ModelAdapter):
    name = MODEL_NAME
    capabilities = frozenset({EMBED, GROUND, BACKBONE, TRAIN})

    def __init__(
        self,
        checkpoint: str | None = None,
        preset: str = "tiny",
        device: str = "auto",
        seed: int = 0,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise BenchError(
                f"{MODEL_NAME}: unknown argument(s) {', '.join(sorted(kwargs))}; accepted: {', '.join(_INIT_ARGS)}"
            )
        super().__init__(checkpoint=checkpoint, preset=preset, device=device, seed=seed, batch_size=batch_size)
        _check_preset(preset)
        if int(batch_size) <= 0:
            raise BenchError(f"{MODEL_NAME}: batch_size must be positive, got {batch_size}")
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.checkpoint: str | None = None
        self.last_train_result: TrainResult | None = None
        if checkpoint is not None:
            self.load(checkpoint)
        else:
            self._init_random(preset, self.seed)

    # ------------------------------------------------------------------ construction

    def _install(self, config: dict[str, Any], model: ClipModel, tokenizer: TextTokenizer) -> None:
        self.config = config
        self.preset = config["preset"]
        self.tokenizer = tokenizer
        self.preprocessor = ImagePreprocessor.from_dict(config["preprocess"])
        self.model = model.to(self.device).eval()

    def _init_random(self, preset: str, seed: int) -> None:
        tok_cfg = PRESETS[preset]["tokenizer"]
        tokenizer = TextTokenizer.train(
            split_sentences(BUILTIN_VOCAB_TEXT), vocab_size=tok_cfg["vocab_size"], kind=tok_cfg["kind"]
        )
        config = build_config(preset, tokenizer.vocab_size)
        seed_everything(seed)
        self._install(config, ClipModel(config), tokenizer)
        self._random_init = True

    def load(self, directory: str | Path) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise BenchError(f"{MODEL_NAME}: checkpoint directory not found: {directory}")
        if not (directory / TOKENIZER_FILE).is_file():
            raise BenchError(f"{MODEL_NAME}: checkpoint {directory} is missing {TOKENIZER_FILE}")
        config, state = load_checkpoint(directory)
        if config.get("model") != MODEL_NAME:
            raise BenchError(f"checkpoint {directory} holds model {config.get('model')!r}, not {MODEL_NAME!r}")
        tokenizer = TextTokenizer.load(directory / TOKENIZER_FILE)
        try:
            model = ClipModel(config)
        except (KeyError, TypeError) as exc:
            raise BenchError(f"checkpoint {directory}: config.json is incomplete: {exc}") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BenchError(f"checkpoint {directory}: weights do not match config.json: {exc}") from None
        if tokenizer.vocab_size != config["text"]["vocab_size"]:
            raise BenchError(
                f"checkpoint {directory}: {TOKENIZER_FILE} has {tokenizer.vocab_size} tokens, "
                f"config.json expects {config['text']['vocab_size']}"
            )
        self._install(config, model, tokenizer)
        self._random_init = False
        self.checkpoint = str(directory)

    def save(self, directory: str | Path) -> None:
        save_checkpoint(directory, self.model, self.config, {TOKENIZER_FILE: self.tokenizer.to_str()})

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        """The hash of the checkpoint files these weights are (or would be, once saved): equal to
        :func:`quick_fingerprint` of a checkpoint without loading it. A random init is named by its
        preset and seed."""
        if self._random_init:
            return stable_hash({"random-init": self.config, "seed": self.seed})
        if self.checkpoint is not None:
            return checkpoint_fingerprint(self.checkpoint)
        return bytes_fingerprint(
            [
                (WEIGHTS_FILE, state_dict_bytes(self.model)),
                (CONFIG_FILE, json.dumps(dict(self.config), indent=2, sort_keys=True).encode()),
                (TOKENIZER_FILE, self.tokenizer.to_str().encode("utf-8")),
            ]
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dual encoder",
            "preset": self.preset,
            "checkpoint": self.checkpoint,
            "trained": not self._random_init,
            "embed_dim": self.config["embed_dim"],
            "image_size": self.config["vision"]["image_size"],
            "parameters": self.num_parameters(),
        }

    # ------------------------------------------------------------------ embed

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """ImageRefs / PIL images / paths -> normalised ``[N, C, S, S]`` float32 tensor (CPU)."""
        return self.preprocessor([as_pil(im) for im in images])

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        self.model.eval()
        out = [np.zeros((0, self.embed_dim), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(images, self.batch_size):
                x = self.preprocess(chunk).to(self.device)
                out.append(self.model.encode_image(x).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise BenchError("encode_texts() expects a sequence of strings, not a single string")
        self.model.eval()
        out = [np.zeros((0, self.embed_dim), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(texts, self.batch_size):
                ids, mask, owner = self._tokenize(chunk)
                if owner is not None:
                    owner = owner.to(self.device)
                emb = self.model.encode_text(ids.to(self.device), mask.to(self.device), owner, len(chunk))
                out.append(emb.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def _tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return tokenize_texts(self.tokenizer, texts, self.config)

    # ------------------------------------------------------------------ ground

    def similarity_map(self, image: Any, phrase: str) -> np.ndarray:
        """Cosine similarity of each projected patch token (``image_proj`` of the ViT's normalised patch
        tokens) with the phrase embedding: the patch grid ``[gh, gw]`` (float32); with ``center_crop``
        preprocessing of a non-square image it is laid on the whole image, NaN outside the crop."""
        from models.hf_clip import View, place_map

        pil = as_pil(image)
        self.model.eval()
        with torch.inference_mode():
            x = self.preprocess([pil]).to(self.device)
            tokens = F.normalize(self.model.image_proj(self.model.visual(x)[1][0]), dim=-1)
        text = torch.from_numpy(self.encode_texts([phrase])[0]).to(tokens.device)
        p = self.model.visual.config.patch_size
        grid = (tokens.float() @ text).reshape(x.shape[-2] // p, x.shape[-1] // p).cpu().numpy()
        h, w, s = pil.height, pil.width, self.preprocessor.size
        view = None
        if self.preprocessor.resize_mode == "center_crop" and h != w:  # as ImagePreprocessor._resize
            nh, nw = max(s, round(h * s / min(h, w))), max(s, round(w * s / min(h, w)))
            view = View((nh - s) // 2 * h / nh, (nw - s) // 2 * w / nw, s * h / nh, s * w / nw)
        return place_map(grid, view, (h, w)).astype(np.float32)

    # ------------------------------------------------------------------ backbone

    def image_backbone(self) -> tuple[nn.Module, int]:
        """A copy of the image tower: ``module(preprocess(images)) -> pooled [N, width]``.

        It is a copy, so fine-tuning it does not change this adapter's embeddings or fingerprint.
        """
        module = PooledImageEncoder(copy.deepcopy(self.model.visual)).to(self.device).eval()
        return module, module.feature_dim

    # ------------------------------------------------------------------ train

    def fit(self, train_data: Sequence[Sample], config: Mapping[str, Any]) -> None:
        """Train on image-report pairs (from scratch unless ``config["continue"]`` is true).

        config keys: preset, epochs, lr, seed, device, val_data, log, batch_size, weight_decay,
        warmup_ratio, max_grad_norm, grad_accum, sentences_per_image, sentence_loss_weight,
        sentence_dropout, augment, continue.
        Defaults come from the preset's ``train`` section.
        """
        config = dict(config or {})
        unknown = sorted(set(config) - set(_FIT_KEYS))
        if unknown:
            raise BenchError(
                f"{MODEL_NAME}.fit: unknown config key(s) {', '.join(unknown)}; accepted: {', '.join(_FIT_KEYS)}"
            )
        preset = _check_preset(config.get("preset") or self.preset)
        defaults = PRESETS[preset]["train"]
        hp = {**defaults, **{k: v for k, v in config.items() if k in defaults}}
        seed = int(config.get("seed", self.seed))
        device = resolve_device(config["device"]) if config.get("device") else self.device
        log: Callable[[str], None] | None = config.get("log")
        pairs = [(s.image, s.report) for s in train_data if s.images and s.report]
        if len(pairs) < 2:
            raise BenchError(f"{MODEL_NAME}.fit needs at least 2 samples with an image and a report, got {len(pairs)}")
        t0 = time.perf_counter()

        if config.get("continue"):
            if preset != self.preset:
                raise BenchError(f"cannot continue training a {self.preset!r} model with preset {preset!r}")
            tokenizer, model_config, model = self.tokenizer, dict(self.config), self.model
        else:
            tok_cfg = PRESETS[preset]["tokenizer"]
            tokenizer = TextTokenizer.train(
                [t for _, t in pairs], vocab_size=tok_cfg["vocab_size"], kind=tok_cfg["kind"]
            )
            model_config = build_config(preset, tokenizer.vocab_size)
            seed_everything(seed)
            model = ClipModel(model_config)
        pre = ImagePreprocessor.from_dict(model_config["preprocess"])
        images = pre.load([ref for ref, _ in pairs])  # [N, C, S, S] in [0, 1], cached for all epochs
        sentences = [split_sentences(t) for _, t in pairs]
        reports = [t for _, t in pairs]
        if log:
            log(f"{MODEL_NAME}: {len(pairs)} pairs, vocab {tokenizer.vocab_size}, images cached in "
                f"{time.perf_counter() - t0:.1f}s")  # fmt: skip

        batch_size = min(int(hp["batch_size"]), len(pairs))
        steps_per_epoch = max(1, len(pairs) // batch_size)  # drop the ragged last batch
        max_len = model_config["text"]["max_length"]
        augment = TrainAugment() if hp["augment"] else None
        per_image, sent_weight = int(hp["sentences_per_image"]), float(hp["sentence_loss_weight"])
        keep_p = 1.0 - float(hp["sentence_dropout"])
        pooling = model_config.get("text_pooling", "text") == "sentences"

        def report_view(i: int, gen: torch.Generator) -> list[str]:
            """Report ``i`` with each sentence dropped with probability ``sentence_dropout`` (>= 1 kept)."""
            sents = sentences[i] or [reports[i]]
            keep = (torch.rand(len(sents), generator=gen) < keep_p).tolist()
            if not any(keep):
                keep[int(torch.randint(len(sents), (), generator=gen))] = True
            return [x for x, k in zip(sents, keep) if k]

        def batches(epoch: int):
            gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
            order = torch.randperm(len(pairs), generator=gen)
            for b in range(steps_per_epoch):
                idx = order[b * batch_size : (b + 1) * batch_size].tolist()
                x = images[idx]
                if augment is not None:
                    x = augment(x, generator=gen)
                views = [report_view(i, gen) for i in idx]
                units, owner = ([u for v in views for u in v], [k for k, v in enumerate(views) for _ in v])
                if not pooling:
                    units, owner = [" ".join(v) for v in views], list(range(len(idx)))
                texts, s_owner = sentence_captions(sentences, idx, per_image, gen)
                # one text-tower pass over the distinct texts of the batch (reports' sentences and captions)
                distinct, (unit_rows, sent_rows) = distinct_texts(units, texts)
                ids, mask = tokenizer.encode(distinct, max_length=max_len)
                keys = [" ".join(v) for v in views]
                same = torch.tensor([[a == c for c in keys] for a in keys])
                batch = {
                    "images": pre.normalize(x),
                    "ids": ids,
                    "mask": mask,
                    "unit_rows": unit_rows,
                    "owner": torch.tensor(owner),
                    "positives": same,
                }
                if texts:
                    batch["sent_rows"] = sent_rows
                    batch["sent_positives"] = caption_positives(
                        torch.tensor(s_owner), ids[sent_rows], mask[sent_rows], len(idx)
                    )
                yield batch

        def loss_fn(m: ClipModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            img = m.encode_image(batch["images"])
            scale = m.scale()
            z = m.text_features(batch["ids"], batch["mask"])  # each distinct text once
            txt = F.normalize(pool_rows(z[batch["unit_rows"]], batch["owner"], len(img)), dim=-1)
            report_loss = clip_loss(img, txt, scale, batch["positives"])
            out = {"loss": report_loss, "report_loss": report_loss.detach(), "logit_scale": scale.detach()}
            if "sent_rows" in batch:
                sent_loss = clip_loss(img, F.normalize(z[batch["sent_rows"]], dim=-1), scale, batch["sent_positives"])
                out["loss"] = report_loss + sent_weight * sent_loss
                out["sentence_loss"] = sent_loss.detach()
            return out

        validate = None
        val_data = config.get("val_data")
        if val_data:
            val_pairs = [(s.image, s.report) for s in val_data if s.images and s.report]
            val_images = pre([ref for ref, _ in val_pairs])
            val_reports = [t for _, t in val_pairs]

            def validate(m: ClipModel, epoch: int) -> dict[str, float]:
                total, n = 0.0, 0
                for start in range(0, len(val_pairs), batch_size):
                    chunk = val_reports[start : start + batch_size]
                    ids, mask, owner = tokenize_texts(tokenizer, chunk, model_config)
                    img = m.encode_image(val_images[start : start + batch_size].to(device))
                    txt = m.encode_text(ids.to(device), mask.to(device), owner, len(chunk))
                    k = len(chunk)
                    positives = torch.tensor([[a == c for c in chunk] for a in chunk], device=device)
                    total += float(clip_loss(img, txt, m.scale(), positives)) * k
                    n += k
                return {"loss": total / max(n, 1)}

        tcfg = TrainConfig(
            epochs=int(hp["epochs"]),
            lr=float(hp["lr"]),
            weight_decay=float(hp["weight_decay"]),
            warmup_ratio=float(hp["warmup_ratio"]),
            min_lr_ratio=float(hp["min_lr_ratio"]),
            grad_accum=int(hp["grad_accum"]),
            max_grad_norm=float(hp["max_grad_norm"]) if hp["max_grad_norm"] else None,
            seed=seed,
            val_mode="min",
            log_every=max(1, steps_per_epoch // 2) if log else 0,
        )
        result = train(
            model,
            batches,
            loss_fn,
            tcfg,
            steps_per_epoch=steps_per_epoch,
            device=device,
            log=log,
            validate=validate,
            val_metric="loss",
        )
        result.wall_time_s = time.perf_counter() - t0
        model_config = _jsonable(
            {**model_config, "train": {**hp, "seed": seed, "samples": len(pairs), "steps": result.steps}}
        )
        self.device = device
        self._install(model_config, model, tokenizer)
        self._random_init = False
        self.checkpoint = None
        self.last_train_result = result
        if log:
            log(f"{MODEL_NAME}: trained {result.steps} steps in {result.wall_time_s:.1f}s")
