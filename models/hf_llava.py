"""``hf-llava``: LLaVA checkpoints in the transformers format or the original repository's format.

``bench run --model hf-llava --model-args pretrained=DIR --task ...`` reads either

* a transformers ``LlavaForConditionalGeneration`` checkpoint (config.json with ``text_config`` and
  ``vision_config``; llava-hf conversions, models saved with ``save_pretrained``), loaded like
  ``hf-vlm``; or
* a checkpoint of the original LLaVA code (``LlavaLlamaForCausalLM`` / ``LlavaMistralForCausalLM``:
  a language-model config.json with ``mm_vision_tower``, ``mm_projector_type``, ... -- the format
  LLaVA-Med was released in), converted at load time into the same transformers model by
  :mod:`models.llava_convert`. The CLIP vision tower comes from the checkpoint when it holds
  ``model.vision_tower.vision_tower.*`` weights, else from the directory named by
  ``mm_vision_tower`` (``vision_tower=DIR`` overrides it; a relative path is looked up beside the
  checkpoint, then in the working directory); its config.json and preprocessor_config.json are read
  either way. The tokenizer gets an ``<image>`` token if it has none (recorded in ``describe()``).

Prompts follow the LLaVA conversation templates (``conv_template``): ``llava_v1`` ("A chat between
a curious human and an artificial intelligence assistant. ... USER: <image>\\n{prompt} ASSISTANT:"),
``vicuna_v1`` (the same with "user" -- LLaVA-Rad's ``--conv_mode v1``), ``mistral_instruct``
("[INST] <image>\\n{prompt} [/INST]", LLaVA-Med v1.5), ``llava_llama_2`` and ``plain``; or
``chat_template`` (the checkpoint's own). ``auto`` (default): the checkpoint's chat template when it
has one, else ``mistral_instruct`` for a Mistral language model and ``llava_v1`` otherwise. The
image goes first in the user turn (``<image>\\n`` before the question, ``<im_start><image><im_end>``
when ``mm_use_im_start_end``), as the original evaluation scripts do.

Original-format inputs are tokenized the way the original code does: the prompt is split at
``<image>``, each piece tokenized on its own (BOS kept on the first piece only), and each image
becomes as many image tokens as the tower yields patches. Images are padded to a square with the
processor's mean colour first when ``image_aspect_ratio`` is "pad".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.interfaces import BenchError, GenerationRequest, as_pil
from models import llava_convert as conv
from models.hf_vlm import (
    COMMON_ARGS,
    HFVisionLanguageModel,
    _quiet_transformers,
    chat_template_of,
    checkpoint_dir,
    directory_digest,
    load_processor,
    processor_tokenizer,
    quick_identity,
    vlm_identity,
)

MODEL_NAME = "hf-llava"
LLAVA_ARGS: dict[str, tuple[type, Any]] = {
    **COMMON_ARGS,
    "conv_template": (str, "auto"),
    "vision_tower": (str, None),
}


# --------------------------------------------------------------------------- conversation templates


@dataclass(frozen=True)
class ConvTemplate:
    """One user turn of a LLaVA conversation template, ready for the assistant's answer.

    ``style`` "two": ``{system} USER: {message} ASSISTANT:``; "llama_2": ``[INST] <<SYS>>..<</SYS>>
    {message} [/INST]`` (no system block when the system text is empty); "plain": ``{message}\\n``.
    """

    name: str
    style: str
    system: str = ""
    roles: tuple[str, str] = ("USER", "ASSISTANT")

    def render(self, message: str, system: str | None = None) -> str:
        sys_text = self.system if system is None else system.strip()
        if self.style == "two":
            return f"{sys_text} {self.roles[0]}: {message} {self.roles[1]}:".lstrip()
        if self.style == "llama_2":
            block = f"<<SYS>>\n{sys_text}\n<</SYS>>\n\n" if sys_text else ""
            return f"[INST] {block}{message} [/INST]"
        return f"{message}\n"


_HUMAN_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_USER_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAMA2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
CONV_TEMPLATES: dict[str, ConvTemplate] = {
    "llava_v1": ConvTemplate("llava_v1", "two", _HUMAN_SYSTEM),
    "vicuna_v1": ConvTemplate("vicuna_v1", "two", _USER_SYSTEM),
    "mistral_instruct": ConvTemplate("mistral_instruct", "llama_2", ""),
    "llava_llama_2": ConvTemplate("llava_llama_2", "llama_2", _LLAMA2_SYSTEM),
    "plain": ConvTemplate("plain", "plain"),
}
CONV_ALIASES = {"v1": "vicuna_v1"}
CONV_CHOICES = ("auto", "chat_template", *CONV_TEMPLATES, *CONV_ALIASES)


def normalise_conv(model: str, settings: dict[str, Any]) -> dict[str, Any]:
    name = settings["conv_template"]
    if name not in CONV_CHOICES:
        raise BenchError(f"model {model}: conv_template must be one of {', '.join(CONV_CHOICES)}, got {name!r}")
    settings["conv_template"] = CONV_ALIASES.get(name, name)
    return settings


# --------------------------------------------------------------------------- identity


def find_tower_dir(config: Mapping[str, Any], directory: Path, override: str | None, model: str) -> Path:
    """The local CLIP tower directory of an original-format checkpoint (one clear error otherwise)."""
    if override:
        path = Path(override).expanduser()
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise BenchError(
                f"model {model}: vision_tower={override!r} is not a directory with a CLIP config.json "
                "(expected a transformers CLIP model folder: config.json, preprocessor_config.json, weights)"
            )
        return path
    value = str(config.get("mm_vision_tower") or "")
    candidates = [Path(value).expanduser()]
    if not Path(value).is_absolute():
        candidates.insert(0, directory / value)
    for path in candidates:
        if value and path.is_dir() and (path / "config.json").is_file():
            return path
    raise BenchError(
        f"model {model}: {directory / 'config.json'} names the vision tower mm_vision_tower = {value!r}, which is "
        f"not a local directory with a config.json (looked for {', '.join(str(c) for c in candidates)}); nothing "
        "is downloaded at run time: pass --model-args vision_tower=DIR with a local copy of that CLIP model "
        "(config.json, preprocessor_config.json and its weights)"
    )


def llava_identity(model: str, settings: Mapping[str, Any], extra: Mapping[str, Any]) -> str:
    directory = checkpoint_dir(model, settings["pretrained"])
    config = conv.read_json(directory / "config.json")
    parts: dict[str, Any] = {"conv_template": settings["conv_template"], **extra}
    if conv.is_original_format(config):
        parts["vision_tower"] = directory_digest(find_tower_dir(config, directory, settings["vision_tower"], model))
    return vlm_identity(model, settings, parts)


def quick_fingerprint(args: Mapping[str, Any]) -> str | None:
    """``HFLlava(**args).fingerprint()`` from the checkpoint files, without loading."""
    return quick_identity(HFLlava, args)


# --------------------------------------------------------------------------- the adapter


class HFLlava(HFVisionLanguageModel):
    name = MODEL_NAME
    arg_spec = LLAVA_ARGS

    @classmethod
    def parse_settings(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        return normalise_conv(cls.name, super().parse_settings(args))

    @classmethod
    def identity(cls, settings: Mapping[str, Any]) -> str:
        return llava_identity(cls.name, settings, cls.identity_extra(settings))

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        config = conv.read_json(self.directory / "config.json")
        self.image_token_added = False
        self.tower_source: str | None = None
        if conv.is_original_format(config):
            self._load_original(config)
        else:
            self._load_transformers(config)
        self.conv = self._choose_template(self.settings["conv_template"])
        self.prompt_format = "chat_template" if self.conv is None else f"conv_template:{self.conv.name}"

    def _choose_template(self, requested: str) -> ConvTemplate | None:
        has_chat = self.processor is not None and bool(chat_template_of(self.processor))
        if requested == "chat_template":
            if not has_chat:
                raise BenchError(f"model {self.name}: conv_template=chat_template but {self.directory} has none")
            return None
        if requested != "auto":
            return CONV_TEMPLATES[requested]
        if has_chat:
            return None
        text_type = getattr(getattr(self.model.config, "text_config", None), "model_type", "")
        name = "mistral_instruct" if text_type == "mistral" else "llava_v1"
        self.notes.append(f"no chat template in the checkpoint: LLaVA conversation template {name}")
        return CONV_TEMPLATES[name]

    def _load_transformers(self, config: Mapping[str, Any]) -> None:
        from models.hf_vlm import load_image_text_model

        model_type = str(config.get("model_type", ""))
        if not model_type.startswith("llava"):
            raise BenchError(
                f"model {self.name}: {self.directory / 'config.json'} is neither a transformers LLaVA checkpoint "
                f"(model_type {model_type!r}) nor an original LLaVA checkpoint (no mm_vision_tower key); other "
                "image-text-to-text checkpoints run with --model hf-vlm"
            )
        self.checkpoint_format = "transformers"
        self.processor = load_processor(self.name, self.directory)
        self.tokenizer = processor_tokenizer(self.name, self.processor, self.directory)
        self.model = load_image_text_model(self.name, self.directory, self.torch_dtype, self.device)
        self.image_marker = self.image_token

    def _load_original(self, config: Mapping[str, Any]) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

        _quiet_transformers()
        where = f"model {self.name}: {self.directory / 'config.json'}"
        conv.check_supported(config, where)
        projector = conv.projector_type(config, where)
        tower_dir = find_tower_dir(config, self.directory, self.settings["vision_tower"], self.name)
        vision = conv.vision_config_dict(conv.read_json(tower_dir / "config.json"), f"model {self.name}: {tower_dir}")
        if int(config.get("mm_hidden_size", vision.get("hidden_size", 0))) != int(vision.get("hidden_size", -1)):
            raise BenchError(
                f"{where}: mm_hidden_size {config.get('mm_hidden_size')} does not match the vision tower's hidden_size "
                f"{vision.get('hidden_size')} ({tower_dir})"
            )
        state = conv.load_weights(self.directory)
        has_tower = any(k.startswith("model.vision_tower.vision_tower.") for k in state)
        tower_state = None
        if not has_tower:
            try:
                tower_state = conv.load_weights(tower_dir)
            except BenchError as exc:
                raise BenchError(
                    f"model {self.name}: the checkpoint holds no model.vision_tower.vision_tower.* weights and the "
                    f"vision tower directory has none either ({exc})"
                ) from None
        self.tower_source = "checkpoint (model.vision_tower.vision_tower.*)" if has_tower else str(tower_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.directory), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise BenchError(f"model {self.name}: cannot load the tokenizer of {self.directory}: {exc}") from None
        if conv.IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_tokens([conv.IMAGE_TOKEN], special_tokens=True)
            self.image_token_added = True
        image_id = int(tokenizer.convert_tokens_to_ids(conv.IMAGE_TOKEN))
        self.use_im_start_end = bool(config.get("mm_use_im_start_end", False))
        if self.use_im_start_end:
            missing = [t for t in (conv.IM_START, conv.IM_END) if t not in tokenizer.get_vocab()]
            if missing:
                raise BenchError(f"{where}: mm_use_im_start_end is true but the tokenizer lacks {', '.join(missing)}")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
            self.notes.append(f"the tokenizer has no pad token: {tokenizer.pad_token!r} pads (left)")
        tokenizer.padding_side = "left"
        try:
            image_processor = AutoImageProcessor.from_pretrained(str(tower_dir), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise BenchError(
                f"model {self.name}: cannot load the image processor of the vision tower {tower_dir} "
                f"(preprocessor_config.json): {exc}"
            ) from None
        crop = getattr(image_processor, "crop_size", None) or {}
        size = int(vision.get("image_size", 224))
        if crop and (int(crop.get("height", size)), int(crop.get("width", size))) != (size, size):
            raise BenchError(
                f"model {self.name}: {tower_dir}: preprocessor crop_size {crop} does not match the tower's image_size "
                f"{size}"
            )
        hf_state, ignored = conv.to_hf_state_dict(state, projector, tower_state)
        rows = conv.pad_embedding_rows(hf_state, image_id + 1)
        text = conv.text_config_dict(config)
        text["vocab_size"] = rows
        patches = (size // int(vision.get("patch_size", 14))) ** 2
        select_full = config.get("mm_vision_select_feature", "patch") == "cls_patch"
        self.image_seq_length = patches + (1 if select_full else 0)
        try:
            llava_config = LlavaConfig(
                vision_config=vision,
                text_config=text,
                image_seq_length=self.image_seq_length,
                **conv.llava_config_kwargs(config, image_id),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise BenchError(f"{where}: cannot build a Llava config from it: {exc}") from None
        model, info = LlavaForConditionalGeneration.from_pretrained(
            None, config=llava_config, state_dict=hf_state, dtype=self.torch_dtype, output_loading_info=True
        )
        missing = sorted(info.get("missing_keys", ()))
        mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
        if missing or mismatched:
            shown = ", ".join((missing + mismatched)[:6])
            raise BenchError(
                f"model {self.name}: the weights of {self.directory} do not fill the converted model: "
                f"{len(missing)} missing / {len(mismatched)} mismatched (e.g. {shown})"
            )
        unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.endswith("rotary_emb.inv_freq"))
        ignored = [k for k in ignored if not k.endswith("rotary_emb.inv_freq")]
        if unexpected or ignored:
            self.notes.append(f"ignored checkpoint tensors: {', '.join((ignored + unexpected)[:6])}")
        self.checkpoint_format = "llava-original"
        self.original_config = dict(config)
        self.projector = projector
        self.processor = None
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.pad_to_square = config.get("image_aspect_ratio") == "pad"
        marker = conv.IMAGE_TOKEN
        self.image_marker = f"{conv.IM_START}{marker}{conv.IM_END}" if self.use_im_start_end else marker
        self.model = model.to(self.device)
        del state, hf_state, tower_state

    # ------------------------------------------------------------------ description

    @property
    def image_token(self) -> str:
        if getattr(self, "processor", None) is None:
            return conv.IMAGE_TOKEN
        return super().image_token

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["conv_template"] = None if self.conv is None else self.conv.name
        if self.checkpoint_format == "llava-original":
            info.update(
                {
                    "vision_tower": self.tower_source,
                    "projector": self.projector,
                    "vision_feature_layer": self.model.config.vision_feature_layer,
                    "vision_feature_select_strategy": self.model.config.vision_feature_select_strategy,
                    "image_tokens_per_image": self.image_seq_length,
                    "image_token_added_to_tokenizer": self.image_token_added,
                    "image_aspect_ratio": self.original_config.get("image_aspect_ratio"),
                    "tokenization": "llava-original: prompt split at <image>, pieces tokenized separately "
                    "(BOS on the first only)",
                }
            )
        return info

    # ------------------------------------------------------------------ prompts

    def render_prompt(self, request: GenerationRequest, n_images: int | None = None) -> str:
        if self.conv is None:
            return super().render_prompt(request, n_images)
        n = len(request.images) if n_images is None else n_images
        text = request.prompt.replace(conv.IMAGE_TOKEN, " ").strip()
        message = "".join(f"{self.image_marker}\n" for _ in range(n)) + text
        return self.conv.render(message, request.system)

    def model_inputs(self, requests: Sequence[GenerationRequest]) -> dict[str, Any]:
        if self.checkpoint_format != "llava-original":
            return super().model_inputs(requests)
        texts = [self.render_prompt(r) for r in requests]
        images = [im for r in requests for im in r.images]
        return self.original_inputs(texts, images)

    def image_only_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        if self.checkpoint_format != "llava-original":
            return super().image_only_inputs(images)
        return self.original_inputs([conv.IMAGE_TOKEN] * len(images), list(images))

    # ------------------------------------------------------------------ original-format inputs

    def tokenize_original(self, text: str) -> list[int]:
        """Token ids of a prompt the way the original LLaVA code builds them (image tokens expanded)."""
        tok = self.tokenizer
        image_id = self.image_token_id
        ids: list[int] = []
        bos = tok.bos_token_id
        for k, piece in enumerate(text.split(conv.IMAGE_TOKEN)):
            piece_ids = list(tok(piece).input_ids)
            if k > 0:
                if piece_ids and bos is not None and piece_ids[0] == bos:
                    piece_ids = piece_ids[1:]
                ids.extend([image_id] * self.image_seq_length)
            ids.extend(piece_ids)
        return ids

    def original_inputs(self, texts: Sequence[str], images: Sequence[Any]) -> dict[str, Any]:
        import torch

        rows = [self.tokenize_original(t) for t in texts]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if images:
            out["pixel_values"] = self.pixel_values(images)
        return out

    def pixel_values(self, images: Sequence[Any]) -> Any:
        pils = [as_pil(im).convert("RGB") for im in images]
        if self.pad_to_square:
            mean = getattr(self.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
            pils = [expand_to_square(im, tuple(int(255 * m) for m in mean)) for im in pils]
        return self.image_processor(pils, return_tensors="pt")["pixel_values"]


def expand_to_square(image: Any, fill: tuple[int, ...]) -> Any:
    """Pad a PIL image to a square, centred, with ``fill`` (LLaVA's ``image_aspect_ratio="pad"``)."""
    from PIL import Image

    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas
