"""Projection heads: linear and 2-layer MLP with GELU (LLaVA's ``mlp2x_gelu``)."""

from __future__ import annotations

import torch
from torch import nn

from bench.interfaces import BenchError

PROJECTOR_KINDS = ("linear", "mlp2x_gelu")


class LinearProjector(nn.Module):
    """``y = x W (+ b)``; CLIP uses it without bias to map pooled features to the shared space."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = False) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)
        nn.init.normal_(self.linear.weight, std=in_dim**-0.5)
        if bias:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MLPProjector(nn.Module):
    """``Linear(in, hidden) -> GELU -> Linear(hidden, out)``; hidden defaults to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.in_dim, self.out_dim = in_dim, out_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim, bias=bias)
        for lin in (self.fc1, self.fc2):
            nn.init.normal_(lin.weight, std=lin.in_features**-0.5)
            if bias:
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def build_projector(kind: str, in_dim: int, out_dim: int, **kwargs) -> nn.Module:
    """``kind``: "linear" or "mlp2x_gelu" (alias "mlp")."""
    if kind == "linear":
        return LinearProjector(in_dim, out_dim, **kwargs)
    if kind in ("mlp2x_gelu", "mlp"):
        return MLPProjector(in_dim, out_dim, **kwargs)
    raise BenchError(f"unknown projector kind {kind!r}: expected one of {', '.join(PROJECTOR_KINDS)}")
