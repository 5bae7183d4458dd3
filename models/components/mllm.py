"""A LLaVA-style multimodal language model: image patch features -> projector -> causal LM.

The pieces the LLaVA-family reference models (``llava-rad``, ``llava-radz``) share:

* :func:`build_causal_lm` - a transformers ``LlamaForCausalLM`` from a small dict (random weights; a
  tiny one for CPU, a Vicuna-7B-sized one for the ``paper`` presets), or a local checkpoint folder;
* :class:`LMTokenizer` - one interface over our own subword tokenizer and a transformers tokenizer
  (``encode`` without special tokens, ``decode``, BOS/EOS/PAD ids);
* :func:`assemble` - sequences made of embedding chunks (BOS, projected image tokens, prompt,
  learned query tokens, target) padded into ``inputs_embeds`` / ``attention_mask`` / ``labels``;
* :func:`lm_generate` - greedy (or sampled) decoding from left-padded ``inputs_embeds`` with the
  KV cache of transformers' ``generate``.

The conversation layout follows LLaVA's Vicuna template: ``<s> USER: <image>\\n{prompt} ASSISTANT:
{answer}</s>``; with no prompt (LLaVA-Rad's alignment stage) it is ``<s> <image> ASSISTANT: {answer}</s>``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.interfaces import BenchError

IGNORE_INDEX = -100
USER_PREFIX = "USER:"
ANSWER_PREFIX = "ASSISTANT:"


# --------------------------------------------------------------------------- language model


@dataclass
class CausalLMConfig:
    """Architecture of a Llama-style decoder (what ``LlamaConfig`` needs)."""

    vocab_size: int = 2000
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_causal_lm(config: CausalLMConfig | dict[str, Any], ids: dict[str, int] | None = None) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` (``ids``: pad/bos/eos token ids)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = config.to_dict() if isinstance(config, CausalLMConfig) else dict(config)
    ids = ids or {}
    llama = LlamaConfig(
        **cfg,
        pad_token_id=ids.get("pad"),
        bos_token_id=ids.get("bos"),
        eos_token_id=ids.get("eos"),
    )
    return LlamaForCausalLM(llama)


def load_causal_lm(directory: str | Path) -> nn.Module:
    """A local transformers causal LM folder (e.g. Vicuna-7B-v1.5); nothing is downloaded."""
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise BenchError(f"language model folder {directory} has no config.json (expected a save_pretrained folder)")
    try:
        return AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot load the language model in {directory}: {exc}") from None


def lm_hidden_size(lm: nn.Module) -> int:
    return int(lm.get_input_embeddings().weight.shape[1])


# --------------------------------------------------------------------------- tokenizer


class LMTokenizer:
    """Our ``TextTokenizer`` ([CLS] as BOS, [SEP] as EOS) or a transformers tokenizer, one interface."""

    def __init__(self, tokenizer: Any) -> None:
        from models.components.tokenizer import TextTokenizer

        self.own = isinstance(tokenizer, TextTokenizer)
        self.tokenizer = tokenizer
        if self.own:
            self.bos_id, self.eos_id, self.pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
        else:
            bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
            if bos is None or eos is None:
                raise BenchError("the language model's tokenizer has no BOS/EOS token")
            pad = tokenizer.pad_token_id
            self.bos_id, self.eos_id, self.pad_id = int(bos), int(eos), int(pad if pad is not None else eos)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size if self.own else len(self.tokenizer))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        if self.own:
            ids = self.tokenizer.encode_ids(text)
            return [i for i in ids if i not in (self.tokenizer.cls_id, self.tokenizer.sep_id)]
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        if self.own:
            return self.tokenizer.decode(ids)
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)).strip()


def capitalize_sentences(text: str) -> str:
    """Upper-case the first letter of each sentence (our tokenizer lower-cases everything)."""
    out, start = [], True
    for ch in text:
        if start and ch.isalpha():
            out.append(ch.upper())
            start = False
        else:
            out.append(ch)
            if ch in ".!?":
                start = True
    return "".join(out)


# --------------------------------------------------------------------------- sequences


def conversation_prefix(tok: LMTokenizer, prompt: str | None) -> tuple[list[int], list[int]]:
    """Token ids before and after the image in the LLaVA/Vicuna layout, answer marker included.

    ``<s> USER: <image>\\n{prompt} ASSISTANT:`` -> ``([bos, USER:], [\\n prompt ASSISTANT:])``;
    with no prompt: ``([bos], [ASSISTANT:])``.
    """
    if prompt:
        return [tok.bos_id, *tok.encode(USER_PREFIX)], tok.encode(f"{prompt.strip()} {ANSWER_PREFIX}")
    return [tok.bos_id], tok.encode(ANSWER_PREFIX)


def assemble(
    chunks: Sequence[Sequence[torch.Tensor]],
    labels: Sequence[Sequence[torch.Tensor | None]] | None = None,
    pad_left: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pad sequences of embedding chunks into a batch.

    ``chunks[b]`` is a list of ``[n_i, D]`` tensors (token embeddings, image tokens, learned
    queries) concatenated in order; ``labels[b][i]`` is a ``[n_i]`` long tensor of target ids for
    chunk ``i`` or None (no loss on it). Returns ``inputs_embeds [B, L, D]``, ``attention_mask
    [B, L]`` and ``labels [B, L]`` (-100 where no loss; None when ``labels`` is None).
    Padding goes on the right for training and on the left for generation (``pad_left``).
    """
    seqs = [torch.cat(list(c), dim=0) for c in chunks]
    if not seqs:
        raise BenchError("assemble() needs at least one sequence")
    length = max(s.shape[0] for s in seqs)
    ref = seqs[0]
    embeds = ref.new_zeros((len(seqs), length, ref.shape[1]))
    mask = torch.zeros((len(seqs), length), dtype=torch.long, device=ref.device)
    out_labels = torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long, device=ref.device) if labels else None
    for b, seq in enumerate(seqs):
        n = seq.shape[0]
        start = length - n if pad_left else 0
        embeds[b, start : start + n] = seq
        mask[b, start : start + n] = 1
        if out_labels is not None and labels is not None:
            pos = start
            for chunk, lab in zip(chunks[b], labels[b], strict=True):
                if lab is not None:
                    out_labels[b, pos : pos + chunk.shape[0]] = lab.to(ref.device)
                pos += chunk.shape[0]
    return embeds, mask, out_labels


