"""``hf-vlm``: any transformers image-text-to-text checkpoint (LLaVA, LLaVA-NeXT, Qwen2-VL, ...).

``bench run --model hf-vlm --model-args pretrained=DIR --task vqarad_vqa`` loads a local checkpoint
with ``AutoModelForImageTextToText`` and ``AutoProcessor`` (offline: nothing is downloaded, no remote
code is run) and answers :class:`~bench.interfaces.GenerationRequest` batches.

Prompt: the checkpoint's chat template (``processor.apply_chat_template``) with one image
placeholder per image before the text of a user turn, and the request's ``system`` text as a system
turn. A checkpoint without a chat template gets the plain ``"USER: <image>\\n{prompt} ASSISTANT:"``
(``prompt_format=plain`` forces it); ``describe()`` records which, with the rendered prompt of an
example request, so results say exactly what the model saw.

Decoding: greedy unless the request has ``temperature > 0`` (then sampling with the request's
temperature and top_p, top_k off; the k-th sampled batch seeds torch from ``(seed, k)``, so the same
sequence of calls draws the same answers). ``max_new_tokens`` overrides
the requests' limit when given. Only the new tokens are decoded (up to the first end-of-sequence
token), special tokens skipped, whitespace stripped. Batches are left-padded with an attention
mask (transformers derives position ids from it), so outputs do not depend on ``batch_size``.

Fingerprint (the prediction-cache key) = sha256 of the checkpoint's files + the arguments that change
outputs (dtype, prompt format, max_new_tokens, and for the ``-embed`` variants the embedding
settings); ``quick_fingerprint`` computes it from the files without loading the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.interfaces import GENERATE, BenchError, GenerationRequest, ModelAdapter, as_pil, stable_hash
from models.components.identity import files_fingerprint

MODEL_NAME = "hf-vlm"
FINGERPRINT_VERSION = 1
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
PROMPT_FORMATS = ("auto", "chat_template", "plain")
PLAIN_TEMPLATE = "USER: {images}{prompt} ASSISTANT:"
EXAMPLE_PROMPT = "{prompt}"
# files of a checkpoint directory that do not change outputs (never hashed)
_SKIP_SUFFIXES = (".md", ".txt.lock", ".lock")
_SKIP_NAMES = frozenset({"LICENSE", "LICENSE.txt", "NOTICE", ".gitattributes", "USE_POLICY.md"})

# argument -> (type, default). ``device`` comes from the runner's --device unless given.
COMMON_ARGS: dict[str, tuple[type, Any]] = {
    "pretrained": (str, None),
    "device": (str, "auto"),
    "dtype": (str, "auto"),
    "batch_size": (int, 8),
    "max_new_tokens": (int, None),
    "seed": (int, 0),
}
VLM_ARGS: dict[str, tuple[type, Any]] = {**COMMON_ARGS, "prompt_format": (str, "auto")}
# arguments of the ``-embed`` variants (see models/mllm_embed.py); refused with a hint elsewhere
EMBED_ARG_NAMES = ("embed", "embed_pool", "embed_layer", "embed_input", "embed_prompt")


# --------------------------------------------------------------------------- arguments


def coerce(model: str, name: str, kind: type, value: Any) -> Any:
    """A --model-args value (already int/float/bool/None from the CLI, or a string) as ``kind``."""
    if value is None:
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            low = str(value).strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return low in ("true", "1", "yes")
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise BenchError(f"model {model}: argument {name}={value!r} must be {kind.__name__}") from None


def parse_args(model: str, spec: Mapping[str, tuple[type, Any]], args: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``args`` against ``spec`` (types, required ``pretrained``, choices); defaults filled in."""
    unknown = sorted(set(args) - set(spec))
    if unknown:
        hint = ""
        if any(k in EMBED_ARG_NAMES for k in unknown) and not model.endswith("-embed"):
            hint = f" (embedding arguments belong to --model {model}-embed, which adds the embed capability)"
        raise BenchError(f"model {model}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(spec)}{hint}")
    out = {name: coerce(model, name, kind, args.get(name, default)) for name, (kind, default) in spec.items()}
    if not out.get("pretrained"):
        raise BenchError(f"model {model}: pass the checkpoint directory with --model-args pretrained=DIR")
    if out["dtype"] not in DTYPES:
        raise BenchError(f"model {model}: dtype must be one of {', '.join(DTYPES)}, got {out['dtype']!r}")
    if out["batch_size"] < 1:
        raise BenchError(f"model {model}: batch_size must be at least 1, got {out['batch_size']}")
    if out["max_new_tokens"] is not None and out["max_new_tokens"] < 1:
        raise BenchError(f"model {model}: max_new_tokens must be at least 1, got {out['max_new_tokens']}")
    if "prompt_format" in out and out["prompt_format"] not in PROMPT_FORMATS:
        raise BenchError(
            f"model {model}: prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {out['prompt_format']!r}"
        )
    return out


def checkpoint_dir(model: str, path: str) -> Path:
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise BenchError(f"model {model}: checkpoint directory not found: {directory}")
    if not (directory / "config.json").is_file():
        raise BenchError(
            f"model {model}: {directory} has no config.json; expected a transformers checkpoint directory "
            "(config.json, weights, tokenizer and processor files)"
        )
    return directory


def resolve_dtype(name: str, device: Any) -> str:
    """``auto``: bfloat16 on a CUDA device that supports it (float16 otherwise), float32 on CPU."""
    if name != "auto":
        return name
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def expected_device(name: str) -> str:
    """The device type a device argument resolves to (without failing when CUDA is missing)."""
    import torch

    name = str(name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name.startswith("cuda") else name


# --------------------------------------------------------------------------- identity


def hashed_files(directory: Path, only: Callable[[str], bool] | None = None) -> list[str]:
    """Files of a checkpoint directory that define the model (weights, configs, tokenizer, templates)."""
    names = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.is_file() or entry.name.startswith(".") or entry.name in _SKIP_NAMES:
            continue
        if entry.name.endswith(_SKIP_SUFFIXES) or (only is not None and not only(entry.name)):
            continue
        names.append(entry.name)
    return names


_DIGESTS: dict[tuple[Any, ...], str] = {}


def directory_digest(directory: Path, only: Callable[[str], bool] | None = None) -> str:
    """sha256 of the directory's model files; remembered per (name, size, mtime) within the process."""
    names = hashed_files(directory, only)
    stamp = tuple((n, (st := (directory / n).stat()).st_size, st.st_mtime_ns) for n in names)
    key = (str(directory.resolve()), stamp)
    if key not in _DIGESTS:
        _DIGESTS[key] = files_fingerprint(directory, names)
    return _DIGESTS[key]


def identity_hash(model: str, parts: Mapping[str, Any]) -> str:
    return stable_hash({"adapter": model, "version": FINGERPRINT_VERSION, **parts})


def vlm_identity(model: str, settings: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    directory = checkpoint_dir(model, settings["pretrained"])
    parts = {
        "files": directory_digest(directory),
        "dtype": resolve_dtype(settings["dtype"], expected_device(settings["device"])),
        "max_new_tokens": settings["max_new_tokens"],
        "prompt_format": settings.get("prompt_format"),
        **(extra or {}),
    }
    return identity_hash(model, parts)


def quick_identity(cls: Any, args: Mapping[str, Any]) -> str | None:
    """``cls(**args).fingerprint()`` from the arguments and files, or None when it cannot be known
    without building the model.

    The runner gives the quick path the --model-args only (not --device): with ``dtype=auto`` on a
    machine with CUDA the dtype depends on the device, so the model is built to find out.
    """
    import torch

    if "device" not in args and str(args.get("dtype", "auto")) == "auto" and torch.cuda.is_available():
        return None
    try:
        return cls.identity(cls.parse_settings(args))
    except (BenchError, OSError):
        return None  # the adapter reports the problem when it is built


def quick_fingerprint(args: Mapping[str, Any]) -> str | None:
    """``HFVisionLanguageModel(**args).fingerprint()`` from the checkpoint files, without loading."""
    return quick_identity(HFVisionLanguageModel, args)


# --------------------------------------------------------------------------- outputs


@dataclass
class Generation:
    """One generated answer with its token ids and the logits of the chosen tokens."""

    text: str
    token_ids: list[int]
    token_logits: list[float]


def _eos_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


# --------------------------------------------------------------------------- the adapter


class HFVisionLanguageModel(ModelAdapter):
    """Generation with a transformers image-text-to-text model and its processor."""

    name = MODEL_NAME
    capabilities = frozenset({GENERATE})
    arg_spec: Mapping[str, tuple[type, Any]] = VLM_ARGS

    def __init__(self, **kwargs: Any) -> None:
        import torch

        from models.components.devices import resolve_device

        settings = self.parse_settings(kwargs)
        super().__init__(**kwargs)
        self.settings = settings
        self.directory = checkpoint_dir(self.name, settings["pretrained"])
        self.device = resolve_device(settings["device"])
        self.dtype_name = resolve_dtype(settings["dtype"], self.device)
        self.torch_dtype = getattr(torch, self.dtype_name)
        self.batch_size = settings["batch_size"]
        self.seed = settings["seed"]
        self.notes: list[str] = []
        self._sampled_batches = 0
        self._load()
        self.model.eval()
        self.eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        """Set ``self.model``, ``self.processor``, ``self.tokenizer``, ``self.prompt_format``."""
        self.checkpoint_format = "transformers"
        self.processor = load_processor(self.name, self.directory)
        self.tokenizer = processor_tokenizer(self.name, self.processor, self.directory)
        self.model = load_image_text_model(self.name, self.directory, self.torch_dtype, self.device)
        self.prompt_format = self._choose_prompt_format(self.settings.get("prompt_format", "auto"))

    def _choose_prompt_format(self, requested: str) -> str:
        has_template = bool(chat_template_of(self.processor))
        if requested == "chat_template" and not has_template:
            raise BenchError(
                f"model {self.name}: prompt_format=chat_template but {self.directory} has no chat template"
            )
        if requested == "auto":
            if not has_template:
                self.notes.append("the checkpoint has no chat template: plain 'USER: <image>\\n{prompt} ASSISTANT:'")
            return "chat_template" if has_template else "plain"
        return requested

    # ------------------------------------------------------------------ identity

    @classmethod
    def parse_settings(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        """Validated arguments with defaults (one BenchError naming the accepted ones otherwise)."""
        return parse_args(cls.name, cls.arg_spec, args)

    @classmethod
    def identity_extra(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments beyond the common ones that change outputs (subclasses extend)."""
        return {}

    @classmethod
    def identity(cls, settings: Mapping[str, Any]) -> str:
        """The fingerprint of a model built with ``settings``, computed from files and arguments only."""
        return vlm_identity(cls.name, settings, cls.identity_extra(settings))

    def fingerprint(self) -> str:
        return self.identity(self.settings)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def image_token(self) -> str:
        return str(getattr(self.processor, "image_token", None) or "<image>")

    @property
    def image_token_id(self) -> int | None:
        cfg = self.model.config
        value = getattr(cfg, "image_token_id", None)
        if value is None:
            value = getattr(cfg, "image_token_index", None)
        return None if value is None else int(value)

    def describe(self) -> dict[str, Any]:
        example = GenerationRequest(images=(), prompt=EXAMPLE_PROMPT)
        return {
            "kind": "generative",
            "adapter": self.name,
            "checkpoint": str(self.directory),
            "format": self.checkpoint_format,
            "architecture": type(self.model).__name__,
            "model_type": getattr(self.model.config, "model_type", None),
            "dtype": self.dtype_name,
            "device": str(self.device),
            "batch_size": self.batch_size,
            "padding_side": "left",
            "prompt_format": self.prompt_format,
            "prompt_example": self.render_prompt(example, n_images=1),
            "image_token": self.image_token,
            "image_token_id": self.image_token_id,
            "decoding": {
                "default": "greedy (request temperature 0)",
                "sampling": f"request temperature and top_p, top_k off; batch k seeded from (seed {self.seed}, k)",
                "max_new_tokens": self.settings["max_new_tokens"] or "from each request",
                "decoded": "new tokens up to end of sequence, special tokens skipped, stripped",
            },
            "notes": list(self.notes),
            "parameters": self.num_parameters(),
        }

    # ------------------------------------------------------------------ prompts

    def render_prompt(self, request: GenerationRequest, n_images: int | None = None) -> str:
        """The text given to the processor for ``request`` (image placeholders not yet expanded)."""
        n = len(request.images) if n_images is None else n_images
        text = request.prompt.replace(self.image_token, " ").strip()
        if self.prompt_format == "chat_template":
            messages: list[dict[str, Any]] = []
            if request.system:
                messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
            content = [{"type": "image"} for _ in range(n)] + [{"type": "text", "text": text}]
            messages.append({"role": "user", "content": content})
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        images = "".join(f"{self.image_token}\n" for _ in range(n))
        prompt = PLAIN_TEMPLATE.format(images=images, prompt=text)
        return f"{request.system.strip()} {prompt}" if request.system else prompt

    def model_inputs(self, requests: Sequence[GenerationRequest]) -> dict[str, Any]:
        """Left-padded tensors for one batch: input_ids, attention_mask, pixel_values, ..."""
        texts = [self.render_prompt(r) for r in requests]
        images = [as_pil(im).convert("RGB") for r in requests for im in r.images]
        return self.processor_inputs(texts, images)

    def image_only_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        """Each image alone: its placeholder expanded to image tokens, no template, no text."""
        return self.processor_inputs([self.image_token] * len(images), [as_pil(im).convert("RGB") for im in images])

    def text_only_inputs(self, texts: Sequence[str]) -> dict[str, Any]:
        """Each text alone (the tokenizer's own special tokens, no template), left-padded."""
        self.tokenizer.padding_side = "left"
        return dict(self.tokenizer([str(t) for t in texts], padding=True, return_tensors="pt"))

    def processor_inputs(self, texts: list[str], images: list[Any]) -> dict[str, Any]:
        self.tokenizer.padding_side = "left"
        bos = self.tokenizer.bos_token
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt"}
        if bos and all(t.startswith(bos) for t in texts):
            kwargs["add_special_tokens"] = False  # the template wrote the BOS token itself
        try:
            enc = self.processor(text=texts, images=images or None, **kwargs)
        except (ValueError, TypeError) as exc:
            raise BenchError(
                f"model {self.name}: the processor of {self.directory} rejected the inputs: {exc}"
            ) from None
        return dict(enc)

    def to_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.torch_dtype)
            out[key] = value
        return out

    # ------------------------------------------------------------------ generate

    def generation_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        max_new = self.settings["max_new_tokens"] or request.max_new_tokens
        kwargs: dict[str, Any] = {"max_new_tokens": int(max_new), "num_beams": 1}
        if request.temperature > 0:
            kwargs.update(do_sample=True, temperature=float(request.temperature), top_p=float(request.top_p), top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        pad = self.tokenizer.pad_token_id
        kwargs["pad_token_id"] = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        if self.image_token_id is not None:
            kwargs["suppress_tokens"] = [self.image_token_id]
        return kwargs

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return [g.text for g in self.generate_detailed(requests)]

    def generate_detailed(self, requests: Sequence[GenerationRequest], scores: bool = False) -> list[Generation]:
        """Generations in request order; batches group requests with the same decoding options."""
        out: list[Generation | None] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_new_tokens, r.temperature, r.top_p), []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, gen in zip(chunk, self._generate_batch([requests[i] for i in chunk], scores), strict=True):
                    out[i] = gen
        return [g for g in out if g is not None]

    def _generate_batch(self, requests: Sequence[GenerationRequest], scores: bool) -> list[Generation]:
        import torch

        inputs = self.to_device(self.model_inputs(requests))
        if requests[0].temperature > 0:
            # each sampled batch draws from its own seed: reproducible for the same sequence of calls
            self._sampled_batches += 1
            torch.manual_seed(int(stable_hash([self.seed, self._sampled_batches]), 16) % (2**63))
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                **self.generation_kwargs(requests[0]),
                return_dict_in_generate=True,
                output_logits=scores,
            )
        new = out.sequences[:, inputs["input_ids"].shape[1] :].cpu()
        logits = torch.stack(out.logits, dim=1).float().cpu() if scores else None
        results = []
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            end = next((k + 1 for k, t in enumerate(ids) if t in self.eos_ids), len(ids))
            ids = ids[:end]
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            chosen = [float(logits[row, k, t]) for k, t in enumerate(ids)] if logits is not None else []
            results.append(Generation(text=text, token_ids=ids, token_logits=chosen))
        return results


# --------------------------------------------------------------------------- loading helpers


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_processor(model: str, directory: Path) -> Any:
    from transformers import AutoProcessor

    _quiet_transformers()
    try:
        return AutoProcessor.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"model {model}: cannot load the processor of {directory}: {exc}") from None


def processor_tokenizer(model: str, processor: Any, directory: Path) -> Any:
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or not hasattr(processor, "image_processor"):
        raise BenchError(
            f"model {model}: {directory} holds no multimodal processor (processor/preprocessor config with an image "
            "processor and a tokenizer); is it a vision-language checkpoint?"
        )
    tokenizer.padding_side = "left"
    return tokenizer


def chat_template_of(processor: Any) -> str | None:
    template = getattr(processor, "chat_template", None)
    if not template:
        template = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    return template or None


def load_image_text_model(model: str, directory: Path, dtype: Any, device: Any) -> Any:
    from transformers import AutoConfig, AutoModelForImageTextToText

    _quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"model {model}: cannot read {directory / 'config.json'}: {exc}") from None
    try:
        net = AutoModelForImageTextToText.from_pretrained(
            str(directory), config=config, dtype=dtype, local_files_only=True, trust_remote_code=False
        )
    except ValueError as exc:
        raise BenchError(
            f"model {model}: {directory} (model_type {getattr(config, 'model_type', '?')!r}) is not an "
            f"image-text-to-text model transformers can load: {str(exc).splitlines()[0]}"
        ) from None
    except OSError as exc:
        raise BenchError(f"model {model}: cannot load the weights of {directory}: {exc}") from None
    return net.to(device)
