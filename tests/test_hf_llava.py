"""hf-llava: one tiny LLaVA written in the transformers format and, with the same weights, in the
original LLaVA repository's layout; both loaded through the adapter as a user's checkpoint would be."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bench import api
from bench.interfaces import BenchError, GenerationRequest
from models.hf_llava import HFLlava, quick_fingerprint
from models.mllm_embed import HFLlavaEmbed
from reports.io import read_results
from tests.conftest import run_bench
from tests.tiny_models import save_original_llava, save_tiny_llava, vqa_requests

LLAVA_V1 = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: <image>\n{prompt} ASSISTANT:"
)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llava")
    hf = save_tiny_llava(root / "hf")
    orig, tower = save_original_llava(hf, root / "orig")  # separate CLIP dir, safetensors
    hf_lin = save_tiny_llava(root / "hf-linear", projector="linear", seed=1)
    orig_lin, _ = save_original_llava(hf_lin, root / "orig-linear", include_tower=True, weights="bin")
    return {"hf": hf, "orig": orig, "tower": tower, "hf_linear": hf_lin, "orig_linear": orig_lin}


@pytest.fixture(scope="module")
def requests_8() -> list[GenerationRequest]:
    requests = vqa_requests(8, max_new_tokens=10)  # synthcxr images and questions; the last one 3:4
    assert len({len(r.prompt) for r in requests}) > 3  # prompts of different lengths: padding matters
    return requests


def _load(path: Path, **kw) -> HFLlava:
    return HFLlava(pretrained=str(path), device="cpu", **kw)


def test_exporter_writes_the_original_layout(ckpts):
    config = json.loads((ckpts["orig"] / "config.json").read_text())
    assert config["architectures"] == ["LlavaLlamaForCausalLM"] and "text_config" not in config
    assert config["mm_vision_tower"] == str(ckpts["tower"].resolve()) and config["mm_projector_type"] == "mlp2x_gelu"
    keys = set(load_file(str(ckpts["orig"] / "model.safetensors")))
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.mm_projector.2.bias"} <= keys
    assert not any("vision_tower" in k for k in keys)
    assert "vision_model.embeddings.patch_embedding.weight" in load_file(str(ckpts["tower"] / "model.safetensors"))
    assert "<image>" not in (ckpts["orig"] / "tokenizer.json").read_text()
    included = torch.load(ckpts["orig_linear"] / "pytorch_model.bin", weights_only=True)
    assert "model.mm_projector.weight" in included and "model.mm_projector.2.weight" not in included
    assert "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias" in included


@pytest.mark.parametrize("pair", [("hf", "orig"), ("hf_linear", "orig_linear")], ids=["mlp2x_gelu", "linear"])
def test_round_trip_identical_logits_and_generations(ckpts, requests_8, pair):
    a, b = _load(ckpts[pair[0]]), _load(ckpts[pair[1]])
    assert (a.checkpoint_format, b.checkpoint_format) == ("transformers", "llava-original")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ia, ib = a.model_inputs(requests_8), b.model_inputs(requests_8)
    assert torch.equal(ia["input_ids"], ib["input_ids"]) and torch.equal(ia["attention_mask"], ib["attention_mask"])
    assert torch.equal(ia["pixel_values"], ib["pixel_values"])
    with torch.no_grad():
        la, lb = a.model(**ia).logits, b.model(**ib).logits
    vocab = a.model.config.text_config.vocab_size
    assert vocab == len(a.tokenizer) and la.shape == (8, ia["input_ids"].shape[1], vocab) and torch.equal(la, lb)
    ga, gb = a.generate_detailed(requests_8, scores=True), b.generate_detailed(requests_8, scores=True)
    assert [g.token_ids for g in ga] == [g.token_ids for g in gb]
    assert [g.text for g in ga] == [g.text for g in gb]
    assert len({g.text for g in ga}) > 4  # the answers depend on the image and the question
    info = b.describe()
    assert info["image_token_added_to_tokenizer"] is True and info["image_tokens_per_image"] == 16
    assert info["projector"] == ("linear" if pair[0] == "hf_linear" else "mlp2x_gelu")
    assert info["vision_tower"].startswith("checkpoint") == (pair[1] == "orig_linear")


def test_prompt_and_tokenization_follow_llava(ckpts, requests_8):
    model = _load(ckpts["orig"])
    info = model.describe()
    assert info["conv_template"] == "llava_v1" and info["prompt_example"] == LLAVA_V1
    assert "no chat template" in info["notes"][0]
    request = requests_8[0]
    ids = model.tokenize_original(model.render_prompt(request))
    image_id = model.image_token_id
    assert image_id == 400 and ids.count(image_id) == 16
    first = ids.index(image_id)
    assert ids[first : first + 16] == [image_id] * 16 and ids.count(model.tokenizer.bos_token_id) == 1
    assert ids[0] == model.tokenizer.bos_token_id
    after = model.tokenizer.decode(ids[first + 16 :])
    assert after == f"\n{request.prompt} ASSISTANT:"
    # a literal <image> in a task's prompt never becomes a second image slot
    tricky = GenerationRequest(images=request.images, prompt="What does <image> show?")
    assert model.tokenize_original(model.render_prompt(tricky)).count(image_id) == 16


def test_conversation_templates(ckpts):
    req = GenerationRequest(images=(), prompt="Q?")
    one = GenerationRequest(images=(), prompt="Q?", system="Be brief.")
    model = _load(ckpts["orig"], conv_template="v1")  # LLaVA-Rad's --conv_mode v1
    assert model.describe()["conv_template"] == "vicuna_v1"
    assert model.render_prompt(req, n_images=1) == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nQ? ASSISTANT:"
    )
    assert model.render_prompt(one, n_images=1) == "Be brief. USER: <image>\nQ? ASSISTANT:"
    model = _load(ckpts["hf"], conv_template="mistral_instruct")
    assert model.render_prompt(req, n_images=2) == "[INST] <image>\n<image>\nQ? [/INST]"
    assert model.render_prompt(one, n_images=1) == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image>\nQ? [/INST]"
    plain = _load(ckpts["hf"], conv_template="plain")
    assert plain.render_prompt(req, n_images=1) == "<image>\nQ?\n"
    fps = {_load(ckpts["hf"], conv_template=t).fingerprint() for t in ("llava_v1", "vicuna_v1", "plain")}
    assert len(fps) == 3


@pytest.mark.parametrize("name", ["hf", "orig"])
def test_batch_size_does_not_change_outputs(ckpts, requests_8, name):
    one = _load(ckpts[name], batch_size=1).generate_detailed(requests_8, scores=True)
    eight = _load(ckpts[name], batch_size=8).generate_detailed(requests_8, scores=True)
    for a, b in zip(one, eight, strict=True):
        assert a.token_ids == b.token_ids and a.text == b.text
        np.testing.assert_allclose(a.token_logits, b.token_logits, rtol=1e-4, atol=1e-4)
    assert sum(len(g.token_ids) for g in one) > 30


def test_sharded_original_checkpoint(ckpts, tmp_path):
    from safetensors.torch import save_file

    sharded = tmp_path / "sharded"
    shutil.copytree(ckpts["orig"], sharded)
    tensors = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(sharded / file))
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    a, b = _load(ckpts["orig"]).model.state_dict(), _load(sharded).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(BenchError, match=r"weight shard model-00002-of-00002\.safetensors listed in the index"):
        _load(sharded)


def test_quick_fingerprint_without_loading(ckpts):
    for name in ("hf", "orig", "orig_linear"):
        args = {"pretrained": str(ckpts[name]), "device": "cpu"}
        assert quick_fingerprint(args) == _load(ckpts[name]).fingerprint()
    base = _load(ckpts["orig"]).fingerprint()
    assert _load(ckpts["orig"], batch_size=3).fingerprint() == base
    assert _load(ckpts["orig"], max_new_tokens=4).fingerprint() != base
    assert len({base, _load(ckpts["hf"]).fingerprint(), _load(ckpts["orig_linear"]).fingerprint()}) == 3


def test_bench_run_vqa_in_both_formats(ckpts, tmp_path):
    out = tmp_path / "runs"
    args = ["--task", "synthcxr_vqa", "--limit", "16", "--output", str(out), "--bootstrap", "20", "--no-progress"]
    res = run_bench("run", "--model", "hf-llava", "--model-args", f"pretrained={ckpts['orig']}", *args)
    assert res.returncode == 0, res.stderr
    orig_run = read_results(Path(json.loads(res.stdout)["run_dir"]))
    hf_run = api.evaluate(
        "hf-llava",
        ["synthcxr_vqa"],
        model_args={"pretrained": str(ckpts["hf"])},
        limit=16,
        output=str(out),
        bootstrap=20,
        progress=False,
        log=lambda m: None,
    ).results
    preds = {}
    for run in (orig_run, hf_run):
        task = run["tasks"]["synthcxr_vqa"]
        assert task["n_samples"] == 16 and task["calls"]["model_items"] == 16
        assert set(task["metrics"]) >= {"vqa_closed_acc", "vqa_f1", "vqa_bleu1"}
        lines = (Path(out) / run["run_id"] / task["samples_file"]).read_text().splitlines()
        preds[run["model"]["description"]["format"]] = [json.loads(line)["prediction"] for line in lines]
    assert preds["llava-original"] == preds["transformers"]
    assert len(set(preds["transformers"])) > 4
    desc = orig_run["model"]["description"]
    assert desc["conv_template"] == "llava_v1" and desc["prompt_example"] == LLAVA_V1
    assert desc["vision_tower"] == str(ckpts["tower"].resolve())
    again = api.evaluate(
        "hf-llava",
        ["synthcxr_vqa"],
        model_args={"pretrained": str(ckpts["orig"])},
        limit=16,
        output=str(out),
        bootstrap=20,
        progress=False,
        log=lambda m: None,
    ).results["tasks"]["synthcxr_vqa"]
    assert again["calls"] == {**again["calls"], "model_items": 0, "cache_hits": 16}


def test_embed_variant_agrees_across_formats(ckpts, requests_8):
    images = [r.images[0] for r in requests_8]
    texts = ["pleural effusion", "no pleural effusion", "The lungs are clear. No pneumothorax."]
    a = HFLlavaEmbed(pretrained=str(ckpts["hf"]), device="cpu")
    b = HFLlavaEmbed(pretrained=str(ckpts["orig"]), device="cpu", batch_size=3)
    ea, eb = a.encode_images(images), b.encode_images(images)
    assert ea.shape == (8, 32) and ea.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ea, eb, atol=1e-5)
    np.testing.assert_allclose(a.encode_texts(texts), b.encode_texts(texts), atol=1e-5)
    assert a.capabilities == {"embed", "generate"} and a.fingerprint() != _load(ckpts["hf"]).fingerprint()


def test_bad_inputs_have_one_clear_message(ckpts, tmp_path):
    with pytest.raises(BenchError, match="checkpoint directory not found"):
        _load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match=r"has no config\.json"):
        _load(tmp_path / "empty")
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(BenchError, match=r"neither a transformers LLaVA checkpoint .* run with --model hf-vlm"):
        _load(tmp_path / "qwen")
    with pytest.raises(BenchError, match=r"unknown argument\(s\) embed_pool.*accepted: pretrained.*hf-llava-embed"):
        _load(ckpts["hf"], embed_pool="mean")
    with pytest.raises(BenchError, match="conv_template must be one of auto, chat_template, llava_v1"):
        _load(ckpts["hf"], conv_template="vicuna")
    with pytest.raises(BenchError, match="conv_template=chat_template but"):
        _load(ckpts["hf"], conv_template="chat_template")
    # an original checkpoint whose vision tower is not on disk: the key and the path are named
    broken = tmp_path / "moved"
    save_original_llava(ckpts["hf"], broken, tower_path_in_config="/data/clip-vit-tiny")
    with pytest.raises(BenchError, match=r"mm_vision_tower = '/data/clip-vit-tiny'.*vision_tower=DIR"):
        _load(broken)
    assert _load(broken, vision_tower=str(tmp_path / "moved-clip")).checkpoint_format == "llava-original"
    with pytest.raises(BenchError, match="vision_tower='/no/such/dir' is not a directory"):
        _load(broken, vision_tower="/no/such/dir")
    config = json.loads((broken / "config.json").read_text())
    for change, message in (
        ({"mm_projector_type": "mlp3x_gelu"}, "mm_projector_type 'mlp3x_gelu' is not supported"),
        ({"mm_vision_tower": "hf-hub:microsoft/BiomedCLIP"}, "open_clip/timm vision tower"),
        ({"image_aspect_ratio": "anyres"}, "any-resolution tiling"),
        ({"mm_hidden_size": 64}, "mm_hidden_size 64 does not match"),
        ({"mm_use_im_start_end": True}, "mm_use_im_start_end is true but the tokenizer lacks <im_start>, <im_end>"),
    ):
        (broken / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(BenchError, match=message):
            _load(broken, vision_tower=str(tmp_path / "moved-clip"))
    (broken / "config.json").write_text(json.dumps(config))
    # through the runner (what `bench run` prints, with exit status 2)
    with pytest.raises(BenchError, match=r"^model hf-llava: .*mm_vision_tower = '/data/clip-vit-tiny'"):
        api.evaluate(
            "hf-llava", ["synthcxr_vqa"], model_args={"pretrained": str(broken)}, limit=2, output=str(tmp_path)
        )