def shifted_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position ``t`` predicts ``labels[t + 1]`` (-100 ignored)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    if not (shift_labels != IGNORE_INDEX).any():
        raise BenchError("no target tokens in the batch: every label is masked")
    return nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def target_lm_loss(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`shifted_lm_loss` of a causal LM over ``inputs_embeds``, with the output head applied only from
    the position before the batch's first target on (the image and prompt positions predict nothing: the
    vocabulary projection and its softmax there are wasted work). The same value as the full logits give."""
    targets = labels != IGNORE_INDEX
    if not bool(targets.any()):
        raise BenchError("no target tokens in the batch: every label is masked")
    first = int(targets.int().argmax(dim=1)[targets.any(dim=1)].min())
    keep = labels.shape[1] - max(first - 1, 0)
    logits = lm(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=keep).logits
    return shifted_lm_loss(logits, labels[:, -keep:])


@torch.inference_mode()
def lm_generate(
    lm: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[int]]:
    """New token ids per row (EOS and what follows removed), from left-padded embeddings."""
    if max_new_tokens <= 0:
        return [[] for _ in range(inputs_embeds.shape[0])]
    kwargs: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(seed)
        kwargs = {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p)}
    # The model's generation config may carry defaults (e.g. a checkpoint's sampling settings);
    # a copy with only what this call asks for makes decoding depend on the request alone.
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=int(max_new_tokens),
        eos_token_id=int(eos_id),
        pad_token_id=int(pad_id),
        **kwargs,
    )
    out = lm.generate(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        generation_config=config,
    )
    rows: list[list[int]] = []
    for row in out.tolist():
        if eos_id in row:
            row = row[: row.index(eos_id)]
        rows.append([t for t in row if t != pad_id])
    return rows


def frozen(module: nn.Module) -> nn.Module:
    """``module`` with every parameter's ``requires_grad`` off (returned for chaining)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def merged_lora_copy(lm: nn.Module) -> nn.Module:
    """A plain copy of a peft-wrapped LM with the LoRA deltas merged into its weights."""
    return copy.deepcopy(lm).merge_and_unload()
