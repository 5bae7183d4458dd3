"""hf-vlm and the -embed variants: tiny transformers LLaVA checkpoints (random weights, tokenizer
trained on the fly, processor with and without a chat template) loaded as a user's folder would be."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import api
from bench.interfaces import BenchError, GenerationRequest
from models.hf_vlm import HFVisionLanguageModel, quick_fingerprint
from models.mllm_embed import HFVLMEmbed, quick_fingerprint_vlm
from tests.tiny_models import CHAT_TEMPLATE, save_tiny_llava, train_tokenizer, vqa_requests


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm")
    return {
        "chat": save_tiny_llava(root / "chat", chat_template=CHAT_TEMPLATE),
        "plain": save_tiny_llava(root / "plain", seed=3),
    }


@pytest.fixture(scope="module")
def chat(dirs) -> HFVisionLanguageModel:
    return HFVisionLanguageModel(pretrained=str(dirs["chat"]), device="cpu")


@pytest.fixture(scope="module")
def requests_8() -> list[GenerationRequest]:
    return vqa_requests(8, max_new_tokens=10)


def test_chat_template_prompt_and_left_padded_inputs(chat, requests_8):
    info = chat.describe()
    assert info["prompt_format"] == "chat_template" and info["notes"] == []
    assert info["prompt_example"] == "USER: <image> {prompt}\nASSISTANT:"
    assert info["padding_side"] == "left" and info["dtype"] == "float32" and info["image_token_id"] == 400
    system = GenerationRequest(images=(), prompt="Q?", system="Be brief.")
    assert chat.render_prompt(system, n_images=2) == "SYSTEM: Be brief.\nUSER: <image> <image> Q?\nASSISTANT:"
    enc = chat.model_inputs(requests_8[:3])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert enc["pixel_values"].shape == (3, 3, 32, 32)
    for row in range(3):
        real = ids[row][mask[row].bool()].tolist()
        assert real[0] == chat.tokenizer.bos_token_id and real.count(chat.tokenizer.bos_token_id) == 1
        assert real.count(400) == 16
    assert mask[:, -1].all() and not mask[:, 0].all()  # padding on the left only


def test_plain_fallback_is_recorded(dirs):
    plain = HFVisionLanguageModel(pretrained=str(dirs["plain"]), device="cpu")
    info = plain.describe()
    assert info["prompt_format"] == "plain" and info["prompt_example"] == "USER: <image>\n{prompt} ASSISTANT:"
    assert "no chat template" in info["notes"][0]
    with pytest.raises(BenchError, match=r"prompt_format=chat_template but .* has no chat template"):
        HFVisionLanguageModel(pretrained=str(dirs["plain"]), device="cpu", prompt_format="chat_template")
    forced = HFVisionLanguageModel(pretrained=str(dirs["chat"]), device="cpu", prompt_format="plain")
    assert forced.describe()["prompt_format"] == "plain"


def test_batch_size_does_not_change_outputs(dirs, chat, requests_8):
    one = HFVisionLanguageModel(pretrained=str(dirs["chat"]), device="cpu", batch_size=1)
    single = one.generate_detailed(requests_8, scores=True)
    batched = chat.generate_detailed(requests_8, scores=True)
    for a, b in zip(single, batched, strict=True):
        assert a.token_ids == b.token_ids and a.text == b.text
        np.testing.assert_allclose(a.token_logits, b.token_logits, rtol=1e-4, atol=1e-4)
    assert len({g.text for g in batched}) > 4 and sum(len(g.token_ids) for g in batched) > 30
    # requests with other decoding options in the same call are batched apart, in request order
    mixed = [r if i % 2 else GenerationRequest(r.images, r.prompt, max_new_tokens=3) for i, r in enumerate(requests_8)]
    out = chat.generate_detailed(mixed)
    assert [g.token_ids for g in out[1::2]] == [g.token_ids for g in batched[1::2]]
    assert [g.token_ids for g in out[::2]] == [g.token_ids[:3] for g in batched[::2]]


def test_decoding_options_and_new_tokens_only(dirs, chat, requests_8):
    greedy = chat.generation_kwargs(requests_8[0])
    assert greedy["do_sample"] is False and greedy["max_new_tokens"] == 10 and greedy["suppress_tokens"] == [400]
    sampled = GenerationRequest(requests_8[0].images, "Q?", max_new_tokens=6, temperature=0.7, top_p=0.9)
    kw = chat.generation_kwargs(sampled)
    assert (kw["do_sample"], kw["temperature"], kw["top_p"], kw["top_k"]) == (True, 0.7, 0.9, 0)
    for gen in chat.generate_detailed(requests_8[:4]):
        assert gen.text == chat.tokenizer.decode(gen.token_ids, skip_special_tokens=True).strip()
        assert "ASSISTANT" not in gen.text and 400 not in gen.token_ids
    capped = HFVisionLanguageModel(pretrained=str(dirs["chat"]), device="cpu", max_new_tokens=3)
    assert all(len(g.token_ids) <= 3 for g in capped.generate_detailed(requests_8))
    assert capped.describe()["decoding"]["max_new_tokens"] == 3
    # sampling runs and is reproducible from the seed
    draws = [HFVisionLanguageModel(pretrained=str(dirs["chat"]), device="cpu", seed=5) for _ in range(2)]
    first = [d.generate([sampled] * 3) for d in draws]
    second = [d.generate([sampled] * 3) for d in draws]
    assert first[0] == first[1] and second[0] == second[1] and first[0] != second[0]


def test_bfloat16_on_cpu(dirs, requests_8):
    model = HFVisionLanguageModel(pretrained=str(dirs["chat"]), device="cpu", dtype="bfloat16")
    assert next(model.model.parameters()).dtype == torch.bfloat16 and model.describe()["dtype"] == "bfloat16"
    assert len(model.generate(requests_8[:2])) == 2


def test_fingerprint_from_files_and_output_changing_args(dirs, chat, tmp_path):
    args = {"pretrained": str(dirs["chat"]), "device": "cpu"}
    base = chat.fingerprint()
    assert quick_fingerprint(args) == base
    assert quick_fingerprint({**args, "batch_size": 2}) == base  # batch size does not change outputs
    changed = {quick_fingerprint({**args, **extra}) for extra in ({"dtype": "bfloat16"}, {"max_new_tokens": 5})}
    assert base not in changed and len(changed) == 2
    assert quick_fingerprint({**args, "prompt_format": "plain"}) != base
    copy = tmp_path / "copy"
    shutil.copytree(dirs["chat"], copy)
    assert quick_fingerprint({**args, "pretrained": str(copy)}) == base  # same files, another folder
    save_tiny_llava(tmp_path / "other", chat_template=CHAT_TEMPLATE, seed=1)
    shutil.copy(tmp_path / "other" / "model.safetensors", copy / "model.safetensors")
    assert quick_fingerprint({**args, "pretrained": str(copy)}) != base
    assert quick_fingerprint({"pretrained": str(tmp_path / "missing")}) is None


def test_embed_variant_pools_hidden_states(dirs, requests_8):
    model = HFVLMEmbed(pretrained=str(dirs["chat"]), device="cpu")
    images = [r.images[0] for r in requests_8]
    emb = model.encode_images(images)
    assert emb.shape == (8, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    one = HFVLMEmbed(pretrained=str(dirs["chat"]), device="cpu", batch_size=1)
    np.testing.assert_allclose(one.encode_images(images), emb, atol=1e-5)
    # the mean of the last layer's states at the image tokens, computed by hand
    inputs = model.image_only_inputs(images[:1])
    with torch.no_grad():
        states = model.model(**inputs, output_hidden_states=True).hidden_states[-1][0]
    manual = states[inputs["input_ids"][0] == 400].mean(dim=0)
    np.testing.assert_allclose(emb[0], (manual / manual.norm()).numpy(), atol=1e-5)
    texts = ["pleural effusion", "no pleural effusion", "The lungs are clear. No pneumothorax."]
    txt = model.encode_texts(texts)
    np.testing.assert_allclose(one.encode_texts(texts), txt, atol=1e-5)
    enc = model.tokenizer(texts[2], return_tensors="pt")
    with torch.no_grad():
        states = model.model(**enc, output_hidden_states=True).hidden_states[-1][0]
    manual = states[1:].mean(dim=0)  # BOS left out
    np.testing.assert_allclose(txt[2], (manual / manual.norm()).numpy(), atol=1e-5)
    last = HFVLMEmbed(pretrained=str(dirs["chat"]), device="cpu", embed_pool="last").encode_texts(texts)
    np.testing.assert_allclose(last[2], (states[-1] / states[-1].norm()).numpy(), atol=1e-5)
    prompt = HFVLMEmbed(pretrained=str(dirs["chat"]), device="cpu", embed_input="prompt")
    assert np.abs(prompt.encode_images(images[:2]) - emb[:2]).max() > 1e-3
    assert "each image alone" in model.describe()["embedding"]["image_input"]
    assert quick_fingerprint_vlm({"pretrained": str(dirs["chat"]), "device": "cpu"}) == model.fingerprint()
    assert len({model.fingerprint(), prompt.fingerprint(), HFVisionLanguageModel(**model.args).fingerprint()}) == 3
    with pytest.raises(BenchError, match="embed_layer=40 is out of range"):
        HFVLMEmbed(pretrained=str(dirs["chat"]), device="cpu", embed_layer=40).encode_texts(["x"])
    with pytest.raises(BenchError, match="embed_pool must be one of mean, last"):
        HFVLMEmbed(pretrained=str(dirs["chat"]), device="cpu", embed_pool="max")


def test_bench_run_generate_and_embed_tasks(dirs, tmp_path):
    def run() -> dict:
        return api.evaluate(
            "hf-vlm-embed",
            ["synthcxr_vqa", "synthcxr_zs"],
            model_args={"pretrained": str(dirs["chat"]), "batch_size": 4},
            limit=16,
            output=str(tmp_path),
            bootstrap=20,
            progress=False,
            log=lambda m: None,
        ).results

    first, second = run(), run()
    vqa, zs = first["tasks"]["synthcxr_vqa"], first["tasks"]["synthcxr_zs"]
    assert vqa["n_samples"] == 16 and vqa["calls"]["model_items"] == 16
    assert "vqa_closed_acc" in vqa["metrics"] and "AUC" in zs["metrics"] and zs["n_samples"] == 16
    assert first["model"]["description"]["embedding"]["pool"] == "mean"
    assert first["model"]["capabilities"] == ["embed", "generate"]
    for name in ("synthcxr_vqa", "synthcxr_zs"):
        assert second["tasks"][name]["calls"]["model_items"] == 0
        assert second["tasks"][name]["metrics"] == first["tasks"][name]["metrics"]


def test_bad_inputs_have_one_clear_message(dirs, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = tmp_path / "llama"
    tok = train_tokenizer()
    LlamaForCausalLM(
        LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=400)
    ).save_pretrained(text_only)
    tok.save_pretrained(text_only)
    with pytest.raises(BenchError, match="holds no multimodal processor"):
        HFVisionLanguageModel(pretrained=str(text_only), device="cpu")
    good = {"pretrained": str(dirs["chat"]), "device": "cpu"}
    for extra, message in (
        ({"temperature": 0.5}, r"unknown argument\(s\) temperature; accepted: pretrained, device, dtype"),
        ({"embed": True}, r"embedding arguments belong to --model hf-vlm-embed"),
        ({"dtype": "fp8"}, "dtype must be one of auto, bfloat16, float16, float32"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"batch_size": "many"}, "batch_size='many' must be int"),
        ({"prompt_format": "raw"}, "prompt_format must be one of auto, chat_template, plain"),
        ({"pretrained": None}, "pass the checkpoint directory with --model-args pretrained=DIR"),
    ):
        with pytest.raises(BenchError, match=message):
            HFVisionLanguageModel(**{**good, **extra})
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="CUDA is not available"):
            HFVisionLanguageModel(**{**good, "device": "cuda"})
