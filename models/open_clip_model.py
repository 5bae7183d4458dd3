"""``openclip``: an open_clip model from a local folder (BiomedCLIP-style checkpoints).

``--model-args pretrained=DIR[,device=...,dtype=float32|bfloat16|float16|auto,batch_size=N,text_model=DIR2]``

``DIR`` holds ``open_clip_config.json`` (``{"model_cfg": {...}, "preprocess_cfg": {...}}``, the format
open_clip pushes to the Hugging Face hub) and the weights (``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``). The tokenizer is read from ``DIR`` when it holds Hugging Face
tokenizer files (BiomedCLIP does), else from the config's ``hf_tokenizer_name`` (local HF cache only),
else open_clip's bundled CLIP BPE. A text tower built on a Hugging Face model (``text_cfg.hf_model_name``)
needs that model's config: in the local HF cache, or a local folder given as ``text_model=DIR2``.
Nothing is downloaded (the harness runs with ``HF_HUB_OFFLINE=1``).

open_clip needs torchvision, so it is an optional extra (``pip install 'medvlbench[openclip]'``) and
is imported only when this model is built; without it the model is refused with one message.

* ``embed``: ``encode_image`` / ``encode_text`` with open_clip's own evaluation transform, L2-normalised.
* ``ground``: cosine similarity of the projected patch tokens with the phrase embedding, as in
  :mod:`models.hf_clip`: native open_clip ViTs (tokens after ``ln_post``, times ``proj``) and timm ViT
  towers (``forward_features`` tokens, ``fc_norm`` when the tower pools with it, through the tower's
  ``head``). Other towers (ResNets) are refused when a map is asked for. With the default
  ``resize_mode="shortest"`` (resize + centre crop) the grid is laid on the whole image, NaN outside
  the crop.
* ``backbone``: a float32 copy of ``model.visual`` (its output: the projected image features).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.interfaces import BACKBONE, EMBED, GROUND, BenchError, ImageRef, ModelAdapter, as_pil, batched, stable_hash
from models.hf_clip import (
    DEFAULT_DTYPE,
    DTYPES,
    View,
    checkpoint_dir,
    checkpoint_fingerprint,
    dtype_name,
    parse_batch_size,
    place_map,
    resolve_dtype,
    to_model_mode,
)

MODEL_NAME = "openclip"
ARGS = ("pretrained", "device", "dtype", "batch_size", "text_model")
CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
EXTRA_HINT = "pip install 'medvlbench[openclip]'"
_PRECISION = {"float32": "fp32", "bfloat16": "pure_bf16", "float16": "pure_fp16"}


def import_open_clip() -> Any:
    """The ``open_clip`` module, or one BenchError naming the optional extra."""
    try:
        import open_clip
    except Exception as exc:  # ImportError, or a broken torchvision underneath
        raise BenchError(
            f"model {MODEL_NAME!r} needs the optional package open_clip_torch, which cannot be imported here "
            f"({type(exc).__name__}: {exc}); install the extra: {EXTRA_HINT} (it brings torchvision)"
        ) from None
    return open_clip


def read_config(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, preprocess_cfg)`` from ``open_clip_config.json``."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise BenchError(
            f"{MODEL_NAME}: {directory} has no {CONFIG_FILE}; expected an open_clip folder "
            f"({CONFIG_FILE} + {' or '.join(WEIGHT_FILES)})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{MODEL_NAME}: cannot read {path}: {exc}") from None
    model_cfg = data.get("model_cfg") if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict) or not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise BenchError(f"{MODEL_NAME}: {path} must hold model_cfg with embed_dim, vision_cfg and text_cfg")
    preprocess = data.get("preprocess_cfg") or {}
    if not isinstance(preprocess, dict):
        raise BenchError(f"{MODEL_NAME}: {path}: preprocess_cfg must be an object")
    return model_cfg, preprocess


def weights_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not found:
        raise BenchError(f"{MODEL_NAME}: {directory} holds no weights (expected {' or '.join(WEIGHT_FILES)})")
    return found[0]


def quick_fingerprint(args: Mapping[str, Any]) -> str | None:
    """``OpenClip(**args).fingerprint()`` without importing open_clip or loading weights."""
    pretrained = args.get("pretrained")
    if not pretrained or not Path(str(pretrained)).is_dir():
        return None
    dtype = str(args.get("dtype", DEFAULT_DTYPE)).strip().lower()
    if dtype not in DTYPES or (dtype == "auto" and "device" not in args):
        return None
    if dtype == "auto":
        from models.components.devices import resolve_device

        dtype = dtype_name(resolve_dtype("auto", resolve_device(args["device"])))
    return _fingerprint(Path(str(pretrained)), dtype, args.get("text_model"))


def _fingerprint(directory: Path, dtype: str, text_model: Any) -> str:
    base = checkpoint_fingerprint(directory, dtype, adapter=MODEL_NAME)
    return stable_hash({"checkpoint": base, "text_model": str(text_model) if text_model else None})


def transform_view(preprocess_cfg: Mapping[str, Any], size: Any, height: int, width: int) -> View | None:
    """Where open_clip's eval transform puts the model's input in the original image.

    ``shortest`` (default): torchvision Resize(short side) + CenterCrop; ``squash``: the whole image;
    anything else (``longest``: padded): unknown (None, the map is taken as covering the image).
    """
    mode = preprocess_cfg.get("resize_mode", "shortest")
    if mode == "squash":
        return View(0.0, 0.0, float(height), float(width))
    if mode != "shortest":
        return None
    s = int(size[0] if isinstance(size, (tuple, list)) else size)
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(s * long / short)
    rh, rw = (new_long, s) if width <= height else (s, new_long)
    top, left = round((rh - s) / 2.0), round((rw - s) / 2.0)  # torchvision CenterCrop
    return View(top * height / rh, left * width / rw, s * height / rh, s * width / rw)


class OpenClip(ModelAdapter):
    name = MODEL_NAME
    capabilities = frozenset({EMBED, GROUND, BACKBONE})

    def __init__(
        self,
        pretrained: str | None = None,
        device: str = "auto",
        dtype: str = DEFAULT_DTYPE,
        batch_size: int = 32,
        text_model: str | None = None,
        **kwargs: Any,
    ) -> None:
        open_clip = import_open_clip()
        if kwargs:
            raise BenchError(
                f"{MODEL_NAME}: unknown argument(s) {', '.join(sorted(kwargs))}; accepted: {', '.join(ARGS)}"
            )
        super().__init__(pretrained=pretrained, device=device, dtype=dtype, batch_size=batch_size)
        from models.components.devices import resolve_device

        self.directory = checkpoint_dir(pretrained, MODEL_NAME)
        self.batch_size = parse_batch_size(batch_size, MODEL_NAME)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, MODEL_NAME)
        self.text_model = text_model
        self.model_cfg, self.preprocess_cfg = read_config(self.directory)
        if text_model:
            if not Path(str(text_model)).is_dir():
                raise BenchError(f"{MODEL_NAME}: text_model folder not found: {text_model}")
            self.model_cfg["text_cfg"]["hf_model_name"] = str(text_model)
        self._build(open_clip)
        self._fingerprint: str | None = None
        self._token_cache: tuple[str, Any] | None = None

    # ------------------------------------------------------------------ loading

    def _build(self, open_clip: Any) -> None:
        name = "medvlbench-" + stable_hash(self.model_cfg)
        weights = weights_file(self.directory)
        with tempfile.TemporaryDirectory(prefix="medvlbench-openclip-") as tmp:
            cfg_path = Path(tmp) / f"{name}.json"
            cfg_path.write_text(json.dumps(self.model_cfg), encoding="utf-8")
            open_clip.add_model_config(cfg_path)
            wanted = {
                "image_mean": self.preprocess_cfg.get("mean"),
                "image_std": self.preprocess_cfg.get("std"),
                "image_interpolation": self.preprocess_cfg.get("interpolation"),
                "image_resize_mode": self.preprocess_cfg.get("resize_mode"),
            }
            params = inspect.signature(open_clip.create_model_and_transforms).parameters
            extra = {k: v for k, v in wanted.items() if v is not None and k in params}
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name,
                    pretrained=str(weights),
                    precision=_PRECISION[dtype_name(self.dtype)],
                    device=self.device,
                    **extra,
                )
            except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
                raise BenchError(
                    f"{MODEL_NAME}: cannot build the open_clip model from {self.directory}: {exc}"
                ) from None
        self.model = model.eval()
        self.transform = preprocess
        text_cfg = self.model_cfg["text_cfg"]
        self.context_length = int(text_cfg.get("context_length", 77))
        self.tokenizer = self._tokenizer(open_clip, text_cfg)

    def _tokenizer(self, open_clip: Any, text_cfg: Mapping[str, Any]) -> Any:
        kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
        try:
            if any((self.directory / f).is_file() for f in TOKENIZER_FILES):
                return open_clip.tokenizer.HFTokenizer(str(self.directory), **kwargs)
            if text_cfg.get("hf_tokenizer_name"):
                return open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"], **kwargs)
            return open_clip.tokenizer.SimpleTokenizer()
        except (OSError, ValueError, TypeError) as exc:
            raise BenchError(f"{MODEL_NAME}: cannot load the tokenizer for {self.directory}: {exc}") from None

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.directory, dtype_name(self.dtype), self.text_model)
        return self._fingerprint

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dual encoder",
            "checkpoint": str(self.directory),
            "library": "open_clip",
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "embed_dim": self.model_cfg.get("embed_dim"),
            "context_length": self.context_length,
            "preprocess": dict(self.preprocess_cfg),
            "similarity_map": "cosine(projected patch tokens, phrase embedding)",
            "parameters": self.num_parameters(),
        }

    # ------------------------------------------------------------------ embed

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """Images -> open_clip's eval transform, stacked float32 ``[N, 3, S, S]`` (CPU)."""
        if not len(images):
            return torch.zeros((0, 3, 1, 1))
        return torch.stack([self.transform(to_model_mode(im, 3)) for im in images]).float()

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        out = [np.zeros((0, int(self.model_cfg["embed_dim"])), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(images, self.batch_size):
                emb = self.model.encode_image(self.preprocess(chunk).to(self.device, self.dtype))
                out.append(F.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise BenchError("encode_texts() expects a sequence of strings, not a single string")
        out = [np.zeros((0, int(self.model_cfg["embed_dim"])), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(texts, self.batch_size):
                tokens = self.tokenizer([str(t) for t in chunk], context_length=self.context_length)
                emb = self.model.encode_text(tokens.to(self.device))
                out.append(F.normalize(emb.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ ground

    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected patch tokens ``[B, gh, gw, D]`` (float32)."""
        visual = self.model.visual
        x = pixels.to(self.device, self.dtype)
        trunk = getattr(visual, "trunk", None)
        if trunk is not None and hasattr(trunk, "forward_features") and hasattr(visual, "head"):  # timm tower
            tokens = trunk.forward_features(x)
            tokens = tokens[:, int(getattr(trunk, "num_prefix_tokens", 1)) :]
            fc_norm = getattr(trunk, "fc_norm", None)
            if fc_norm is not None:
                tokens = fc_norm(tokens)
            tokens = visual.head(tokens)
        elif hasattr(visual, "output_tokens") and hasattr(visual, "ln_post"):  # native open_clip ViT
            if getattr(visual, "attn_pool", None) is not None:
                raise BenchError(f"{MODEL_NAME}: grounding is not available for attention-pooled vision towers")
            previous = visual.output_tokens
            visual.output_tokens = True
            try:
                _, tokens = visual(x)
            finally:
                visual.output_tokens = previous
            if getattr(visual, "final_ln_after_pool", False):
                tokens = visual.ln_post(tokens)
            if getattr(visual, "proj", None) is not None:
                tokens = tokens @ visual.proj
        else:
            raise BenchError(
                f"{MODEL_NAME}: grounding needs a ViT vision tower exposing its patch tokens; "
                f"{type(visual).__name__} does not"
            )
        b, n, _ = tokens.shape
        side = math.isqrt(n)
        if side * side != n:
            raise BenchError(f"{MODEL_NAME}: {n} patch tokens do not form a square grid")
        return F.normalize(tokens.float(), dim=-1).reshape(b, side, side, -1)

    def similarity_map(self, image: Any, phrase: str) -> np.ndarray:
        key = image.key if isinstance(image, ImageRef) else None
        if key is not None and self._token_cache is not None and self._token_cache[0] == key:
            tokens, view, shape = self._token_cache[1]
        else:
            pil = as_pil(image)
            shape = (pil.height, pil.width)
            with torch.inference_mode():
                tokens = self.patch_embeddings(self.preprocess([pil]))[0]
            size = getattr(self.model.visual, "image_size", None) or self.preprocess_cfg.get("size", 224)
            view = transform_view(self.preprocess_cfg, size, *shape)
            if key is not None:
                self._token_cache = (key, (tokens, view, shape))
        text = torch.from_numpy(self.encode_texts([phrase])[0]).to(tokens.device)
        grid = (tokens @ text).cpu().numpy().astype(np.float64)
        return place_map(grid, view, shape).astype(np.float32)

    # ------------------------------------------------------------------ backbone

    def image_backbone(self) -> tuple[nn.Module, int]:
        """A float32 copy of ``model.visual``: ``module(preprocess(images)) -> [N, embed_dim]``."""
        module = copy.deepcopy(self.model.visual).to(self.device).float().eval()
        return module, int(self.model_cfg["embed_dim"])


__all__ = ["OpenClip", "import_open_clip", "quick_fingerprint", "read_config", "transform_view"]
