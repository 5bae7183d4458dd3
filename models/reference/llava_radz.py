"""``llava-radz``: LLaVA-RadZ (Li et al., "Can multimodal large language models effectively tackle zero-shot
radiology recognition?"): zero-shot disease recognition from the decoder features of a multimodal LLM.

The foundation MLLM (the paper uses LLaVA-Med) is here a trained ``llava-rad`` checkpoint, ``base=DIR``: its
CLIP-style vision tower, MLP projector and Llama decoder are imported from :mod:`models.reference.llava_rad`.
Without ``base`` the ``tiny`` preset first trains a ``llava-rad`` tiny foundation on the same data.

**DFAT** (Decoding-Side Feature Alignment Training, paper section 2.3.1). Learned special tokens are appended
to an image prompt and to a text prompt (Eqs. 1-2), in LLaVA's conversation layout::

    image branch:  <s> USER: <image tokens> {image prompt} <ImgCls_1> .. <ImgCls_4> ASSISTANT:
    text branch:   <s> USER: {report text} {text prompt} <TxtCls_1> .. <TxtCls_8> ASSISTANT:

Both run through the decoder (Eq. 3). The hidden states of the *penultimate* decoder layer at the special
tokens, averaged, are the global feature and the average over every other token (image tokens included) the
local feature; an MLP per modality (``gamma_img``, ``gamma_txt``; ``K`` = the decoder width, as in the paper's
``H in R^{B x I x K}``) maps them into the shared space (Eqs. 4-5). The cross-modal loss ``L_CA`` aligns
global image with local text features and local image with global text features, each with a symmetric
InfoNCE at temperature ``tau`` = 0.05 (Eqs. 6-10; :func:`info_nce`, :func:`cross_alignment_loss`).

**DKAM** (Domain Knowledge Anchoring Module, section 2.3.2). The foundation model itself describes each
category of a library (Eq. 11, prompt :data:`RADZ_DESCRIBE`, greedy text-only generation; the
texts are kept in the checkpoint's ``config.json``), or the descriptions come from a file
(``descriptions=FILE``, one ``Name: description`` per line; ``descriptions=builtin`` is the shipped file
``models/reference/data/disease_descriptions.txt`` or ``entity_library.txt``, written for medvlbench). The
foundation decoder's mean penultimate-layer state over ``"{name}: {description}"`` is a fixed repository,
mapped by an MLP ``gamma_dis`` to the description vectors ``D`` (Eq. 12). The category-guided loss ``L_CG``
(Eqs. 13-15, :func:`category_guided_loss`) is a cross-entropy of the global image and text features against
``D`` over the categories. The libraries (Table 4): ``library=disease`` (D2, the training data's label set:
for synthcxr its 7 findings + No Finding; the 14 CheXpert observations from the offline rule labeler when
the data has no labels; uncertain labels count as present) and ``library=entity`` (D1, 81 radiology
entities; an entity is present when its words occur in a report clause that no negation cue governs).
``L_total = lambda L_CA + (1 - lambda) L_CG`` (Eq. 16, :func:`total_loss`), lambda = 0.5.

Trainable (as in the paper's LoRA fine-tuning): LoRA adapters on every linear layer of the decoder, the
projector, the special tokens and the MLP heads; the vision tower is frozen. The adapters are merged into
the decoder when training ends, so ``generate`` uses the DFAT-tuned decoder and a checkpoint is one
``model.safetensors`` (foundation + DFAT parts; it does not need ``base`` any more).

Inference (``embed``): ``encode_images`` / ``encode_texts`` return the L2-normalised projected features.
With both feature kinds (the default) an image is ``[X_g, X_l] / sqrt(2)`` and a text ``[Y_l, Y_g] / sqrt(2)``
(each part normalised), so the cosine of an image and a text is ``(cos(X_g, Y_l) + cos(X_l, Y_g)) / 2``: the
two pairings ``L_CA`` trains. ``image_backbone`` returns a copy of the image branch giving the pooled
penultimate-layer states at the ``<ImgCls>`` tokens.

Ablation switches (``fit`` config / ``--train-args``): ``dkam=false`` (Table 4 a), ``library=entity|disease``
(Table 4 b, c), ``features=global|local|both`` (Table 5: one kind aligns ``X_g``-``Y_g`` or ``X_l``-``Y_l``
with the same InfoNCE), ``prompt=false`` (Table 5 a: the frames without the image/text prompts),
``n_img_tokens``/``n_txt_tokens`` and ``feature_layer`` (Fig. 4).

Text pooling and sentence captions (``text_pooling``, ``sentence_captions``). ``paper``: a report is one
text-branch sequence, as in the paper. ``tiny``: as ``clip-baseline``'s tiny preset, a text is the mean of the
projected features of its sentences (each sentence one text-branch sequence; a sentence repeated in a batch
runs once), and every sentence is also a caption of the images whose reports contain it (a second ``L_CA``
term, averaged with the report term). A small decoder trained on a few thousand reports does not learn
negation from whole reports alone: without these, the CheXzero prompt pairs of ``synthcxr_zs`` ("nodule" /
"no nodule") get nearly identical embeddings and a zero-shot AUC of about 0.74, against 0.91 with them.

Presets: ``paper`` (appendix D: AdamW lr 2e-5, no weight decay, cosine schedule with 3 % warm-up, 4
``<ImgCls>`` and 8 ``<TxtCls>`` tokens, tau 0.05, lambda 0.5, batch 64, LoRA; the paper does not give the LoRA
rank or the number of epochs: LLaVA's LoRA recipe r=128, alpha=256 and one epoch; for a GPU, from a
LLaVA-Med-sized ``base``) and ``tiny`` (the same method on the ``llava-rad`` tiny foundation, a 4-layer 256-wide
decoder: lr 1e-3, LoRA r=64 / alpha=128 without dropout, 3 epochs, sentence pooling and captions; about two
CPU minutes on synthcxr given a trained ``base``).

Departures, all of scale only: the paper sums the per-pair losses over the batch (Eqs. 8, 9, 15); training
averages them (``reduction="mean"``: a constant factor, which keeps gradient clipping meaningful).
Identical texts in a batch are positives of each other rather than negatives.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    ANSWER_PREFIX,
    USER_PREFIX,
    LMTokenizer,
    frozen,
    lm_hidden_size,
)
from models.components.text_batch import pool_rows
from models.components.tokenizer import TextTokenizer
from models.components.trainer import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    state_dict_bytes,
    train,
)
from models.reference import clip_baseline as cb
from models.reference import llava_rad as lr

# The prompts that the learned <ImgCls>/<TxtCls> tokens follow (the image prompt comes after the image tokens,
# the text prompt after the text), and the request with which the model describes each disease for DKAM.
RADZ_IMAGE_PROMPT = "What is seen in this chest radiograph?"
RADZ_TEXT_PROMPT = "What is seen in this report?"
RADZ_DESCRIBE = (
    "Explain what {name} means on a chest X-ray: what it is, where it usually lies, how it looks on the image and "
    "what sets it apart from other chest findings. Answer in two or three sentences."
)

MODEL_NAME = "llava-radz"
FORMAT_VERSION = 1
TOKENIZER_FILE = lr.TOKENIZER_FILE
LM_TOKENIZER_DIR = lr.LM_TOKENIZER_DIR
ENCODER_TOKENIZER_FILE = lr.ENCODER_TOKENIZER_FILE
DATA_DIR = Path(__file__).resolve().with_name("data")
LIBRARY_FILES = {"disease": DATA_DIR / "disease_descriptions.txt", "entity": DATA_DIR / "entity_library.txt"}
LIBRARIES = ("disease", "entity")
FEATURES = ("both", "global", "local")
TEXT_POOLING = ("report", "sentences")

# token kinds in a branch's sequence
PAD, LOCAL, SPECIAL, IMAGE = 0, 1, 2, 3

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "base_preset": "tiny",
        "text_pooling": "sentences",
        "max_text_tokens": 160,
        "description_tokens": 48,
        "train": {
            "epochs": 3,
            "lr": 1e-3,
            "batch_size": 32,
            "weight_decay": 0.0,
            "warmup_ratio": 0.03,
            "grad_accum": 1,
            "lora_r": 64,
            "lora_alpha": 128,
            "lora_dropout": 0.0,
            "tau": 0.05,
            "lambda_ca": 0.5,
            "n_img_tokens": 4,
            "n_txt_tokens": 8,
            "feature_layer": -2,
            "sentence_captions": True,
        },
    },
    "paper": {
        "base_preset": "paper",
        "text_pooling": "report",
        "max_text_tokens": 512,
        "description_tokens": 256,
        "train": {
            "epochs": 1,  # not stated in the paper
            "lr": 2e-5,
            "batch_size": 64,
            "weight_decay": 0.0,
            "warmup_ratio": 0.03,
            "grad_accum": 1,
            "lora_r": 128,  # not stated in the paper: LLaVA's LoRA recipe
            "lora_alpha": 256,
            "lora_dropout": 0.05,
            "tau": 0.05,
            "lambda_ca": 0.5,
            "n_img_tokens": 4,
            "n_txt_tokens": 8,
            "feature_layer": -2,
            "sentence_captions": False,
        },
    },
}

_INIT_ARGS = ("checkpoint", "base", "preset", "device", "seed", "batch_size", "max_new_tokens")
_SWITCHES = ("base", "descriptions", "dkam", "library", "features", "prompt", "text_pooling")
_FIT_KEYS = ("preset", "seed", "device", "val_data", "log", *_SWITCHES, *PRESETS["tiny"]["train"].keys())
_INT_KEYS = ("epochs", "batch_size", "grad_accum", "lora_r", "lora_alpha", "n_img_tokens", "n_txt_tokens")
_FEATURE_CACHE_BYTES = 1 << 30  # frozen patch features are precomputed when they fit in this many bytes


def _check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise BenchError(f"unknown preset {preset!r} for {MODEL_NAME}: expected one of {', '.join(PRESETS)}")
    return preset


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BenchError(f"{MODEL_NAME}.fit: {key} must be true or false, got {value!r}")


def _choice(key: str, value: Any, choices: Sequence[str]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise BenchError(f"{MODEL_NAME}.fit: {key} must be one of {', '.join(choices)}, got {value!r}")
    return text


# --------------------------------------------------------------------------- losses (pure functions)


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    tau: float,
    positives: torch.Tensor | None = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Symmetric temperature-normalised InfoNCE between ``B`` paired rows of ``a`` and ``b`` (Eqs. 6-8).

    ``S = a b^T / tau`` (Eq. 6); ``L^{a->b,i} = -log softmax_k(S_{i,k})[i]`` and ``L^{b->a,i}`` the same on
    ``S^T`` (Eq. 7); the result is ``1/2 sum_i (L^{a->b,i} + L^{b->a,i})`` (Eq. 8; ``reduction="mean"``
    divides by ``B``). ``positives[i, j]`` (bool ``[B, T]``) marks row ``j`` of ``b`` as a positive of row ``i``
    of ``a`` (identical texts, several captions of one image): each row's and each column's target spreads
    evenly over its positives, and ``a`` and ``b`` may then have different numbers of rows (the two directions
    are reduced separately). Inputs are used as given (the callers L2-normalise them).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise BenchError(f"info_nce needs [B, K] and [T, K] tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    if positives is None and a.shape[0] != b.shape[0]:
        raise BenchError(f"info_nce of {a.shape[0]} and {b.shape[0]} rows needs the positives matrix")
    logits = a.float() @ b.float().t() / float(tau)
    if positives is None:
        pos = torch.eye(logits.shape[0], device=logits.device)
    else:
        pos = positives.to(logits.device).float()
        if pos.shape != logits.shape or not bool((pos.sum(dim=1) > 0).all() and (pos.sum(dim=0) > 0).all()):
            raise BenchError(f"info_nce: positives must be [{a.shape[0]}, {b.shape[0]}] with one in every row/column")
    row = -((pos / pos.sum(dim=1, keepdim=True)) * F.log_softmax(logits, dim=1)).sum(dim=1)
    pos_t = pos.t()
    col = -((pos_t / pos_t.sum(dim=1, keepdim=True)) * F.log_softmax(logits.t(), dim=1)).sum(dim=1)
    return 0.5 * (_reduce(row, reduction) + _reduce(col, reduction))


def _reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return per_item.sum()
    if reduction == "mean":
        return per_item.mean()
    raise BenchError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def cross_alignment_loss(
    x_global: torch.Tensor,
    x_local: torch.Tensor,
    y_global: torch.Tensor,
    y_local: torch.Tensor,
    tau: float,
    positives: torch.Tensor | None = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """``L_CA`` (Eq. 10): ``1/2 (L_CA^{X_g->Y_l} + L_CA^{X_l->Y_g})``, global image features aligned with local
    text features (Eq. 8) and local image features with global text features (Eq. 9), each a symmetric
    InfoNCE (:func:`info_nce`)."""
    l_gl = info_nce(x_global, y_local, tau, positives, reduction)
    l_lg = info_nce(x_local, y_global, tau, positives, reduction)
    return 0.5 * (l_gl + l_lg)


def category_guided_loss(
    x_global: torch.Tensor,
    y_global: torch.Tensor,
    descriptions: torch.Tensor,
    targets: torch.Tensor,
    tau: float,
    reduction: str = "sum",
) -> torch.Tensor:
    """``L_CG`` (Eqs. 13-15): cross-entropy of image and text global features against the ``N`` description
    vectors ``D``.

    ``S^{img-disease}_i = X_{g,i} D^T / tau`` and ``S^{txt-disease}_i = Y_{g,i} D^T / tau`` (Eq. 13); each term
    of Eq. 14 is ``-log softmax`` over the ``N`` categories at the pair's category; ``L_CG = 1/2 sum_i
    (L^txt_{CG,i} + L^img_{CG,i})`` (Eq. 15; ``reduction="mean"`` divides by the pairs that have a category).
    ``targets`` (``[B, N]``, 0/1) are the pair's categories: with several (multi-label data) the target mass
    spreads evenly over them; a pair with none does not contribute.
    """
    t = targets.to(x_global.device).float()
    if t.shape != (x_global.shape[0], descriptions.shape[0]):
        raise BenchError(
            f"category_guided_loss: targets have shape {tuple(t.shape)}, expected "
            f"{(x_global.shape[0], descriptions.shape[0])}"
        )
    keep = t.sum(dim=1) > 0
    if not bool(keep.any()):
        return (x_global.sum() + y_global.sum() + descriptions.sum()).float() * 0.0
    weights = t[keep] / t[keep].sum(dim=1, keepdim=True)
    d = descriptions.float()
    l_img = -(weights * F.log_softmax(x_global[keep].float() @ d.t() / float(tau), dim=1)).sum(dim=1)
    l_txt = -(weights * F.log_softmax(y_global[keep].float() @ d.t() / float(tau), dim=1)).sum(dim=1)
    return _reduce(0.5 * (l_txt + l_img), reduction)


def total_loss(l_ca: torch.Tensor, l_cg: torch.Tensor | None, lambda_ca: float) -> torch.Tensor:
    """``L_total = lambda L_CA + (1 - lambda) L_CG`` (Eq. 16); without DKAM (``l_cg`` None) just ``L_CA``."""
    if l_cg is None:
        return l_ca
    return float(lambda_ca) * l_ca + (1.0 - float(lambda_ca)) * l_cg


def joint_embedding(global_feat: torch.Tensor, local_feat: torch.Tensor, features: str, image: bool) -> torch.Tensor:
    """The embedding ``encode_images`` / ``encode_texts`` return (L2-normalised rows).

    ``both``: ``[X_g, X_l] / sqrt(2)`` for images and ``[Y_l, Y_g] / sqrt(2)`` for texts (each part
    normalised), whose dot product is ``(cos(X_g, Y_l) + cos(X_l, Y_g)) / 2``; ``global`` / ``local``: that
    feature alone.
    """
    g, loc = F.normalize(global_feat.float(), dim=-1), F.normalize(local_feat.float(), dim=-1)
    if features == "global":
        return g
    if features == "local":
        return loc
    parts = (g, loc) if image else (loc, g)
    return torch.cat(parts, dim=-1) / math.sqrt(2.0)


# --------------------------------------------------------------------------- libraries and targets


def read_library(path: str | Path) -> dict[str, str]:
    """``Name: description`` lines (``#`` comments and blank lines skipped) -> ``{name: description}``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{MODEL_NAME}: cannot read the descriptions file {path}: {exc}") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, text = line.partition(":")
        if not sep or not name.strip() or not text.strip():
            raise BenchError(f"{path}:{number}: expected 'Name: description', got {line[:80]!r}")
        if name.strip().lower() in (k.lower() for k in out):
            raise BenchError(f"{path}:{number}: {name.strip()!r} is described twice")
        out[name.strip()] = " ".join(text.split())
    if not out:
        raise BenchError(f"{MODEL_NAME}: the descriptions file {path} holds no 'Name: description' line")
    return out


def lookup_descriptions(library: Mapping[str, str], names: Sequence[str], source: str) -> dict[str, str]:
    """The description of each name (case-insensitive match); every name must be described."""
    lower = {k.lower(): v for k, v in library.items()}
    missing = [n for n in names if n.lower() not in lower]
    if missing:
        raise BenchError(
            f"{MODEL_NAME}: {source} has no description for {', '.join(missing)} "
            f"(it describes {', '.join(list(library)[:20])}{' ...' if len(library) > 20 else ''})"
        )
    return {n: lower[n.lower()] for n in names}


_NEGATION = re.compile(r"\b(no|not|without|free of|negative for|absence of|resolved|removed|clear of)\b")


def _entity_pattern(name: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in name.lower().split()]
    return re.compile(r"\b" + r"\w*\s+".join(words) + r"\w*")


def entity_targets(reports: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """``[N, E]`` 0/1: entity ``e`` is present in report ``n`` when its words start words of a clause of the
    report with no negation cue before them (clauses as :func:`bench.metrics.chexpert_rules.clauses`)."""
    from bench.metrics.chexpert_rules import clauses

    patterns = [_entity_pattern(n) for n in names]
    out = np.zeros((len(reports), len(names)), dtype=np.float32)
    for i, report in enumerate(reports):
        for clause in clauses(report or ""):
            for j, pattern in enumerate(patterns):
                m = pattern.search(clause)
                if m is not None and not _NEGATION.search(clause[: m.start()]):
                    out[i, j] = 1.0
    return out


def disease_targets(samples: Sequence[Sample]) -> tuple[list[str], np.ndarray, str]:
    """The D2 library of the training data and each sample's categories: ``(names, [N, C] 0/1, source)``.

    The names are the data's label names in first-seen order; a label of 1 (present) or -1 (uncertain) makes
    the category a target. Data without labels: the 14 CheXpert observations from the offline rule labeler.
    """
    names: list[str] = []
    for s in samples:
        for k, v in s.labels.items():
            if v is not None and k not in names:
                names.append(k)
    if names:
        targets = np.array([[float(s.labels.get(n) in (1, -1)) for n in names] for s in samples], dtype=np.float32)
        return names, targets, "labels"
    from bench.metrics.chexpert_rules import label_report
    from bench.metrics.clinical import POSITIVE, UNCERTAIN

    names = list(label_report("").keys())
    rows = []
    for s in samples:
        states = label_report(s.report or lr.findings_of(s))
        rows.append([float(states[n] in (POSITIVE, UNCERTAIN)) for n in names])
    return names, np.array(rows, dtype=np.float32).reshape(len(samples), len(names)), "rule labeler"


# --------------------------------------------------------------------------- sequences


def branch_layout(
    tok: LMTokenizer,
    prompt: str | None,
    n_special: int,
    content: Sequence[int] = (),
    n_image: int = 0,
) -> tuple[list[int], list[int]]:
    """Token ids and kinds of one branch: ``<s> USER: [image tokens] [content] [prompt] <Cls>*n ASSISTANT:``.

    Image-token and special-token positions hold ``pad_id`` placeholders (their embeddings are put in by
    :meth:`LlavaRadZModel.embed`); kinds are ``LOCAL``, ``IMAGE``, ``SPECIAL``.
    """
    ids = [tok.bos_id, *tok.encode(USER_PREFIX)]
    kinds = [LOCAL] * len(ids)
    ids += [tok.pad_id] * n_image
    kinds += [IMAGE] * n_image
    ids += list(content)
    kinds += [LOCAL] * len(content)
    if prompt:
        p = tok.encode(prompt.strip())
        ids += p
        kinds += [LOCAL] * len(p)
    ids += [tok.pad_id] * n_special
    kinds += [SPECIAL] * n_special
    tail = tok.encode(ANSWER_PREFIX)
    ids += tail
    kinds += [LOCAL] * len(tail)
    return ids, kinds


def pad_rows(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``ids`` and ``kinds`` (``PAD`` = 0 on padding) ``[B, L]`` long tensors."""
    length = max(len(ids) for ids, _ in rows)
    ids_t = torch.full((len(rows), length), pad_id, dtype=torch.long)
    kinds_t = torch.zeros((len(rows), length), dtype=torch.long)
    for b, (ids, kinds) in enumerate(rows):
        ids_t[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        kinds_t[b, : len(kinds)] = torch.tensor(kinds, dtype=torch.long)
    return ids_t, kinds_t


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B, L, D]`` over the positions where ``mask [B, L]`` is true (AvgPool of Eqs. 4-5)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


# --------------------------------------------------------------------------- the network


class _EarlyExit(Exception):
    """Raised by a forward hook once the wanted decoder layer has run (the layers above it are not needed)."""


def decoder_hidden(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor | None, layer: int) -> torch.Tensor:
    """``hidden_states[layer]`` of the causal LM's decoder (transformers' indexing: 1..n are the layer outputs,
    -1 = n the final-norm output, -2 the penultimate layer's output), ``[B, L, D]``.

    For a layer below the last, a forward hook stores that layer's output and stops the forward pass, so the
    layers above it (and the LM head) cost nothing.
    """
    decoder = lm.base_model
    layers = getattr(decoder, "layers", None)
    n = int(lm.config.num_hidden_layers)
    k = layer if layer > 0 else n + 1 + layer
    if not 1 <= k <= n:
        raise BenchError(f"feature layer {layer} is not a layer of a {n}-layer decoder")
    if k == n or layers is None:
        out = decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False, output_hidden_states=k != n)
        return out.last_hidden_state if k == n else out.hidden_states[k]
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise _EarlyExit

    handle = layers[k - 1].register_forward_hook(hook)
    try:
        decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
    except _EarlyExit:
        pass
    finally:
        handle.remove()
    return captured["h"]


class MLPHead(nn.Module):
    """``gamma``: Linear -> GELU -> Linear (the projection MLPs of Eqs. 4, 5 and 12)."""

    def __init__(self, width: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LlavaRadZModel(nn.Module):
    """The foundation MLLM (``mllm``: a :class:`~models.reference.llava_rad.LlavaRadModel`) plus the DFAT
    special tokens and heads and the DKAM repository (``library`` buffer ``[N, D]``) with its head."""

    def __init__(self, config: Mapping[str, Any], mllm: lr.LlavaRadModel | None = None) -> None:
        super().__init__()
        self.mllm = mllm if mllm is not None else lr.LlavaRadModel(config["base"])
        width = lm_hidden_size(self.mllm.lm)
        dim = int(config["embed_dim"])
        self.img_cls = nn.Parameter(torch.zeros(int(config["n_img_tokens"]), width))
        self.txt_cls = nn.Parameter(torch.zeros(int(config["n_txt_tokens"]), width))
        self.img_head = MLPHead(width, dim)
        self.txt_head = MLPHead(width, dim)
        n_lib = len(config["dkam"]["names"]) if config["dkam"]["enabled"] else 0
        self.dis_head = MLPHead(width, dim) if n_lib else None
        self.register_buffer("library", torch.zeros(n_lib, width))
        self.feature_layer = int(config["feature_layer"])

    def init_dfat(self, seed: int) -> None:
        """Seeded random special tokens (scaled like the word embeddings) and heads."""
        gen = torch.Generator().manual_seed(seed)
        std = float(self.mllm.lm.get_input_embeddings().weight.detach().float().std())
        with torch.no_grad():
            for p in (self.img_cls, self.txt_cls):
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            heads = [self.img_head, self.txt_head] + ([self.dis_head] if self.dis_head is not None else [])
            for head in heads:
                for lin in (head.fc1, head.fc2):
                    bound = 1.0 / math.sqrt(lin.in_features)
                    lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen) * 2 * bound - bound)
                    lin.bias.zero_()

    @property
    def device(self) -> torch.device:
        return self.img_cls.device

    def embed(self, ids: torch.Tensor, kinds: torch.Tensor, special: torch.Tensor, image_tokens: torch.Tensor | None):
        """Word embeddings of ``ids`` with the special tokens (and image tokens) put in at their kinds."""
        emb = self.mllm.lm.get_input_embeddings()(ids)
        b = ids.shape[0]
        emb = emb.masked_scatter((kinds == SPECIAL).unsqueeze(-1), special.to(emb.dtype).expand(b, -1, -1))
        if image_tokens is not None:
            emb = emb.masked_scatter((kinds == IMAGE).unsqueeze(-1), image_tokens.to(emb.dtype))
        return emb

    def decoder_features(self, embeds: torch.Tensor, kinds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled hidden states of decoder layer ``feature_layer`` (the penultimate by default): the mean over the
        special tokens (global, ``AvgPool(H^global)``) and over every other token (local), ``[B, D]`` each."""
        valid = kinds != PAD
        mask = None if bool(valid.all()) else valid.long()
        hidden = decoder_hidden(self.mllm.lm, embeds, mask, self.feature_layer).float()
        return masked_mean(hidden, kinds == SPECIAL), masked_mean(hidden, (kinds == LOCAL) | (kinds == IMAGE))

    def image_hidden(
        self, patches: torch.Tensor, ids: torch.Tensor, kinds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image branch from the frozen encoder's patch features ``[B, P, W]``: pooled (global, local)."""
        b = patches.shape[0]
        ids, kinds = ids.expand(b, -1), kinds.expand(b, -1)
        image_tokens = self.mllm.projector(patches)
        return self.decoder_features(self.embed(ids, kinds, self.img_cls, image_tokens), kinds)

    def text_hidden(self, ids: torch.Tensor, kinds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder_features(self.embed(ids, kinds, self.txt_cls, None), kinds)

    def text_rows(self, ids: torch.Tensor, kinds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``gamma_txt`` of the text branch's pooled (global, local) states of each row: ``[U, K]`` each."""
        g, loc = self.text_hidden(ids, kinds)
        return self.txt_head(g), self.txt_head(loc)

    def text_projected(
        self, ids: torch.Tensor, kinds: torch.Tensor, unit: torch.Tensor, owner: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`text_rows` averaged over the units of each text: ``[n, K]`` each. The rows of ``ids`` are
        distinct units (a text, or a sentence with sentence pooling); unit occurrence ``j`` is row ``unit[j]``
        and belongs to text ``owner[j]``."""
        g, loc = self.text_rows(ids, kinds)
        unit = unit.to(g.device)
        return pool_rows(g[unit], owner, n), pool_rows(loc[unit], owner, n)

    def descriptions(self) -> torch.Tensor:
        """``D = gamma_dis(repository)`` (Eq. 12), L2-normalised ``[N, K]``."""
        if self.dis_head is None:
            raise BenchError(f"{MODEL_NAME}: this model was trained without DKAM")
        return F.normalize(self.dis_head(self.library.float()), dim=-1)


class _DFATStage(nn.Module):
    """The trainable view of a :class:`LlavaRadZModel` during DFAT: peft LoRA on the decoder, the projector,
    the special tokens and the heads train; the vision tower and the decoder's own weights are frozen."""

    def __init__(self, model: LlavaRadZModel, hp: Mapping[str, Any]) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.model = model
        frozen(model.mllm.encoder)
        frozen(model.mllm.lm)
        # peft injects the adapters into model.mllm.lm in place; the wrapper is kept for merging only
        self._peft = [
            get_peft_model(
                model.mllm.lm,
                LoraConfig(
                    r=int(hp["lora_r"]),
                    lora_alpha=int(hp["lora_alpha"]),
                    lora_dropout=float(hp["lora_dropout"]),
                    target_modules=lr.LORA_TARGETS,
                    bias="none",
                ),
            )
        ]
        for part in (model.mllm.projector, model.img_head, model.txt_head, model.dis_head):
            if part is not None:
                for p in part.parameters():
                    p.requires_grad_(True)
        model.img_cls.requires_grad_(True)
        model.txt_cls.requires_grad_(True)

    def train(self, mode: bool = True) -> _DFATStage:
        super().train(mode)
        self.model.mllm.encoder.eval()  # the frozen vision tower stays in inference mode
        return self

    def finish(self) -> None:
        """Merge the LoRA deltas into the decoder; every parameter frozen again (inference)."""
        self.model.mllm.lm = self._peft[0].merge_and_unload()
        self._peft.clear()
        frozen(self.model)


# --------------------------------------------------------------------------- identity


def _tokenizer_files(directory: Path, config: Mapping[str, Any]) -> list[str]:
    if config.get("base", {}).get("lm_source") == "transformers":
        folder = directory / LM_TOKENIZER_DIR
        if not folder.is_dir():
            raise BenchError(f"{MODEL_NAME}: checkpoint {directory} is missing {LM_TOKENIZER_DIR}/")
        return sorted(f"{LM_TOKENIZER_DIR}/{p.name}" for p in folder.iterdir() if p.is_file())
    return [TOKENIZER_FILE]


def checkpoint_fingerprint(directory: str | Path) -> str:
    """Hash of a checkpoint's files (weights, config, tokenizers), read without building the model."""
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{MODEL_NAME}: cannot read {directory / CONFIG_FILE}: {exc}") from None
    if not isinstance(config, dict):
        raise BenchError(f"{MODEL_NAME}: {directory / CONFIG_FILE} must hold a JSON object")
    names = [WEIGHTS_FILE, CONFIG_FILE, ENCODER_TOKENIZER_FILE, *_tokenizer_files(directory, config)]
    return files_fingerprint(directory, names)


def quick_fingerprint(args: Mapping[str, Any]) -> str | None:
    """``LlavaRadZ(**args).fingerprint()`` without building the model, when a checkpoint names it."""
    checkpoint = args.get("checkpoint")
    if not checkpoint or not Path(str(checkpoint)).is_dir():
        return None
    return checkpoint_fingerprint(str(checkpoint))


# --------------------------------------------------------------------------- the adapter


class LlavaRadZ(ModelAdapter):
    """LLaVA-RadZ (module docstring). ``checkpoint=DIR``: a trained model; ``base=DIR``: DFAT parts at their
    seeded random initialisation on a trained ``llava-rad`` (the untrained reference); neither: a random
    foundation (built when first used; ``fit`` replaces it)."""

    name = MODEL_NAME
    capabilities = frozenset({EMBED, BACKBONE, GENERATE, TRAIN})

    def __init__(
        self,
        checkpoint: str | None = None,
        base: str | None = None,
        preset: str = "tiny",
        device: str = "auto",
        seed: int = 0,
        batch_size: int = 32,
        max_new_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise BenchError(
                f"{MODEL_NAME}: unknown argument(s) {', '.join(sorted(kwargs))}; accepted: {', '.join(_INIT_ARGS)}"
            )
        if checkpoint is not None and base is not None:
            raise BenchError(f"{MODEL_NAME}: give checkpoint=DIR (a trained model) or base=DIR (untrained), not both")
        super().__init__(
            checkpoint=checkpoint,
            base=base,
            preset=preset,
            device=device,
            seed=seed,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
        )
        self.preset = _check_preset(preset)
        if int(batch_size) <= 0:
            raise BenchError(f"{MODEL_NAME}: batch_size must be positive, got {batch_size}")
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.max_new_tokens_override = int(max_new_tokens) if max_new_tokens else None
        self.checkpoint: str | None = None
        self.base_dir: str | None = None
        self.training_summary: dict[str, Any] | None = None
        self._model: LlavaRadZModel | None = None
        self._state = "lazy"  # lazy | on-base | trained
        if checkpoint is not None:
            self.load(checkpoint)
        elif base is not None:
            self._init_on_base(str(base))

    # ------------------------------------------------------------------ construction

    @property
    def model(self) -> LlavaRadZModel:
        if self._model is None:
            self._init_random()
        assert self._model is not None
        return self._model

    def _install(
        self, config: dict[str, Any], model: LlavaRadZModel, tokenizer: Any, encoder_tokenizer: TextTokenizer
    ) -> None:
        self.config = config
        self.preset = config["preset"]
        self.tok = LMTokenizer(tokenizer)
        self.encoder_tokenizer = encoder_tokenizer
        self.preprocessor = ImagePreprocessor.from_dict(config["base"]["encoder"]["preprocess"])
        self._model = model.to(self.device).eval()
        self._layouts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _config(
        preset: str,
        base_config: Mapping[str, Any],
        base_fingerprint: str,
        hp: Mapping[str, Any],
        features: str,
        prompt: bool,
        dkam: Mapping[str, Any],
        text_pooling: str,
    ) -> dict[str, Any]:

        p = PRESETS[preset]
        base = {k: v for k, v in base_config.items() if k != "train"}
        return _jsonable(
            {
                "model": MODEL_NAME,
                "format_version": FORMAT_VERSION,
                "preset": preset,
                "base": base,
                "base_fingerprint": base_fingerprint,
                "base_training": base_config.get("train"),
                "embed_dim": int(base["lm"]["hidden_size"]),
                "n_img_tokens": int(hp["n_img_tokens"]),
                "n_txt_tokens": int(hp["n_txt_tokens"]),
                "feature_layer": int(hp["feature_layer"]),
                "features": features,
                "text_pooling": text_pooling,
                "image_prompt": RADZ_IMAGE_PROMPT if prompt else None,
                "text_prompt": RADZ_TEXT_PROMPT if prompt else None,
                "max_text_tokens": int(p["max_text_tokens"]),
                "dkam": dict(dkam),
            }
        )

    def _wrap(
        self,
        foundation: lr.LlavaRad,
        hp: Mapping[str, Any],
        features: str = "both",
        prompt: bool = True,
        dkam: Mapping[str, Any] | None = None,
        text_pooling: str | None = None,
    ) -> None:
        """Install a DFAT model around ``foundation``'s network, the DFAT parts at their seeded random init."""
        pooling = text_pooling or PRESETS[self.preset]["text_pooling"]
        fp = foundation.fingerprint()
        config = self._config(self.preset, foundation.config, fp, hp, features, prompt, dkam or _NO_DKAM, pooling)
        self._check_layer(config, foundation.model.lm)
        seed_everything(self.seed)
        model = LlavaRadZModel(config, mllm=foundation.model)
        model.init_dfat(self.seed)
        frozen(model)
        self._install(config, model, foundation.tok.tokenizer, foundation.encoder_tokenizer)

    @staticmethod
    def _check_layer(config: Mapping[str, Any], lm: nn.Module) -> None:
        n = int(lm.config.num_hidden_layers)
        layer = int(config["feature_layer"])
        if not (1 <= layer <= n or -n <= layer <= -1):
            raise BenchError(
                f"{MODEL_NAME}: feature_layer {layer} is not a decoder layer of a {n}-layer decoder "
                f"(1..{n}, or -1..-{n} counted from the output; -2 is the penultimate layer)"
            )

    @staticmethod
    def _load_base(base: str, device: torch.device, seed: int) -> lr.LlavaRad:
        if not Path(base).is_dir():
            raise BenchError(f"{MODEL_NAME}: base checkpoint directory not found: {base} (a trained llava-rad)")
        return lr.LlavaRad(checkpoint=base, device=str(device), seed=seed)

    def _init_on_base(self, base: str) -> None:
        foundation = self._load_base(base, self.device, self.seed)
        self._wrap(foundation, PRESETS[self.preset]["train"])
        self.base_dir = base
        self._state = "on-base"

    def _init_random(self) -> None:
        foundation = lr.LlavaRad(preset=PRESETS[self.preset]["base_preset"], device=str(self.device), seed=self.seed)
        self._wrap(foundation, PRESETS[self.preset]["train"])
        self._state = "lazy-built"

    def load(self, directory: str | Path) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise BenchError(f"{MODEL_NAME}: checkpoint directory not found: {directory}")
        config, state = load_checkpoint(directory)
        if config.get("model") != MODEL_NAME:
            raise BenchError(f"checkpoint {directory} holds model {config.get('model')!r}, not {MODEL_NAME!r}")
        if config.get("format_version") != FORMAT_VERSION:
            raise BenchError(
                f"checkpoint {directory} has format version {config.get('format_version')!r}; "
                f"this {MODEL_NAME} reads version {FORMAT_VERSION}"
            )
        if not (directory / ENCODER_TOKENIZER_FILE).is_file():
            raise BenchError(f"{MODEL_NAME}: checkpoint {directory} is missing {ENCODER_TOKENIZER_FILE}")
        try:
            enc_tok = TextTokenizer.load(directory / ENCODER_TOKENIZER_FILE)
            if config.get("base", {}).get("lm_source") == "transformers":
                from transformers import AutoTokenizer

                if not (directory / LM_TOKENIZER_DIR).is_dir():
                    raise BenchError(f"{MODEL_NAME}: checkpoint {directory} is missing {LM_TOKENIZER_DIR}/")
                lm_tok: Any = AutoTokenizer.from_pretrained(str(directory / LM_TOKENIZER_DIR), local_files_only=True)
            else:
                if not (directory / TOKENIZER_FILE).is_file():
                    raise BenchError(f"{MODEL_NAME}: checkpoint {directory} is missing {TOKENIZER_FILE}")
                lm_tok = TextTokenizer.load(directory / TOKENIZER_FILE)
        except BenchError:
            raise
        except Exception as exc:  # a corrupt tokenizer file
            raise BenchError(f"checkpoint {directory}: cannot read its tokenizer: {exc}") from None
        try:
            model = LlavaRadZModel(config)
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"checkpoint {directory}: config.json is incomplete: {exc!r}") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BenchError(f"checkpoint {directory}: weights do not match config.json: {exc}") from None
        frozen(model)
        self._install(config, model, lm_tok, enc_tok)
        self._state = "trained"
        self.checkpoint = str(directory)

    def _extra_files(self) -> dict[str, str | bytes]:
        files: dict[str, str | bytes] = {ENCODER_TOKENIZER_FILE: self.encoder_tokenizer.to_str()}
        if self.tok.own:
            files[TOKENIZER_FILE] = self.tok.tokenizer.to_str()
        return files

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        save_checkpoint(directory, self.model, self.config, self._extra_files())
        if not self.tok.own:
            self.tok.tokenizer.save_pretrained(str(directory / LM_TOKENIZER_DIR))

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        """The hash of the checkpoint files these weights are (or would be, once saved); equal to
        :func:`quick_fingerprint` of a checkpoint. Untrained models are named by how they were made."""
        if self._state in ("lazy", "lazy-built"):
            ident = {"model": MODEL_NAME, "preset": self.preset, "format_version": FORMAT_VERSION}
            return stable_hash({"random-init": ident, "seed": self.seed})
        if self._state == "on-base":
            return stable_hash({"untrained-on-base": self.config, "seed": self.seed})
        if self.checkpoint is not None:
            return checkpoint_fingerprint(self.checkpoint)
        if not self.tok.own:  # the transformers tokenizer's files exist only once saved
            return stable_hash(
                {"unsaved": self.config, "weights": bytes_fingerprint([("w", state_dict_bytes(self.model))])}
            )
        return bytes_fingerprint(
            [
                (WEIGHTS_FILE, state_dict_bytes(self.model)),
                (CONFIG_FILE, json.dumps(dict(self.config), indent=2, sort_keys=True).encode()),
                (ENCODER_TOKENIZER_FILE, self.encoder_tokenizer.to_str().encode("utf-8")),
                (TOKENIZER_FILE, self.tok.tokenizer.to_str().encode("utf-8")),
            ]
        )

    def num_parameters(self) -> int | None:
        if self._model is None:
            return None
        return sum(p.numel() for p in self._model.parameters())

    def describe(self) -> dict[str, Any]:
        if self._model is None:
            return {"kind": "generative (decoder features)", "preset": self.preset, "trained": False}
        dkam = self.config["dkam"]
        return {
            "kind": "generative (decoder features)",
            "preset": self.preset,
            "checkpoint": self.checkpoint,
            "base": self.base_dir,
            "trained": self._state == "trained",
            "features": self.config["features"],
            "prompt": self.config["image_prompt"] is not None,
            "special_tokens": {"image": self.config["n_img_tokens"], "text": self.config["n_txt_tokens"]},
            "feature_layer": self.config["feature_layer"],
            "dkam": {k: dkam[k] for k in ("enabled", "library", "source")} | {"categories": len(dkam["names"])},
            "embed_dim": self.embed_dim,
            "image_size": self.config["base"]["encoder"]["vision"]["image_size"],
            "language_model": {k: self.config["base"]["lm"].get(k) for k in ("hidden_size", "num_hidden_layers")},
            "parameters": self.num_parameters(),
            "training": self.config.get("train"),
        }

    # ------------------------------------------------------------------ sequences

    def _layout(self, branch: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed image-branch frame ``[1, L]`` (ids, kinds), built once."""
        if branch not in self._layouts:
            n_image = int(self.config["base"]["encoder"]["vision"]["image_size"]) // int(
                self.config["base"]["encoder"]["vision"]["patch_size"]
            )
            ids, kinds = branch_layout(
                self.tok, self.config["image_prompt"], int(self.config["n_img_tokens"]), n_image=n_image * n_image
            )
            self._layouts[branch] = (torch.tensor([ids]), torch.tensor([kinds]))
        return self._layouts[branch]

    def _text_rows(self, texts: Sequence[str], sentences: bool | None = None) -> dict[str, torch.Tensor]:
        """The text branch's input for ``texts``: ``ids``/``kinds`` ``[U, L]`` of the distinct units (each text,
        or each sentence with ``text_pooling="sentences"``; a unit repeated in the batch runs once), and per unit
        occurrence its row (``unit``) and its text (``owner``)."""
        if sentences is None:
            sentences = self.config.get("text_pooling") == "sentences"
        units, owner = cb.text_units(texts, sentences)
        distinct = list(dict.fromkeys(units))
        where = {u: k for k, u in enumerate(distinct)}
        limit = int(self.config["max_text_tokens"])
        n_special = int(self.config["n_txt_tokens"])
        prompt = self.config["text_prompt"]
        rows = [branch_layout(self.tok, prompt, n_special, self.tok.encode(u)[:limit]) for u in distinct]
        ids, kinds = pad_rows(rows, self.tok.pad_id)
        return {
            "ids": ids,
            "kinds": kinds,
            "unit": torch.tensor([where[u] for u in units], dtype=torch.long),
            "owner": torch.tensor(owner, dtype=torch.long),
        }

    def _check_image_layout(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, kinds = self._layout("image")
        if int((kinds == IMAGE).sum()) != patches.shape[1]:  # a non-square grid: rebuild for this size
            ids_l, kinds_l = branch_layout(
                self.tok, self.config["image_prompt"], int(self.config["n_img_tokens"]), n_image=patches.shape[1]
            )
            ids, kinds = torch.tensor([ids_l]), torch.tensor([kinds_l])
        return ids.to(patches.device), kinds.to(patches.device)

    # ------------------------------------------------------------------ embed

    @property
    def embed_dim(self) -> int:
        _ = self.model
        k = int(self.config["embed_dim"])
        return 2 * k if self.config["features"] == "both" else k

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        _ = self.model
        return self.preprocessor([as_pil(im) for im in images])

    def image_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed images -> projected (``X_g``, ``X_l``) ``[B, K]`` each (not normalised)."""
        model = self.model
        patches = model.mllm.patch_features(x)
        ids, kinds = self._check_image_layout(patches)
        g, loc = model.image_hidden(patches, ids, kinds)
        return model.img_head(g), model.img_head(loc)

    def text_features(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> projected (``Y_g``, ``Y_l``) ``[B, K]`` each (not normalised)."""
        rows = self._text_rows(texts)
        ids, kinds = rows["ids"].to(self.device), rows["kinds"].to(self.device)
        return self.model.text_projected(ids, kinds, rows["unit"], rows["owner"], len(texts))

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        self.model.eval()
        out = [np.zeros((0, self.embed_dim), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(images, self.batch_size):
                g, loc = self.image_features(self.preprocess(chunk).to(self.device))
                out.append(joint_embedding(g, loc, self.config["features"], image=True).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise BenchError("encode_texts() expects a sequence of strings, not a single string")
        self.model.eval()
        out = [np.zeros((0, self.embed_dim), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(texts, self.batch_size):
                g, loc = self.text_features([str(t) for t in chunk])
                out.append(joint_embedding(g, loc, self.config["features"], image=False).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ backbone

    def image_backbone(self) -> tuple[nn.Module, int]:
        """A copy of the image branch: ``module(preprocess(images)) -> [N, D]``, the pooled decoder states at the
        ``<ImgCls>`` tokens (``AvgPool(H_img^global)``, before ``gamma_img``). A copy, so fine-tuning it changes
        neither this adapter's embeddings nor its fingerprint."""
        ids, kinds = self._layout("image")
        module = _ImageBranch(copy.deepcopy(self.model), ids, kinds).to(self.device).eval()
        return module, module.feature_dim

    # ------------------------------------------------------------------ generate

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """LLaVA-style generation with the (DFAT-tuned) decoder, as ``llava-rad`` generates; report-generation
        requests get the prompt the foundation was fine-tuned with."""
        limit = self.max_new_tokens_override or int(self.config["base"]["max_new_tokens"])
        return lr.generate_with(
            self.model.mllm,
            self.tok,
            self.preprocess,
            requests,
            prompt_of=lambda r: lr.request_prompt(r, "native"),
            batch_size=self.batch_size,
            max_new_limit=limit,
        )

    # ------------------------------------------------------------------ DKAM

    def describe_categories(self, names: Sequence[str], max_new_tokens: int) -> dict[str, str]:
        """Eq. 11: the foundation model's own description of each category (text-only, greedy)."""

        requests = [
            GenerationRequest(images=(), prompt=RADZ_DESCRIBE.format(name=n.lower()), max_new_tokens=max_new_tokens)
            for n in names
        ]
        texts = self.generate(requests)
        return {n: (" ".join(t.split()) or n) for n, t in zip(names, texts, strict=True)}

    def _repository(self, names: Sequence[str], descriptions: Mapping[str, str]) -> torch.Tensor:
        """The fixed DKAM repository ``[N, D]``: mean decoder state (``feature_layer``) over ``<s> name: text``."""
        limit = int(self.config["max_text_tokens"])
        rows = []
        for n in names:
            ids = [self.tok.bos_id, *self.tok.encode(f"{n}: {descriptions[n]}")[: limit - 1]]
            rows.append((ids, [LOCAL] * len(ids)))
        out = []
        model = self.model.eval()
        with torch.inference_mode():
            for chunk in batched(rows, self.batch_size):
                ids, kinds = pad_rows(chunk, self.tok.pad_id)
                ids, kinds = ids.to(self.device), kinds.to(self.device)
                emb = model.mllm.lm.get_input_embeddings()(ids)
                out.append(model.decoder_features(emb, kinds)[1].float().cpu())
        return torch.cat(out)

    # ------------------------------------------------------------------ train

    def fit(self, train_data: Sequence[Sample], config: Mapping[str, Any]) -> None:
        """DFAT (+ DKAM) on image-report pairs. Config keys: ``_FIT_KEYS`` (module docstring)."""
        config = dict(config or {})
        unknown = sorted(set(config) - set(_FIT_KEYS))
        if unknown:
            raise BenchError(
                f"{MODEL_NAME}.fit: unknown config key(s) {', '.join(unknown)}; accepted: {', '.join(_FIT_KEYS)}"
            )
        preset = _check_preset(config.get("preset") or self.preset)
        p = PRESETS[preset]
        hp = {**p["train"], **{k: v for k, v in config.items() if k in p["train"]}}
        try:
            for k in _INT_KEYS:
                hp[k] = int(hp[k])
            for k in ("lr", "weight_decay", "warmup_ratio", "lora_dropout", "tau", "lambda_ca"):
                hp[k] = float(hp[k])
            hp["feature_layer"] = int(hp["feature_layer"])
        except (TypeError, ValueError) as exc:
            raise BenchError(f"{MODEL_NAME}.fit: bad numeric option: {exc}") from None
        for k in ("epochs", "batch_size", "grad_accum", "lora_r", "lora_alpha", "n_img_tokens", "n_txt_tokens"):
            if hp[k] <= 0:
                raise BenchError(f"{MODEL_NAME}.fit: {k} must be positive, got {hp[k]}")
        if hp["tau"] <= 0 or hp["lr"] <= 0:
            raise BenchError(f"{MODEL_NAME}.fit: tau and lr must be positive")
        if not 0.0 <= hp["lambda_ca"] <= 1.0:
            raise BenchError(f"{MODEL_NAME}.fit: lambda_ca must lie in [0, 1], got {hp['lambda_ca']}")
        hp["sentence_captions"] = _as_bool("sentence_captions", hp["sentence_captions"])
        features = _choice("features", config.get("features", "both"), FEATURES)
        text_pooling = _choice("text_pooling", config.get("text_pooling", p["text_pooling"]), TEXT_POOLING)
        library = _choice("library", config.get("library", "disease"), LIBRARIES)
        use_prompt = _as_bool("prompt", config.get("prompt", True))
        use_dkam = _as_bool("dkam", config.get("dkam", True))
        descriptions_opt = str(config.get("descriptions") or "generate")
        seed = int(config.get("seed", self.seed))
        device = resolve_device(config["device"]) if config.get("device") else self.device
        log: Callable[[str], None] = config.get("log") or (lambda _m: None)
        samples = [s for s in train_data if s.images and (s.report or lr.findings_of(s))]
        if len(samples) < 2:
            raise BenchError(
                f"{MODEL_NAME}.fit needs at least 2 samples with an image and a report, got {len(samples)}"
            )
        val = [s for s in (config.get("val_data") or []) if s.images and (s.report or lr.findings_of(s))]
        base = config.get("base") or self.base_dir
        if not base and preset != "tiny":
            raise BenchError(
                f"{MODEL_NAME} preset {preset!r} starts from a trained foundation MLLM: give base=DIR "
                "(a llava-rad checkpoint trained with its paper preset, standing in for LLaVA-Med)"
            )
        t0 = time.perf_counter()
        summary: dict[str, Any] = {"samples": len(samples), "skipped": len(train_data) - len(samples)}

        # ---- DKAM: the library, each pair's categories, the descriptions when they come from a file
        dkam: dict[str, Any] = dict(_NO_DKAM)
        targets: np.ndarray | None = None
        val_targets: np.ndarray | None = None
        descriptions: dict[str, str] | None = None
        if use_dkam:
            if library == "disease":
                names, targets, target_source = disease_targets(samples)
                val_targets = self._val_disease_targets(val, names, target_source)
            else:
                names = list(read_library(LIBRARY_FILES["entity"]))
                targets = entity_targets([s.report or lr.findings_of(s) for s in samples], names)
                val_targets = entity_targets([s.report or lr.findings_of(s) for s in val], names) if val else None
                target_source = "entity rules"
            if descriptions_opt == "builtin":
                file = LIBRARY_FILES[library]
                descriptions = lookup_descriptions(read_library(file), names, file.name)
            elif descriptions_opt != "generate":
                descriptions = lookup_descriptions(read_library(descriptions_opt), names, descriptions_opt)
            dkam = {
                "enabled": True,
                "library": library,
                "names": names,
                "targets": target_source,
                "source": descriptions_opt,
                "descriptions": {},
            }

        # ---- the foundation MLLM
        if base:
            foundation = self._load_base(str(base), device, seed)
            summary["base"] = {"checkpoint": str(base), "fingerprint": foundation.fingerprint()}
        else:
            log(f"{MODEL_NAME}: no base=DIR given: training a llava-rad {p['base_preset']} foundation first")
            foundation = lr.LlavaRad(preset=p["base_preset"], device=str(device), seed=seed)
            foundation.fit(
                train_data, {"seed": seed, "device": str(device), "val_data": config.get("val_data"), "log": log}
            )
            summary["base"] = {"trained_here": p["base_preset"], "fingerprint": foundation.fingerprint()}
        self.seed, self.preset, self.device = seed, preset, device
        self.base_dir = str(base) if base else None
        self._wrap(foundation, hp, features, use_prompt, dkam, text_pooling)
        self._state = "training"
        model = self.model
        del foundation
        if use_dkam:
            names = dkam["names"]
            if descriptions is None:
                log(f"{MODEL_NAME} DKAM: the foundation model describes {len(names)} {library} categories")
                descriptions = self.describe_categories(names, int(p["description_tokens"]))
            self.config["dkam"]["descriptions"] = descriptions
            with torch.no_grad():
                model.library.copy_(self._repository(names, descriptions).to(model.library.device))
            summary["dkam"] = {
                "categories": len(names),
                "pairs_with_a_category": int((targets.sum(axis=1) > 0).sum()) if targets is not None else 0,
            }

        # ---- data: frozen patch features (or images) and text token ids
        pre = self.preprocessor
        vision = self.config["base"]["encoder"]["vision"]
        n_patch = (int(vision["image_size"]) // int(vision["patch_size"])) ** 2
        cache = len(samples) * n_patch * model.mllm.encoder.visual.width * 4 <= _FEATURE_CACHE_BYTES
        features_t = self._patch_features(samples, device) if cache else None
        val_features = self._patch_features(val, device) if (cache and val) else None
        reports = [s.report or lr.findings_of(s) for s in samples]
        val_reports = [s.report or lr.findings_of(s) for s in val]
        captions = _as_bool("sentence_captions", hp["sentence_captions"])
        shared_rows = self.config["text_pooling"] == "sentences"
        tau, lam = float(hp["tau"]), float(hp["lambda_ca"])
        targets_t = torch.from_numpy(targets) if targets is not None else None
        val_targets_t = torch.from_numpy(val_targets) if val_targets is not None else None

        def caption_positives(rows: Mapping[str, torch.Tensor], n: int) -> torch.Tensor:
            """``[n, U]``: distinct sentence ``u`` occurs in text ``i`` (each is a caption of its images)."""
            pos = torch.zeros(n, rows["ids"].shape[0], dtype=torch.bool)
            pos[rows["owner"], rows["unit"]] = True
            return pos

        def text_batch(texts: list[str]) -> dict[str, torch.Tensor]:
            rows = self._text_rows(texts)
            same = torch.tensor([[a == c for c in texts] for a in texts])
            out = {f"txt_{k}": v for k, v in rows.items()} | {"positives": same}
            if captions:  # every distinct sentence of the batch's texts is also a caption of its images
                cap = rows if shared_rows else self._text_rows(texts, sentences=True)
                out["cap_positives"] = caption_positives(cap, len(texts))
                if not shared_rows:
                    out |= {"cap_ids": cap["ids"], "cap_kinds": cap["kinds"]}
            return out

        def image_part(idx: list[int], feats: torch.Tensor | None, data: list[Sample]) -> dict[str, torch.Tensor]:
            if feats is not None:
                return {"patches": feats[idx]}
            return {"images": pre([data[i].image for i in idx])}

        batch_size = min(int(hp["batch_size"]), len(samples))
        steps = max(1, len(samples) // batch_size)

        def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
            gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
            order = torch.randperm(len(samples), generator=gen).tolist()
            for b in range(steps):
                idx = order[b * batch_size : (b + 1) * batch_size]
                batch = {**image_part(idx, features_t, samples), **text_batch([reports[i] for i in idx])}
                if targets_t is not None:
                    batch["targets"] = targets_t[idx]
                yield batch

        stage = _DFATStage(model, hp)
        n_trainable = sum(q.numel() for q in stage.parameters() if q.requires_grad)

        def loss_fn(m: _DFATStage, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            net = m.model
            patches = batch["patches"] if "patches" in batch else net.mllm.patch_features(batch["images"])
            ids, kinds = self._check_image_layout(patches)
            xg_h, xl_h = net.image_hidden(patches, ids, kinds)
            xg, xl = F.normalize(net.img_head(xg_h), dim=-1), F.normalize(net.img_head(xl_h), dim=-1)
            n = xg.shape[0]
            rows_g, rows_l = net.text_rows(batch["txt_ids"], batch["txt_kinds"])
            yg = F.normalize(pool_rows(rows_g[batch["txt_unit"]], batch["txt_owner"], n), dim=-1)
            yl = F.normalize(pool_rows(rows_l[batch["txt_unit"]], batch["txt_owner"], n), dim=-1)

            def alignment(tg: torch.Tensor, tl: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
                if features == "both":
                    return cross_alignment_loss(xg, xl, tg, tl, tau, pos, reduction="mean")
                if features == "global":
                    return info_nce(xg, tg, tau, pos, reduction="mean")
                return info_nce(xl, tl, tau, pos, reduction="mean")

            l_ca = alignment(yg, yl, batch["positives"])
            out = {"l_ca_report": l_ca.detach()}
            if "cap_positives" in batch:
                if "cap_ids" in batch:
                    rows_g, rows_l = net.text_rows(batch["cap_ids"], batch["cap_kinds"])
                l_cap = alignment(F.normalize(rows_g, dim=-1), F.normalize(rows_l, dim=-1), batch["cap_positives"])
                out["l_ca_sentences"] = l_cap.detach()
                l_ca = 0.5 * (l_ca + l_cap)
            out["l_ca"] = l_ca.detach()
            l_cg = None
            if "targets" in batch:
                a, b = (xl, yl) if features == "local" else (xg, yg)
                l_cg = category_guided_loss(a, b, net.descriptions(), batch["targets"], tau, reduction="mean")
                out["l_cg"] = l_cg.detach()
            out["loss"] = total_loss(l_ca, l_cg, lam)
            return out

        validate = None
        if val:

            def validate(m: _DFATStage, epoch: int) -> dict[str, float]:
                total, n = 0.0, 0
                for start in range(0, len(val), batch_size):
                    idx = list(range(start, min(start + batch_size, len(val))))
                    if len(idx) < 2:
                        continue
                    batch = {**image_part(idx, val_features, val), **text_batch([val_reports[i] for i in idx])}
                    if val_targets_t is not None:
                        batch["targets"] = val_targets_t[idx]
                    batch = {k: v.to(device) for k, v in batch.items()}
                    total += float(loss_fn(m, batch)["loss"]) * len(idx)
                    n += len(idx)
                return {"loss": total / max(n, 1)}

        log(
            f"{MODEL_NAME} DFAT: {len(samples)} pairs, {hp['epochs']} epochs of {steps} steps, features={features}, "
            f"prompt={use_prompt}, dkam={'off' if not use_dkam else library}, {n_trainable} trainable parameters"
        )
        tcfg = TrainConfig(
            epochs=int(hp["epochs"]),
            lr=float(hp["lr"]),
            weight_decay=float(hp["weight_decay"]),
            warmup_ratio=float(hp["warmup_ratio"]),
            grad_accum=int(hp["grad_accum"]),
            max_grad_norm=1.0,
            seed=seed,
            val_mode="min",
            log_every=max(1, steps // 2) if config.get("log") else 0,
        )
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
        summary.update(
            epochs=int(hp["epochs"]),
            steps=result.steps,
            trainable_parameters=n_trainable,
            final_loss=result.final_loss,
            lora={"r": hp["lora_r"], "alpha": hp["lora_alpha"], "target_modules": lr.LORA_TARGETS, "merged": True},
        )
        if result.best_metric is not None:
            summary.update(best_val_loss=result.best_metric, best_epoch=result.best_epoch)
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        self.config = _jsonable({**self.config, "train": {**hp, "seed": seed, **summary}})
        self._model = model.to(device).eval()
        self._state = "trained"
        self.checkpoint = None
        self.training_summary = summary
        log(f"{MODEL_NAME}: trained in {summary['seconds']}s")

    @staticmethod
    def _val_disease_targets(val: Sequence[Sample], names: list[str], source: str) -> np.ndarray | None:
        if not val:
            return None
        if source == "labels":
            return np.array([[float(s.labels.get(n) in (1, -1)) for n in names] for s in val], dtype=np.float32)
        return disease_targets(val)[1]

    def _patch_features(self, samples: Sequence[Sample], device: torch.device) -> torch.Tensor:
        """Frozen-encoder patch tokens ``[N, P, width]`` (CPU float32), computed once for all epochs."""
        mllm = self.model.mllm
        mllm.encoder.eval()
        out = []
        with torch.no_grad():
            for chunk in batched([s.image for s in samples], 64):
                out.append(mllm.patch_features(self.preprocessor(chunk).to(device)).float().cpu())
        return torch.cat(out)


_NO_DKAM: dict[str, Any] = {
    "enabled": False,
    "library": None,
    "names": [],
    "targets": None,
    "source": None,
    "descriptions": {},
}


class _ImageBranch(nn.Module):
    """``forward(images) -> [N, D]``: the pooled penultimate-layer states at the ``<ImgCls>`` tokens."""

    def __init__(self, model: LlavaRadZModel, ids: torch.Tensor, kinds: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("ids", ids.clone(), persistent=False)
        self.register_buffer("kinds", kinds.clone(), persistent=False)
        self.feature_dim = lm_hidden_size(model.mllm.lm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.model.mllm.patch_features(x)
        return self.model.image_hidden(patches, self.ids, self.kinds)[0]
