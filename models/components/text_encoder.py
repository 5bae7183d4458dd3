"""A small transformer text encoder: token + learned position embeddings, pre-norm blocks.

``forward(input_ids [B, L], attention_mask [B, L]) -> (pooled [B, width], states [B, L, width])``.
Padding positions are excluded from attention (keys) and from mean pooling. Pooling:

* ``"cls"``  - the first token (the tokenizer puts [CLS] there),
* ``"eos"``  - the last non-padding token ([SEP]; CLIP-style, pairs naturally with ``causal=True``),
* ``"mean"`` - mean over non-padding tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from bench.interfaces import BenchError
from models.components.vit import TransformerBlock, init_weights


@dataclass
class TextEncoderConfig:
    vocab_size: int = 30522
    max_length: int = 77
    width: int = 512
    depth: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    pool: str = "cls"  # "cls" | "eos" | "mean"
    causal: bool = False
    pad_id: int = 0
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class TextTransformer(nn.Module):
    def __init__(self, config: TextEncoderConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = TextEncoderConfig(**{**(config.to_dict() if config else {}), **overrides})
        if cfg.pool not in ("cls", "eos", "mean"):
            raise BenchError(f"pool must be 'cls', 'eos' or 'mean', got {cfg.pool!r}")
        self.config = cfg
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_length, cfg.width))
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.01, a=-0.02, b=0.02)
        for block in self.blocks:
            for lin in (block.attn.proj, block.mlp.fc2):
                nn.init.trunc_normal_(lin.weight, std=0.02 / math.sqrt(2 * max(cfg.depth, 1)))

    @property
    def width(self) -> int:
        return self.config.width

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if input_ids.ndim != 2:
            raise BenchError(f"expected input_ids [B, L], got shape {tuple(input_ids.shape)}")
        b, n = input_ids.shape
        if n > cfg.max_length:
            raise BenchError(f"sequence length {n} exceeds the encoder's max_length {cfg.max_length}")
        if attention_mask is None:
            attention_mask = input_ids != cfg.pad_id
        keep = attention_mask.to(torch.bool)
        # Never leave a row without any key to attend to (softmax over nothing gives NaN).
        keep = keep.clone()
        keep[:, 0] = True
        x = self.token_embed(input_ids) + self.pos_embed[:, :n]
        mask = keep[:, None, None, :]  # [B, 1, 1, L]: True = attend
        if cfg.causal:
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            mask = mask & causal[None, None]
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        x = self.norm(x)
        if cfg.pool == "cls":
            pooled = x[:, 0]
        elif cfg.pool == "eos":
            last = keep.long().sum(dim=1) - 1
            pooled = x[torch.arange(b, device=x.device), last]
        else:
            w = keep.to(x.dtype).unsqueeze(-1)
            pooled = (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return pooled, x
