"""Tiny transformers models built on the fly for tests and smoke benchmarks (random weights, offline).

* :func:`train_tokenizer`: a byte-level BPE tokenizer (Llama-like: ``<unk>`` ``<s>`` ``</s>``, BOS
  prepended, ``<unk>`` pads) trained on radiology-flavoured text and the prompt words of the tasks.
* :func:`save_tiny_llava`: a ``LlavaForConditionalGeneration`` (CLIP vision tower 32 px / patch 8,
  Llama language model hidden 32, 2 layers) with its ``LlavaProcessor``, saved in the transformers
  format. The tokenizer's ``<image>`` token is added after training (the last id) and its rows in
  ``embed_tokens`` and ``lm_head`` are zero, which is what a converter gives a token it adds.
* :func:`save_original_llava`: the same weights written in the original LLaVA repository's layout
  (config.json with ``mm_*`` keys, ``model.*`` / ``model.mm_projector.*`` tensors, the tokenizer
  without ``<image>``, and a CLIP tower directory named by ``mm_vision_tower`` or the tower included
  as ``model.vision_tower.vision_tower.vision_model.*``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 32

CORPUS = """
A chat between a curious human and an artificial intelligence assistant.
The assistant gives helpful, detailed, and polite answers to the human's questions. USER: ASSISTANT:
A chat between a curious user and an artificial intelligence assistant. [INST] [/INST] SYSTEM:
Is there evidence of pleural effusion? Is the cardiac silhouette enlarged? Are the lungs clear?
Does this patient have a pneumothorax? Which abnormality does this chest radiograph show?
Where is the nodule? Is this chest radiograph normal? Answer yes or no. Answer with one word.
yes no none left right bilateral upper lower lobe apical basal
The lungs are clear. No focal consolidation, pleural effusion or pneumothorax. Heart size is normal.
Mild cardiomegaly. Small left pleural effusion. Right lower lobe consolidation. Pulmonary edema.
Bibasilar atelectasis. Small apical pneumothorax. Pulmonary nodule in the right upper lobe.
Findings: Impression: No acute cardiopulmonary process. Describe the image. Describe the findings.
Atelectasis Cardiomegaly Consolidation Edema Effusion Pneumothorax Nodule No Finding
""".strip()

# A chat template of the USER/ASSISTANT kind written for the tests (not any real model's).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ 'SYSTEM: ' + message['content'][0]['text'] + '\\n' }}"
    "{%- else -%}{{ message['role'] | upper + ':' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ ' <image>' }}{%- else -%}{{ ' ' + item['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def train_tokenizer(vocab_size: int = 400) -> Any:
    """A Llama-like byte-level BPE ``PreTrainedTokenizerFast`` without an ``<image>`` token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in CORPUS.splitlines() if line.strip()]
    tok.train_from_iterator(lines * 4, trainer=trainer, length=len(lines) * 4)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )


def _image_processor(pad_to_square: bool = False) -> Any:
    """CLIP preprocessing at 32 px (PIL backends: torchvision is not installed). ``pad_to_square``: the
    Llava processor padding to a square with the mean colour first, as llava-1.5 does."""
    from transformers import CLIPImageProcessorPil, LlavaImageProcessorPil

    sizes = {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}
    if pad_to_square:
        return LlavaImageProcessorPil(do_pad=True, **sizes)
    return CLIPImageProcessorPil(**sizes)


