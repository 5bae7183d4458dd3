"""A small Vision Transformer (ViT) returning pooled features and patch tokens.

Pre-norm transformer blocks use ``torch.nn.functional.scaled_dot_product_attention``. The
learned position embedding is stored for the configured grid and interpolated (bicubic) when
the input has another size, so a model trained at 224 px can encode 256 px images.

``TransformerBlock`` is shared with :mod:`models.components.text_encoder`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.interfaces import BenchError


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal init for Linear/Embedding weights, He init for 3x3 convs, zeros for biases,
    ones for norms."""
    if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1) and module.kernel_size != module.stride:
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention through ``F.scaled_dot_product_attention`` (fused kernels where available)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise BenchError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and attn_mask is None,
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    ``attn_mask``: boolean ``[B, 1, 1|N, N]`` (True = attend) or an additive float mask.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = MultiHeadSelfAttention(width, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, round(width * mlp_ratio), dropout=dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)
        return x + self.mlp(self.norm2(x))


@dataclass
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    pool: str = "cls"  # "cls" | "mean" | "max" (mean / element-wise max over patch tokens)
    dropout: float = 0.0
    stem: str = "patch"  # "patch": one linear patch projection | "conv": 3x3 stride-2 conv stack
    stem_channels: int = 32  # channels of the first conv of the "conv" stem (doubled per stage)
    stem_full_res: bool = False  # "conv" stem: one extra stride-1 conv at input resolution first

    def to_dict(self) -> dict:
        return asdict(self)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, width: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # [B, D, gh, gw]
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


class ConvStem(nn.Module):
    """Convolutional patch embedding (Xiao et al. 2021, "Early convolutions help transformers see better").

    ``log2(patch_size)`` 3x3 stride-2 convolutions (GroupNorm + GELU) then a 1x1 projection to the
    width: same token grid as a ``patch_size`` patch embedding, with a convolutional inductive bias
    that makes from-scratch training on small data much faster.
    """

    def __init__(self, patch_size: int, in_chans: int, width: int, channels: int = 32, full_res: bool = False) -> None:
        super().__init__()
        stages = int(math.log2(patch_size))
        if 2**stages != patch_size:
            raise BenchError(f"the conv stem needs a power-of-two patch size, got {patch_size}")
        layers: list[nn.Module] = []
        c_in, c_out = in_chans, channels
        if full_res:  # small structures (a few pixels) are seen before the first down-sampling
            layers += [nn.Conv2d(c_in, c_out // 2, kernel_size=3, padding=1, bias=False), nn.GroupNorm(1, c_out // 2)]
            layers.append(nn.GELU())
            c_in = c_out // 2
        for _ in range(stages):
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
                nn.GroupNorm(1, c_out),
                nn.GELU(),
            ]
            c_in, c_out = c_out, min(c_out * 2, width)
        layers.append(nn.Conv2d(c_in, width, kernel_size=1))
        self.patch_size = patch_size
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


class VisionTransformer(nn.Module):
    """ViT: ``forward(images [B, C, H, W]) -> (pooled [B, width], patch_tokens [B, gh*gw, width])``.

    Both outputs come after the final LayerNorm. Inputs with 3 channels are averaged for a
    grayscale model and 1-channel inputs are repeated for an RGB model. H and W must be
    multiples of the patch size; other sizes than ``image_size`` use interpolated position
    embeddings.
    """

    def __init__(self, config: ViTConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = ViTConfig(**{**(config.to_dict() if config else {}), **overrides})
        if cfg.image_size % cfg.patch_size:
            raise BenchError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        if cfg.in_chans not in (1, 3):
            raise BenchError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {cfg.in_chans}")
        if cfg.pool not in ("cls", "mean", "max"):
            raise BenchError(f"pool must be 'cls', 'mean' or 'max', got {cfg.pool!r}")
        if cfg.stem not in ("patch", "conv"):
            raise BenchError(f"stem must be 'patch' or 'conv', got {cfg.stem!r}")
        self.config = cfg
        self.grid = cfg.image_size // cfg.patch_size
        if cfg.stem == "conv":
            self.patch_embed: nn.Module = ConvStem(
                cfg.patch_size, cfg.in_chans, cfg.width, cfg.stem_channels, cfg.stem_full_res
            )
        else:
            self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, cfg.width))
        self.pre_norm = nn.LayerNorm(cfg.width)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)
        # Scale residual output projections by depth (GPT-2 style) for stabler from-scratch training.
        for block in self.blocks:
            for lin in (block.attn.proj, block.mlp.fc2):
                nn.init.trunc_normal_(lin.weight, std=0.02 / math.sqrt(2 * max(cfg.depth, 1)))

    @property
    def width(self) -> int:
        return self.config.width

    def interpolate_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embeddings ``[1, 1 + grid_h*grid_w, width]`` for a ``grid_h x grid_w`` patch grid."""
        if grid_h == self.grid and grid_w == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        d = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False).to(
            self.pos_embed.dtype
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, d)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def _match_channels(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise BenchError(f"expected an image batch [B, C, H, W], got shape {tuple(x.shape)}")
        c = x.shape[1]
        if c == self.config.in_chans:
            return x
        if self.config.in_chans == 1 and c == 3:
            return x.mean(dim=1, keepdim=True)
        if self.config.in_chans == 3 and c == 1:
            return x.expand(-1, 3, -1, -1)
        raise BenchError(f"expected {self.config.in_chans} channel(s), got {c}")

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All normalised tokens ``[B, 1 + gh*gw, width]`` (CLS first)."""
        x = self._match_channels(x)
        p = self.config.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise BenchError(f"image size {tuple(x.shape[-2:])} is not a multiple of patch size {p}")
        tokens, (gh, gw) = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.interpolate_pos_embed(gh, gw)
        tokens = self.pre_norm(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.forward_tokens(x)
        patches = tokens[:, 1:]
        if self.config.pool == "cls":
            pooled = tokens[:, 0]
        elif self.config.pool == "max":  # a finding a few patches wide survives pooling undiluted
            pooled = patches.amax(dim=1)
        else:
            pooled = patches.mean(dim=1)
        return pooled, patches


class PooledImageEncoder(nn.Module):
    """Wraps a VisionTransformer so that ``forward(images) -> pooled [B, width]`` (for probes/fine-tuning)."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit
        self.feature_dim = vit.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)[0]
