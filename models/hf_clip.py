"""``hf-clip``: any dual encoder that transformers loads (CLIP, SigLIP, ...) from a local directory.

``--model-args pretrained=DIR[,device=auto|cpu|cuda,dtype=float32|bfloat16|float16|auto,batch_size=N]``
(dtype ``float32`` by default; ``auto`` = float32 on CPU, bfloat16 (else float16) on CUDA).

``DIR`` is a ``save_pretrained`` folder: ``config.json`` + weights (``*.safetensors`` or ``*.bin``),
the tokenizer files and ``preprocessor_config.json``. Nothing is downloaded (``local_files_only``).

* ``embed``: ``get_image_features`` / ``get_text_features``, L2-normalised, float32 numpy. Images go
  through the checkpoint's own image processor, PIL backend (``backend="pil"`` in transformers 5,
  ``use_fast=False`` before; it needs no torchvision); grayscale radiographs are converted to RGB for
  RGB models, 16-bit images are rescaled to 8 bits first. Texts are tokenised with the checkpoint's
  tokenizer, truncated to the text tower's length; only the inputs the tokenizer declares
  (``model_input_names``) are passed, and SigLIP-family models get ``padding="max_length"`` (they were
  trained that way and pool the last position), the others pad to the longest text.
* ``ground``: ``similarity_map(image, phrase)`` is the cosine similarity between each patch token
  *projected into the joint space* and the phrase embedding (BioViL / CheXzero-style local
  similarity). The projection is the one the model uses for its pooled embedding, applied per token:
  CLIP-style models ``visual_projection(post_layernorm(last_hidden_state))`` (the pooled embedding is
  the same recipe on the CLS token), SigLIP the attention-pooling head run on each patch token alone
  (``last_hidden_state`` is already post-layer-normed; with a single key the attention weight is 1).
  On first use the recipe is checked against the model: applied to the pooled token(s) it must give
  the model's own ``pooler_output``, else grounding is refused with a clear message. The map is the
  patch grid when the model sees the whole image; when the processor centre-crops a non-square image,
  the grid is resampled (bilinear, half-patch cells) onto a grid covering the whole original image with
  NaN where the model saw nothing, so the grounding metric lines it up with the boxes (as BioViL does).
* ``backbone``: a float32 copy of the vision tower returning its ``pooler_output`` (the features
  before the joint-space projection, as in CLIP's linear probes); feed it ``adapter.preprocess(images)``.

Fingerprint: SHA-256 of the weight files and of the config/tokenizer/processor files, with the
resolved dtype and the recipe version; :func:`quick_fingerprint` gives it without loading the model
(so a run served from the cache never loads it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.interfaces import BACKBONE, EMBED, GROUND, BenchError, ImageRef, ModelAdapter, as_pil, batched, stable_hash

MODEL_NAME = "hf-clip"
ARGS = ("pretrained", "device", "dtype", "batch_size")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_DTYPE = "float32"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
SIDE_FILE_SUFFIXES = (".json", ".txt", ".model")  # config, tokenizer and processor files
RECIPE_VERSION = 1  # bump when the embedding / map recipe changes (part of the fingerprint)
CELLS_PER_PATCH = 2  # resolution of a map resampled onto the whole image (cropping processors)


# --------------------------------------------------------------------------- arguments


def parse_batch_size(value: Any, model: str = MODEL_NAME) -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise BenchError(f"{model}: batch_size must be a positive integer, got {value!r}") from None
    if size < 1 or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise BenchError(f"{model}: batch_size must be a positive integer, got {value!r}")
    return size


def resolve_dtype(name: Any, device: Any, model: str = MODEL_NAME) -> Any:
    """``auto``: float32 on CPU; on CUDA bfloat16 where supported, else float16 (the default is float32)."""
    text = str(name).strip().lower()
    if text not in DTYPES:
        raise BenchError(f"{model}: dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if text == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, text)


def checkpoint_dir(pretrained: Any, model: str = MODEL_NAME) -> Path:
    if pretrained in (None, ""):
        raise BenchError(f"{model}: pass the checkpoint folder with --model-args pretrained=DIR")
    path = Path(str(pretrained)).expanduser()
    if not path.is_dir():
        raise BenchError(f"{model}: checkpoint directory not found: {path}")
    return path


def checkpoint_files(directory: Path, weight_suffixes: Sequence[str] = WEIGHT_SUFFIXES) -> list[str]:
    """The files that identify a checkpoint: weights and side files (config, tokenizer, processor)."""
    suffixes = (*weight_suffixes, *SIDE_FILE_SUFFIXES)
    return sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix in suffixes)


def checkpoint_fingerprint(directory: Path, dtype: str, adapter: str = MODEL_NAME) -> str:
    """Hash of the checkpoint's files plus what else changes the outputs (dtype, recipe version)."""
    from models.components.identity import files_fingerprint

    files = files_fingerprint(directory, checkpoint_files(directory))
    return stable_hash({"files": files, "dtype": dtype, "recipe": RECIPE_VERSION, "adapter": adapter})