def vqa_requests(n: int = 8, max_new_tokens: int = 10, size: int = 64, non_square: int = 1) -> list[Any]:
    """``n`` synthcxr-like VQA GenerationRequests rendered in memory (no dataset generation): image i of
    seed 0 with its first question; the last ``non_square`` images are cropped to 3:4 portrait."""
    from functools import partial

    from PIL import Image

    from bench.data.synthcxr import make_record
    from bench.interfaces import GenerationRequest, ImageRef

    def load(pixels: Any) -> Any:
        return Image.fromarray(pixels)

    out = []
    for i in range(n):
        record, pixels = make_record(0, i, size)
        if i >= n - non_square:
            pixels = pixels[:, size // 8 : size - size // 8]
        ref = ImageRef(key=f"tiny-models/synthcxr/{size}/{i}/{pixels.shape[1]}", loader=partial(load, pixels))
        question = record["meta"]["qa"][0]["question"]
        out.append(GenerationRequest(images=(ref,), prompt=question, max_new_tokens=max_new_tokens, sample_id=str(i)))
    return out


def tiny_llava(tokenizer: Any, *, projector: str = "mlp2x_gelu", seed: int = 0, layers: int = 2) -> Any:
    """A random LlavaForConditionalGeneration whose vocabulary is ``tokenizer`` (with ``<image>`` last)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert image_id == len(tokenizer) - 1, "the <image> token must be the last id"
    vision = CLIPVisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=HIDDEN,
    )
    text = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_id,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu" if projector == "mlp2x_gelu" else "linear",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        # larger-than-default weights so that greedy outputs vary with the input
        for p in model.model.language_model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.25)
        model.lm_head.weight.normal_(0.0, 0.5)
        model.model.language_model.embed_tokens.weight[image_id].zero_()
        model.lm_head.weight[image_id].zero_()
        if projector == "linear":
            model.model.multi_modal_projector.linear_2.weight.copy_(torch.eye(HIDDEN))
            model.model.multi_modal_projector.linear_2.bias.zero_()
    return model


def save_tiny_llava(
    directory: str | Path, *, chat_template: str | None = None, projector: str = "mlp2x_gelu", seed: int = 0
) -> Path:
    """Write a tiny LLaVA checkpoint in the transformers format (model + LlavaProcessor)."""
    from transformers import LlavaProcessor

    directory = Path(directory)
    tokenizer = train_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    model = tiny_llava(tokenizer, projector=projector, seed=seed)
    processor = LlavaProcessor(
        image_processor=_image_processor(pad_to_square=True),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _tokenizer_without(tokenizer: Any, token: str) -> Any:
    """A copy of a fast tokenizer with the added ``token`` removed (ids of the others unchanged)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != token]
    out = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        unk_token=tokenizer.unk_token,
        pad_token=tokenizer.pad_token,
    )
    assert token not in out.get_vocab() and len(out) == len(tokenizer) - 1
    return out


def save_clip_tower(directory: str | Path, vision_state: dict[str, Any], vision_config: Any) -> Path:
    """A CLIP directory as openai/clip-vit-* ships it: a full ``clip`` config and ``vision_model.*``
    weights (plus a text-side tensor the converter must ignore) and preprocessor_config.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(
        vision_config=vision_config.to_dict(),
        text_config={"hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4},
        projection_dim=HIDDEN,
    )
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    tensors = {f"vision_model.{k}": v.contiguous().clone() for k, v in vision_state.items()}
    tensors["text_model.embeddings.token_embedding.weight"] = torch.zeros(8, HIDDEN)
    tensors["logit_scale"] = torch.tensor(2.6592)
    save_file(tensors, str(directory / "model.safetensors"))
    _image_processor().save_pretrained(directory)
    return directory


def save_original_llava(
    hf_dir: str | Path,
    directory: str | Path,
    *,
    include_tower: bool = False,
    weights: str = "safetensors",
    tower_dir: str | Path | None = None,
    tower_path_in_config: str | None = None,
) -> tuple[Path, Path]:
    """Write the weights of the transformers-format ``hf_dir`` in the original LLaVA layout.

    Returns ``(checkpoint_dir, tower_dir)``. ``mm_vision_tower`` names ``tower_path_in_config`` when
    given (e.g. a hub id or a relative path), else the tower directory's absolute path.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    from models.llava_convert import original_config, to_original_state_dict

    hf_dir, directory = Path(hf_dir), Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = LlavaForConditionalGeneration.from_pretrained(hf_dir)
    cfg = model.config
    projector = "mlp2x_gelu" if cfg.projector_hidden_act == "gelu" else "linear"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    image_id = cfg.image_token_id
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        assert state[key].shape[0] == image_id + 1 and not state[key][image_id].any()
        state[key] = state[key][:image_id].contiguous()
    tensors = to_original_state_dict(state, projector, include_tower)
    if weights == "safetensors":
        save_file(tensors, str(directory / "model.safetensors"))
    else:
        torch.save(tensors, directory / "pytorch_model.bin")
    tower = Path(tower_dir) if tower_dir else directory.parent / f"{directory.name}-clip"
    vision_state = {k[len("model.vision_tower.") :]: v for k, v in state.items() if k.startswith("model.vision_tower.")}
    save_clip_tower(tower, vision_state, cfg.vision_config)
    text = cfg.text_config.to_dict()
    text["vocab_size"] = image_id
    config = original_config(
        text,
        cfg.vision_config.hidden_size,
        projector=projector,
        vision_tower=tower_path_in_config or str(tower.resolve()),
        select_layer=cfg.vision_feature_layer,
    )
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    _tokenizer_without(tokenizer, "<image>").save_pretrained(directory)
    return directory, tower
