"""PIL image -> normalised float tensor, and light training augmentation with torch ops only.

``ImagePreprocessor`` turns PIL images (or ImageRefs / paths) into ``[N, C, H, W]`` float
tensors: convert to grayscale (C=1) or RGB (C=3), scale to [0, 1] (8- and 16-bit inputs),
resize to the model size (``"resize"`` squashes, ``"center_crop"`` resizes the short side then
crops), and normalise with the stored mean/std. ``load`` stops before normalisation so
augmentation can run in [0, 1] pixel space, then ``normalize`` finishes the job.

``TrainAugment`` applies, per image: random resized crop (area scale 0.8-1.0 by default), small
rotation and shift (one affine warp through ``F.affine_grid``/``F.grid_sample``), then
brightness/contrast jitter. No torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.interfaces import BenchError, as_pil

RESIZE_MODES = ("resize", "center_crop")


def pil_to_float(image: Any, channels: int) -> torch.Tensor:
    """A PIL image -> float32 tensor ``[channels, H, W]`` in [0, 1]."""
    mode = image.mode
    if mode in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        target = "L" if channels == 1 else "RGB"
        arr = np.asarray(image.convert(target), dtype=np.float32) / 255.0
    elif mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float32)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        else:  # 32-bit int or float: rescale the observed range
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        if channels == 3:
            arr = np.repeat(arr[..., None], 3, axis=-1)
    else:
        raise BenchError(f"unsupported image mode {mode!r}")
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    return t.contiguous()


@dataclass
class ImagePreprocessor:
    size: int = 224
    channels: int = 1  # 1 = grayscale, 3 = RGB
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    resize_mode: str = "resize"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise BenchError(f"channels must be 1 or 3, got {self.channels}")
        if self.resize_mode not in RESIZE_MODES:
            raise BenchError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) not in (1, self.channels):
                raise BenchError(f"{name} must have 1 or {self.channels} values, got {len(vals)}")
        if any(s <= 0 for s in self.std):
            raise BenchError(f"std values must be positive, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImagePreprocessor:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    def _resize(self, t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        s = self.size
        if self.resize_mode == "center_crop" and h != w:
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            t = _interp(t, nh, nw)
            top, left = (nh - s) // 2, (nw - s) // 2
            return t[:, top : top + s, left : left + s]
        if (h, w) == (s, s):
            return t
        return _interp(t, s, s)

    def load_one(self, image: Any) -> torch.Tensor:
        """One image (PIL, ImageRef or path) -> ``[C, size, size]`` in [0, 1], not normalised."""
        return self._resize(pil_to_float(as_pil(image), self.channels))

    def load(self, images: Sequence[Any]) -> torch.Tensor:
        """Images -> ``[N, C, size, size]`` float32 in [0, 1] (not normalised)."""
        if not len(images):
            return torch.zeros((0, self.channels, self.size, self.size))
        return torch.stack([self.load_one(im) for im in images])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        """Images -> normalised ``[N, C, size, size]`` float32."""
        return self.normalize(self.load(images))


def _interp(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    out = F.interpolate(t.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out.squeeze(0).clamp_(0.0, 1.0)


@dataclass
class TrainAugment:
    """Random resized crop + rotation + shift + brightness/contrast, on ``[N, C, H, W]`` in [0, 1].

    ``scale``: crop area as a fraction of the image; ``ratio``: crop aspect ratio range;
    ``degrees``: max absolute rotation; ``translate``: max shift as a fraction of the size;
    ``brightness``: additive jitter; ``contrast``: multiplicative jitter around the image mean.
    """

    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)
    degrees: float = 7.0
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1

    def affine(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image affine matrices ``[n, 2, 3]`` mapping output to input coordinates in [-1, 1]."""

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=generator)

        area = u(*self.scale)
        log_r = u(math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(log_r)
        cw = torch.sqrt(area * r).clamp(max=1.0)  # crop width as a fraction of the image
        ch = torch.sqrt(area / r).clamp(max=1.0)
        # Crop centre anywhere the crop still fits, plus the extra shift.
        cx = (1 - cw) * u(-1.0, 1.0) + u(-self.translate, self.translate) * 2
        cy = (1 - ch) * u(-1.0, 1.0) + u(-self.translate, self.translate) * 2
        angle = u(-self.degrees, self.degrees) * math.pi / 180.0
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cw * cos
        theta[:, 0, 1] = -ch * sin
        theta[:, 0, 2] = cx
        theta[:, 1, 0] = cw * sin
        theta[:, 1, 1] = ch * cos
        theta[:, 1, 2] = cy
        return theta

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise BenchError(f"expected an image batch [N, C, H, W], got shape {tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return x
        theta = self.affine(n, generator).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        b = (torch.rand(n, generator=generator) * 2 - 1) * self.brightness
        c = 1 + (torch.rand(n, generator=generator) * 2 - 1) * self.contrast
        b = b.to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)
        c = c.to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * c + mean + b
        return out.clamp_(0.0, 1.0)