def quick_fingerprint(args: Mapping[str, Any]) -> str | None:
    """``HFClip(**args).fingerprint()`` without loading the model; None when the dtype depends on the
    device the runner picks (dtype=auto without an explicit device) or the folder is missing."""
    pretrained = args.get("pretrained")
    if not pretrained or not Path(str(pretrained)).is_dir():
        return None  # the adapter reports it
    dtype = str(args.get("dtype", DEFAULT_DTYPE)).strip().lower()
    if dtype not in DTYPES:
        return None
    if dtype == "auto":
        if "device" not in args:
            return None
        from models.components.devices import resolve_device

        dtype = dtype_name(resolve_dtype("auto", resolve_device(args["device"])))
    return checkpoint_fingerprint(Path(str(pretrained)), dtype)


def dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


# --------------------------------------------------------------------------- image geometry


@dataclass(frozen=True)
class View:
    """The part of the original image that the model sees, in original-image pixels."""

    top: float
    left: float
    height: float
    width: float

    def covers(self, height: int, width: int, tol: float = 1e-6) -> bool:
        return (
            abs(self.top) < tol
            and abs(self.left) < tol
            and abs(self.height - height) < tol
            and abs(self.width - width) < tol
        )


def _size_field(size: Any, key: str) -> Any:
    if size is None:
        return None
    if isinstance(size, Mapping):
        return size.get(key)
    return getattr(size, key, None)


def processor_view(processor: Any, height: int, width: int) -> View | None:
    """Where a transformers image processor's output lies in an ``height`` x ``width`` image.

    Follows the standard processors: resize (``height``/``width``, or ``shortest_edge`` with the
    long side ``int(short * long / short_in)``) then an optional centre crop (top = (H - h) // 2).
    None when the processor does something else (e.g. ``longest_edge`` or padding).
    """
    rh, rw = float(height), float(width)
    if getattr(processor, "do_resize", False):
        size = getattr(processor, "size", None)
        h_, w_ = _size_field(size, "height"), _size_field(size, "width")
        short = _size_field(size, "shortest_edge")
        if h_ and w_:
            rh, rw = float(h_), float(w_)
        elif short and not _size_field(size, "longest_edge"):
            s_in, l_in = (width, height) if width <= height else (height, width)
            long = int(short * l_in / s_in)
            rh, rw = (float(long), float(short)) if width <= height else (float(short), float(long))
        else:
            return None
    top = left = 0.0
    ch, cw = rh, rw
    if getattr(processor, "do_center_crop", False):
        crop = getattr(processor, "crop_size", None)
        c_h, c_w = _size_field(crop, "height"), _size_field(crop, "width")
        if not (c_h and c_w):
            return None
        if c_h > rh or c_w > rw:  # the processor pads instead of cropping
            return None
        top, left = float((int(rh) - int(c_h)) // 2), float((int(rw) - int(c_w)) // 2)
        ch, cw = float(c_h), float(c_w)
    sy, sx = height / rh, width / rw
    return View(top * sy, left * sx, ch * sy, cw * sx)


def _axis_sample(n: int, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear indices and weights at ``coords`` (grid units, cell centres at 0..n-1; edges clamped)."""
    src = np.clip(coords, 0.0, n - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, src - i0


def place_map(grid: np.ndarray, view: View | None, image_shape: tuple[int, int]) -> np.ndarray:
    """A patch-grid map ``[gh, gw]`` laid out on the whole original image.

    Returns ``grid`` itself when the model saw the whole image (or the view is unknown). Otherwise
    a grid of half-patch cells over the whole image: bilinear samples of ``grid`` at each cell
    centre inside the view, NaN outside it.
    """
    grid = np.asarray(grid, dtype=np.float64)
    height, width = int(image_shape[0]), int(image_shape[1])
    if view is None or view.covers(height, width):
        return grid
    gh, gw = grid.shape
    ph, pw = view.height / gh, view.width / gw  # one patch, in original pixels
    ho = max(1, round(height * CELLS_PER_PATCH / ph))
    wo = max(1, round(width * CELLS_PER_PATCH / pw))
    yc = (np.arange(ho) + 0.5) * height / ho
    xc = (np.arange(wo) + 0.5) * width / wo
    r0, r1, rl = _axis_sample(gh, (yc - view.top) / ph - 0.5)
    c0, c1, cl = _axis_sample(gw, (xc - view.left) / pw - 0.5)
    rows = grid[r0] * (1 - rl)[:, None] + grid[r1] * rl[:, None]
    out = rows[:, c0] * (1 - cl)[None, :] + rows[:, c1] * cl[None, :]
    out[(yc < view.top) | (yc >= view.top + view.height), :] = np.nan
    out[:, (xc < view.left) | (xc >= view.left + view.width)] = np.nan
    return out


def to_model_mode(image: Any, channels: int) -> Any:
    """A PIL image in mode RGB (``channels == 3``) or L; 16-bit / float images are rescaled to 8 bits."""
    from PIL import Image

    im = as_pil(image)
    if im.mode.startswith("I") or im.mode == "F":
        from models.components.image_preprocess import pil_to_float

        arr = pil_to_float(im, 1)[0].numpy()
        im = Image.fromarray(np.round(arr * 255.0).astype(np.uint8), "L")
    return im.convert("RGB" if channels == 3 else "L")


# --------------------------------------------------------------------------- the adapter


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _pooled(output: Any, what: str) -> Any:
    """The embedding tensor of ``get_*_features`` (a tensor before transformers 5, a model output after)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise BenchError(f"{MODEL_NAME}: get_{what}_features returned {type(output).__name__} without an embedding")
    return pooled


class HFClip(ModelAdapter):
    name = MODEL_NAME
    capabilities = frozenset({EMBED, GROUND, BACKBONE})

    def __init__(
        self,
        pretrained: str | None = None,
        device: str = "auto",
        dtype: str = DEFAULT_DTYPE,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise BenchError(
                f"{MODEL_NAME}: unknown argument(s) {', '.join(sorted(kwargs))}; accepted: {', '.join(ARGS)}"
            )
        super().__init__(pretrained=pretrained, device=device, dtype=dtype, batch_size=batch_size)
        from models.components.devices import resolve_device

        self.directory = checkpoint_dir(pretrained)
        self.batch_size = parse_batch_size(batch_size)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._load()
        self._fingerprint: str | None = None
        self._recipe_checked = False
        self._token_cache: tuple[str, Any] | None = None

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        directory = self.directory
        if not (directory / "config.json").is_file():
            raise BenchError(
                f"{MODEL_NAME}: {directory} has no config.json; expected a transformers save_pretrained folder"
            )
        if not any(p.suffix in WEIGHT_SUFFIXES for p in directory.iterdir()):
            raise BenchError(f"{MODEL_NAME}: {directory} holds no weight file (*.safetensors or *.bin)")
        import transformers
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        transformers.utils.logging.disable_progress_bar()
        try:
            config = AutoConfig.from_pretrained(directory, local_files_only=True)
            model = AutoModel.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"{MODEL_NAME}: cannot load a transformers model from {directory}: {exc}") from None
        self.model_type = str(getattr(config, "model_type", "unknown"))
        if not (
            callable(getattr(model, "get_image_features", None)) and callable(getattr(model, "get_text_features", None))
        ):
            raise BenchError(
                f"{MODEL_NAME}: {directory} holds a {type(model).__name__} (model_type {self.model_type!r}), not a "
                "dual encoder: hf-clip needs a model with get_image_features and get_text_features (CLIP, SigLIP, ...)"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"{MODEL_NAME}: cannot load the tokenizer from {directory}: {exc}") from None
        self.processor = self._load_image_processor(directory)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.config = config
        vision_config = getattr(config, "vision_config", None)
        text_config = getattr(config, "text_config", None)
        self.num_channels = int(getattr(vision_config, "num_channels", 3) or 3)
        self.patch_size = getattr(vision_config, "patch_size", None)
        self.vision_width = int(getattr(vision_config, "hidden_size", 0) or 0)
        self.pad_to_max = self.model_type.startswith("siglip")
        limits = [
            getattr(text_config, "max_position_embeddings", None),
            getattr(self.tokenizer, "model_max_length", None),
        ]
        limits = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
        self.max_length = min(limits) if limits else 77
        self.text_inputs = [k for k in ("input_ids", "attention_mask", "position_ids")
                            if k == "input_ids" or k in self.tokenizer.model_input_names]  # fmt: skip
        self.recipe = self._grounding_recipe()

    def _load_image_processor(self, directory: Path) -> Any:
        from transformers import AutoImageProcessor

        kwargs = {"backend": "pil"} if _transformers_major() >= 5 else {"use_fast": False}
        try:
            return AutoImageProcessor.from_pretrained(directory, local_files_only=True, **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BenchError(
                f"{MODEL_NAME}: cannot load the image processor from {directory} (preprocessor_config.json): {exc}"
            ) from None

    def _grounding_recipe(self) -> str | None:
        vision = getattr(self.model, "vision_model", None)
        if vision is None or not self.patch_size:
            return None
        head = getattr(vision, "head", None)
        if head is not None and hasattr(head, "probe") and hasattr(head, "attention"):
            return "siglip"
        if hasattr(self.model, "visual_projection") and hasattr(vision, "post_layernorm"):
            return "clip"
        return None

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = checkpoint_fingerprint(self.directory, dtype_name(self.dtype))
        return self._fingerprint

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dual encoder",
            "checkpoint": str(self.directory),
            "model_type": self.model_type,
            "class": type(self.model).__name__,
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "image_processor": type(self.processor).__name__,
            "text_padding": "max_length" if self.pad_to_max else "longest",
            "text_max_length": self.max_length,
            "similarity_map": {
                "clip": "cosine(visual_projection(post_layernorm(patch tokens)), phrase embedding)",
                "siglip": "cosine(attention-pooling head on each patch token, phrase embedding)",
                None: "not available for this architecture",
            }[self.recipe],
            "parameters": self.num_parameters(),
        }

    # ------------------------------------------------------------------ inputs

    def image_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        """The image processor's outputs (``pixel_values`` and, for variable-resolution models, their
        masks / shapes) as CPU tensors."""
        pil = [to_model_mode(im, self.num_channels) for im in images]
        try:
            out = self.processor(images=pil, return_tensors="pt")
        except (ValueError, TypeError) as exc:
            raise BenchError(f"{MODEL_NAME}: the image processor failed: {exc}") from None
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """ImageRefs / PIL images / paths -> ``pixel_values`` float32 ``[N, C, H, W]`` (CPU)."""
        if not len(images):
            return torch.zeros((0, self.num_channels, 1, 1))
        inputs = self.image_inputs(images)
        if set(inputs) != {"pixel_values"}:
            raise BenchError(
                f"{MODEL_NAME}: model_type {self.model_type!r} takes variable-resolution inputs "
                f"({', '.join(sorted(inputs))}); patch maps and the backbone need fixed-size pixel_values"
            )
        return inputs["pixel_values"].float()

    def _tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        enc = self.tokenizer(
            [str(t) for t in texts],
            padding="max_length" if self.pad_to_max else "longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: enc[k].to(self.device) for k in self.text_inputs if k in enc}

    # ------------------------------------------------------------------ embed

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        out = [np.zeros((0, 0), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(images, self.batch_size):
                inputs = {k: v.to(self.device) for k, v in self.image_inputs(chunk).items()}
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
                emb = _pooled(self.model.get_image_features(**inputs), "image")
                out.append(F.normalize(emb.float(), dim=-1).cpu().numpy())
        rows = [o for o in out if o.size]
        return np.concatenate(rows).astype(np.float32, copy=False) if rows else out[0]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise BenchError("encode_texts() expects a sequence of strings, not a single string")
        out = [np.zeros((0, 0), dtype=np.float32)]
        with torch.inference_mode():
            for chunk in batched(texts, self.batch_size):
                emb = _pooled(self.model.get_text_features(**self._tokenize(chunk)), "text")
                out.append(F.normalize(emb.float(), dim=-1).cpu().numpy())
        rows = [o for o in out if o.size]
        return np.concatenate(rows).astype(np.float32, copy=False) if rows else out[0]

    # ------------------------------------------------------------------ ground

    def patch_embeddings(self, pixel_values: Any) -> Any:
        """L2-normalised projected patch tokens ``[B, gh, gw, D]`` (float32) for ``pixel_values``."""
        if self.recipe is None:
            raise BenchError(
                f"{MODEL_NAME}: phrase grounding is not available for model_type {self.model_type!r} "
                f"({type(self.model).__name__}): no known way to project its patch tokens into the joint space "
                "(supported: CLIP-style visual_projection + post_layernorm, SigLIP attention-pooling head)"
            )
        vision = self.model.vision_model
        pixels = pixel_values.to(self.device, self.dtype)
        out = vision(pixel_values=pixels)
        hidden = out.last_hidden_state
        p = int(self.patch_size)
        gh, gw = pixels.shape[-2] // p, pixels.shape[-1] // p
        prefix = hidden.shape[1] - gh * gw
        if prefix < 0:
            raise BenchError(f"{MODEL_NAME}: {hidden.shape[1]} vision tokens for a {gh}x{gw} patch grid")
        if self.recipe == "clip":
            pooled_check = vision.post_layernorm(hidden[:, 0])
            tokens = self.model.visual_projection(vision.post_layernorm(hidden[:, prefix:]))
        else:
            pooled_check = vision.head(hidden)
            tokens = self._pool_each_token(vision.head, hidden[:, prefix:])
        if not self._recipe_checked:
            self._check_recipe(pooled_check, out.pooler_output)
        b = tokens.shape[0]
        return F.normalize(tokens.float(), dim=-1).reshape(b, gh, gw, -1)

    @staticmethod
    def _pool_each_token(head: Any, tokens: Any) -> Any:
        """SigLIP's attention-pooling head applied to every token on its own (one key: weight 1)."""
        b, n, d = tokens.shape
        flat = tokens.reshape(b * n, 1, d)
        probe = head.probe.expand(b * n, 1, d).to(flat.dtype)
        x = head.attention(probe, flat, flat)[0]
        x = x + head.mlp(head.layernorm(x))
        return x[:, 0].reshape(b, n, -1)

    def _check_recipe(self, recomputed: Any, pooled: Any) -> None:
        tol = 1e-4 if self.dtype == torch.float32 else 3e-2
        if pooled is None or not torch.allclose(recomputed.float(), pooled.float(), rtol=tol, atol=tol):
            raise BenchError(
                f"{MODEL_NAME}: cannot ground with model_type {self.model_type!r}: the patch-token recipe "
                f"({self.recipe}) does not reproduce the model's pooled output"
            )
        self._recipe_checked = True

    def _image_tokens(self, image: Any) -> tuple[Any, View | None, tuple[int, int]]:
        """Patch embeddings of one image (the last image is kept: a task asks several phrases in a row)."""
        key = image.key if isinstance(image, ImageRef) else (str(image) if isinstance(image, (str, Path)) else None)
        if key is not None and self._token_cache is not None and self._token_cache[0] == key:
            return self._token_cache[1]
        pil = as_pil(image)
        shape = (pil.height, pil.width)
        with torch.inference_mode():
            tokens = self.patch_embeddings(self.preprocess([pil]))[0]
        entry = (tokens, processor_view(self.processor, *shape), shape)
        if key is not None:
            self._token_cache = (key, entry)
        return entry

    def similarity_map(self, image: Any, phrase: str) -> np.ndarray:
        """Cosine similarity of each projected patch token with the phrase: ``[h, w]`` float32."""
        tokens, view, shape = self._image_tokens(image)
        text = torch.from_numpy(self.encode_texts([phrase])[0]).to(tokens.device)
        grid = (tokens @ text).cpu().numpy().astype(np.float64)
        return place_map(grid, view, shape).astype(np.float32)

    # ------------------------------------------------------------------ backbone

    def image_backbone(self) -> tuple[Any, int]:
        """A float32 copy of the vision tower: ``module(preprocess(images)) -> pooled [N, width]``."""
        module = PooledVision(copy.deepcopy(self.model.vision_model)).to(self.device).float().eval()
        return module, self.vision_width


class PooledVision(nn.Module):
    """Vision tower -> ``pooler_output`` (mean of the last hidden states when it has none)."""

    def __init__(self, vision: nn.Module) -> None:
        super().__init__()
        self.vision = vision

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.vision(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state.mean(dim=1)


__all__ = ["HFClip", "PooledVision", "View", "place_map", "processor_view", "to_model_mode"]
