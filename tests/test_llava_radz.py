"""Tests of the llava-radz reference model (LLaVA-RadZ: DFAT + DKAM on a trained llava-rad foundation)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import api
from bench.data import synthcxr as synth
from bench.data.vocab import CHEXPERT_LABELS
from bench.interfaces import BACKBONE, EMBED, GENERATE, TRAIN, BenchError, GenerationRequest, Sample, stable_hash
from bench.plugins import registry
from bench.runner import data_root, dataset_folder
from models.components.mllm import build_causal_lm
from models.components.trainer import state_dict_bytes
from models.reference import llava_radz as rz
from models.reference.llava_radz import (
    IMAGE,
    LOCAL,
    PRESETS,
    SPECIAL,
    LlavaRadZ,
    category_guided_loss,
    cross_alignment_loss,
    info_nce,
    joint_embedding,
    quick_fingerprint,
    total_loss,
)

ZS = "synthcxr_zs"


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.fixture(scope="module")
def synthcxr():
    folder = dataset_folder(registry().get("datasets", "synthcxr"), data_root(None))
    return lambda split: synth.load(folder, split)


@pytest.fixture(scope="module")
def random_model() -> LlavaRadZ:
    model = LlavaRadZ(device="cpu", batch_size=8)
    _ = model.model  # built on first use
    return model


# --------------------------------------------------------------------------- losses (hand-computed cases)


def test_info_nce_hand_computed_and_symmetric():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # S = a b^T / tau = [[1, .6], [0, .8]] (tau = 1); a->b rows, b->a columns (Eqs. 6-7)
    rows = _softplus(-0.4) + _softplus(-0.8)
    cols = _softplus(-1.0) + _softplus(-0.2)
    expected = 0.5 * (rows + cols)  # Eq. 8: 1/2 sum_i (L^{a->b,i} + L^{b->a,i})
    assert float(info_nce(a, b, 1.0)) == pytest.approx(expected, rel=1e-6)
    assert float(info_nce(a, b, 1.0, reduction="mean")) == pytest.approx(expected / 2, rel=1e-6)
    assert float(info_nce(b, a, 1.0)) == pytest.approx(expected, rel=1e-6)  # symmetric in its two arguments
    # the temperature divides the similarities
    assert float(info_nce(a, a, 0.5)) == pytest.approx(2 * _softplus(-2.0), rel=1e-6)
    # identical texts: a duplicate pair shares the target mass instead of being a negative
    same = torch.tensor([[True, True], [True, True]])
    logits = torch.tensor([[1.0, 0.6], [0.0, 0.8]])
    soft_rows = -(0.5 * torch.log_softmax(logits, 1)).sum(1)
    soft_cols = -(0.5 * torch.log_softmax(logits.t(), 1)).sum(1)
    assert float(info_nce(a, b, 1.0, same)) == pytest.approx(float(0.5 * (soft_rows + soft_cols).sum()), rel=1e-6)
    with pytest.raises(BenchError, match="needs the positives matrix"):
        info_nce(a, b[:1], 1.0)
    # more texts than images (several captions per image): the two directions are reduced apart
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    owner = torch.tensor([[True, False, False], [False, True, True]])
    logits = a @ texts.t()
    i2t = -(owner.float() / owner.sum(1, keepdim=True) * torch.log_softmax(logits, 1)).sum(1).sum()
    t2i = -torch.log_softmax(logits.t(), 1)[torch.arange(3), torch.tensor([0, 1, 1])].sum()
    assert float(info_nce(a, texts, 1.0, owner)) == pytest.approx(float(0.5 * (i2t + t2i)), rel=1e-6)
    with pytest.raises(BenchError, match="one in every row"):
        info_nce(a, texts, 1.0, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(BenchError, match="reduction"):
        info_nce(a, b, 1.0, reduction="max")


def test_cross_alignment_pairs_global_with_local():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    l_ab = info_nce(a, b, 1.0)
    # Eq. 10 with X_g = a, Y_l = b (Eq. 8) and X_l = Y_g = a (Eq. 9: 2 log(1 + e^-1))
    got = cross_alignment_loss(x_global=a, x_local=a, y_global=a, y_local=b, tau=1.0)
    assert float(got) == pytest.approx(0.5 * (float(l_ab) + 2 * _softplus(-1.0)), rel=1e-6)
    # the global text feature is never paired with the global image feature
    swapped = cross_alignment_loss(x_global=a, x_local=a, y_global=b, y_local=a, tau=1.0)
    assert float(swapped) == pytest.approx(float(got), rel=1e-6)
    other = cross_alignment_loss(x_global=b, x_local=a, y_global=b, y_local=a, tau=1.0)
    assert float(other) == pytest.approx(float(l_ab), rel=1e-6)


def test_category_guided_loss_hand_computed():
    xg = torch.tensor([[1.0, 0.0]])
    yg = torch.tensor([[0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Eq. 13-15: image logits (1, 0, -1), text logits (0, 1, 0); the pair's category is 0
    l_img = math.log(1 + math.exp(-1) + math.exp(-2))
    l_txt = math.log(2 + math.e)
    one = category_guided_loss(xg, yg, d, torch.tensor([[1.0, 0.0, 0.0]]), tau=1.0)
    assert float(one) == pytest.approx(0.5 * (l_img + l_txt), rel=1e-6)
    # two categories: the target mass spreads over them
    two = category_guided_loss(xg, yg, d, torch.tensor([[1.0, 1.0, 0.0]]), tau=1.0)
    li = -torch.log_softmax(torch.tensor([1.0, 0.0, -1.0]), 0)
    lt = -torch.log_softmax(torch.tensor([0.0, 1.0, 0.0]), 0)
    assert float(two) == pytest.approx(float(0.5 * (0.5 * (li[0] + li[1]) + 0.5 * (lt[0] + lt[1]))), rel=1e-6)
    # a pair without a category adds nothing (sum) and is not counted (mean); tau scales the logits
    x2, y2 = torch.cat([xg, yg]), torch.cat([yg, xg])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert float(category_guided_loss(x2, y2, d, targets, 1.0)) == pytest.approx(float(one), rel=1e-6)
    assert float(category_guided_loss(x2, y2, d, targets, 1.0, "mean")) == pytest.approx(float(one), rel=1e-6)
    assert float(category_guided_loss(x2, y2, d, torch.zeros(2, 3), 1.0)) == 0.0
    half = category_guided_loss(xg, yg, d, torch.tensor([[1.0, 0.0, 0.0]]), tau=0.5)
    l_img2 = math.log(1 + math.exp(-2) + math.exp(-4))
    l_txt2 = math.log(2 + math.exp(2))
    assert float(half) == pytest.approx(0.5 * (l_img2 + l_txt2), rel=1e-6)
    with pytest.raises(BenchError, match="targets have shape"):
        category_guided_loss(xg, yg, d, torch.ones(1, 2), 1.0)


def test_pool_rows_averages_the_rows_of_each_text():
    z = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    assert rz.pool_rows(z, torch.tensor([0, 0, 1]), 2).tolist() == [[2.0, 1.0], [5.0, 5.0]]
    assert rz.pool_rows(z, torch.tensor([0, 1, 2]), 3).tolist() == z.tolist()


def test_total_loss_is_the_lambda_combination():
    l_ca, l_cg = torch.tensor(2.0), torch.tensor(4.0)
    assert float(total_loss(l_ca, l_cg, 0.5)) == pytest.approx(3.0)  # Eq. 16, lambda = 0.5
    assert float(total_loss(l_ca, l_cg, 0.25)) == pytest.approx(0.25 * 2 + 0.75 * 4)
    assert float(total_loss(l_ca, l_cg, 1.0)) == pytest.approx(2.0)
    assert float(total_loss(l_ca, None, 0.5)) == pytest.approx(2.0)  # DKAM off: L_CA alone


def test_joint_embedding_scores_the_two_cross_pairings():
    gen = torch.Generator().manual_seed(0)
    xg, xl, yg, yl = (torch.randn(3, 5, generator=gen) for _ in range(4))
    img = joint_embedding(xg, xl, "both", image=True)
    txt = joint_embedding(yg, yl, "both", image=False)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3)) and torch.allclose(txt.norm(dim=-1), torch.ones(3))
    cos = torch.nn.functional.cosine_similarity
    expected = 0.5 * (cos(xg[:, None], yl[None], dim=-1) + cos(xl[:, None], yg[None], dim=-1))
    assert torch.allclose(img @ txt.t(), expected, atol=1e-6)
    assert torch.allclose(joint_embedding(xg, xl, "global", True), torch.nn.functional.normalize(xg, dim=-1))
    assert torch.allclose(joint_embedding(yg, yl, "local", False), torch.nn.functional.normalize(yl, dim=-1))


# --------------------------------------------------------------------------- libraries and targets


def test_shipped_libraries():
    diseases = rz.read_library(rz.LIBRARY_FILES["disease"])
    described = rz.lookup_descriptions(diseases, [*CHEXPERT_LABELS, *synth.LABELS], "the disease file")
    assert set(described) >= set(CHEXPERT_LABELS) and all(len(t.split()) >= 12 for t in described.values())
    entities = rz.read_library(rz.LIBRARY_FILES["entity"])
    assert len(entities) >= 75
    assert {"effusion", "pneumothorax", "nodule", "tube", "pacemaker"} <= set(entities)


def test_library_file_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("# comment\nEdema: fluid\nno colon here\n")
    with pytest.raises(BenchError, match=r"bad\.txt:3: expected 'Name: description'"):
        rz.read_library(bad)
    bad.write_text("Edema: fluid\nedema: again\n")
    with pytest.raises(BenchError, match="described twice"):
        rz.read_library(bad)
    bad.write_text("# nothing\n\n")
    with pytest.raises(BenchError, match="holds no"):
        rz.read_library(bad)
    with pytest.raises(BenchError, match="cannot read the descriptions file"):
        rz.read_library(tmp_path / "missing.txt")
    with pytest.raises(BenchError, match="no description for Nodule"):
        rz.lookup_descriptions({"Edema": "fluid"}, ["edema", "Nodule"], "x.txt")


def test_entity_and_disease_targets():
    names = ["nodule", "pneumothorax", "effusion", "enlarge", "low lung volumes"]
    got = rz.entity_targets(
        ["A small nodule in the right lung. No pneumothorax. The heart is enlarged; low lung volumes.", ""], names
    )
    assert got.tolist() == [[1, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    samples = [
        Sample(id="a", dataset="t", split="train", labels={"Edema": 1, "Nodule": -1, "No Finding": 0}),
        Sample(id="b", dataset="t", split="train", labels={"Edema": 0, "Nodule": None, "No Finding": 1}),
    ]
    names, targets, source = rz.disease_targets(samples)
    assert (names, source) == (["Edema", "Nodule", "No Finding"], "labels")
    assert targets.tolist() == [[1, 1, 0], [0, 0, 1]]  # uncertain counts as present
    unlabeled = [Sample(id="c", dataset="t", split="train", sections={"findings": "Large right pleural effusion."})]
    names, targets, source = rz.disease_targets(unlabeled)
    assert source == "rule labeler" and set(names) == set(CHEXPERT_LABELS)
    assert targets[0, names.index("Pleural Effusion")] == 1 and targets.sum() == 1


# --------------------------------------------------------------------------- the network pieces


def test_decoder_hidden_is_the_requested_layer_without_running_the_rest():
    lm = build_causal_lm(
        {
            "vocab_size": 50,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 64,
        }
    )
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        hidden = lm.model(inputs_embeds=x, attention_mask=mask, output_hidden_states=True).hidden_states
        calls: list[int] = []
        handle = lm.model.layers[2].register_forward_hook(lambda *_: calls.append(1))
        for layer in (-1, -2, -3, 1, 2, 3):
            assert torch.allclose(rz.decoder_hidden(lm, x, mask, layer), hidden[layer], atol=1e-6), layer
        handle.remove()
    assert len(calls) == 2  # the last layer ran only for -1 and 3
    with pytest.raises(BenchError, match="not a layer"):
        rz.decoder_hidden(lm, x, mask, 0)


def test_branch_layouts(random_model):
    m = random_model
    ids, kinds = m._layout("image")
    kinds = kinds[0].tolist()
    assert kinds.count(IMAGE) == 64 and kinds.count(SPECIAL) == PRESETS["tiny"]["train"]["n_img_tokens"] == 4
    # <s> USER: <image> prompt <ImgCls>*4 ASSISTANT:  (Eq. 1: the special tokens follow the prompt)
    first_special = kinds.index(SPECIAL)
    assert kinds.index(IMAGE) < first_special and kinds[first_special : first_special + 4] == [SPECIAL] * 4
    prompt_ids = m.tok.encode(m.config["image_prompt"])
    assert ids[0, first_special - len(prompt_ids) : first_special].tolist() == prompt_ids
    assert ids[0, 0].item() == m.tok.bos_id and all(k == LOCAL for k in kinds[first_special + 4 :])
    rows = m._text_rows(["no pneumothorax", "a much longer text about a small left pleural effusion"])
    t_kinds = rows["kinds"]
    assert (t_kinds == SPECIAL).sum(1).tolist() == [8, 8]  # Eq. 2: 8 <TxtCls> tokens per text
    assert (t_kinds[0] == 0).any() and not (t_kinds[1] == 0).any()  # right padding of the shorter text
    assert rows["owner"].tolist() == rows["unit"].tolist() == [0, 1]
    # the tiny preset pools a text over its sentences; a sentence repeated in the batch runs once
    assert m.config["text_pooling"] == "sentences"
    rows = m._text_rows(["No pneumothorax. Small left effusion.", "Edema. No pneumothorax."])
    assert rows["kinds"].shape[0] == 3 and rows["owner"].tolist() == [0, 0, 1, 1]
    assert rows["unit"].tolist() == [0, 1, 2, 0]
    pooled = m.encode_texts(["No pneumothorax. Small left effusion."])
    parts = m.encode_texts(["No pneumothorax.", "Small left effusion."])
    with torch.no_grad():
        g, loc = m.text_features(["No pneumothorax.", "Small left effusion."])
    expected = joint_embedding(g.mean(0, keepdim=True), loc.mean(0, keepdim=True), "both", image=False)
    assert np.allclose(pooled, expected.numpy(), atol=1e-5) and not np.allclose(pooled, parts[0], atol=1e-3)
    no_prompt, no_kinds = rz.branch_layout(m.tok, None, 4, n_image=64)
    assert len(no_prompt) == ids.shape[1] - len(prompt_ids) and no_kinds.count(SPECIAL) == 4


# --------------------------------------------------------------------------- the adapter


def test_class_attributes_and_presets():
    assert LlavaRadZ.name == "llava-radz"
    assert LlavaRadZ.capabilities == frozenset({EMBED, BACKBONE, GENERATE, TRAIN})
    assert set(PRESETS) == {"tiny", "paper"}
    paper = PRESETS["paper"]["train"]
    assert (paper["lr"], paper["weight_decay"], paper["warmup_ratio"], paper["batch_size"]) == (2e-5, 0.0, 0.03, 64)
    assert (paper["n_img_tokens"], paper["n_txt_tokens"], paper["tau"], paper["lambda_ca"]) == (4, 8, 0.05, 0.5)
    assert paper["feature_layer"] == -2 and PRESETS["paper"]["base_preset"] == "paper"
    tiny = PRESETS["tiny"]["train"]
    assert (tiny["n_img_tokens"], tiny["n_txt_tokens"], tiny["tau"], tiny["lambda_ca"]) == (4, 8, 0.05, 0.5)


def test_bad_arguments():
    with pytest.raises(BenchError, match=r"unknown argument\(s\) colour.*accepted: checkpoint, base, preset"):
        LlavaRadZ(colour="blue")
    with pytest.raises(BenchError, match=r"unknown preset 'huge'.*tiny, paper"):
        LlavaRadZ(preset="huge")
    with pytest.raises(BenchError, match="not both"):
        LlavaRadZ(checkpoint="a", base="b")
    with pytest.raises(BenchError, match="base checkpoint directory not found"):
        LlavaRadZ(base="/nonexistent/base", device="cpu")


def test_random_model_embeddings(random_model, synthcxr):
    m = random_model
    assert m.describe()["kind"] == "generative (decoder features)" and m.describe()["trained"] is False
    images = [s.image for s in synthcxr("val")[:3]]
    a = m.encode_images(images)
    assert a.shape == (3, 512) and a.dtype == np.float32  # [X_g, X_l]: twice the decoder width
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, m.encode_images(images))
    t = m.encode_texts(["pleural effusion", "no pleural effusion"])
    assert t.shape == (2, 512) and np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert m.encode_texts([]).shape == (0, 512) and m.encode_images([]).shape == (0, 512)
    with pytest.raises(BenchError, match="not a single string"):
        m.encode_texts("pleural effusion")
    other = LlavaRadZ(device="cpu", batch_size=2)
    assert other.fingerprint() == m.fingerprint() != LlavaRadZ(device="cpu", seed=1).fingerprint()
    assert np.allclose(other.encode_images(images), a, atol=1e-5)
    backbone, dim = m.image_backbone()
    with torch.no_grad():
        feats = backbone(m.preprocess(images))
    assert dim == 256 and feats.shape == (3, 256)


def test_fit_rejects_bad_configuration(random_model, synthcxr):
    data = synthcxr("train")[:4]
    with pytest.raises(BenchError, match=r"unknown config key\(s\) lamda;.*accepted: .*base, descriptions, dkam"):
        random_model.fit(data, {"lamda": 0.5})
    for key, value, message in (
        ("library", "umls", "library must be one of disease, entity"),
        ("features", "all", "features must be one of both, global, local"),
        ("prompt", "maybe", "prompt must be true or false"),
        ("dkam", 2, "dkam must be true or false"),
        ("lambda_ca", 1.5, r"lambda_ca must lie in \[0, 1\]"),
        ("epochs", 0, "epochs must be positive"),
        ("tau", "cold", "bad numeric option"),
    ):
        with pytest.raises(BenchError, match=message):
            random_model.fit(data, {key: value})
    with pytest.raises(BenchError, match="at least 2 samples"):
        random_model.fit([], {})
    with pytest.raises(BenchError, match="give base=DIR"):
        LlavaRadZ(preset="paper", device="cpu").fit(data, {"preset": "paper"})


# --------------------------------------------------------------------------- short fits on the trained foundation


def _quick_fit(base: Path, data: list[Sample], **switches) -> LlavaRadZ:
    model = LlavaRadZ(device="cpu", batch_size=8)
    model.fit(data, {"base": str(base), "epochs": 1, "batch_size": 8, "seed": 3, **switches})
    return model


def test_ablation_switches_and_description_sources(trained_llava_rad, synthcxr, tmp_path):
    data = synthcxr("train")[:16]
    plain = _quick_fit(trained_llava_rad, data, dkam=False, features="global", prompt=False)
    cfg = plain.config
    assert cfg["dkam"]["enabled"] is False and cfg["features"] == "global" and cfg["image_prompt"] is None
    assert plain.model.dis_head is None and plain.model.library.shape[0] == 0
    assert plain.encode_texts(["edema"]).shape == (1, 256)  # one feature kind: the decoder width
    assert cfg["train"]["steps"] == 2 and cfg["train"]["base"]["checkpoint"] == str(trained_llava_rad)

    entity = _quick_fit(trained_llava_rad, data, library="entity", features="local", descriptions="builtin")
    dk = entity.config["dkam"]
    assert dk["library"] == "entity" and len(dk["names"]) == entity.model.library.shape[0] >= 75
    assert dk["descriptions"]["pneumothorax"].startswith("Air lies between")
    assert entity.config["train"]["dkam"]["pairs_with_a_category"] > 10

    own = tmp_path / "mine.txt"
    own.write_text("\n".join(f"{n}: my words about {n.lower()}" for n in synth.LABELS))
    from_file = _quick_fit(trained_llava_rad, data, descriptions=str(own))
    assert from_file.config["dkam"]["descriptions"]["Nodule"] == "my words about nodule"
    assert from_file.config["dkam"]["names"] == list(synth.LABELS)
    missing = tmp_path / "short.txt"
    missing.write_text("Edema: fluid\n")
    with pytest.raises(BenchError, match="no description for Atelectasis"):
        _quick_fit(trained_llava_rad, data, descriptions=str(missing))

    again = _quick_fit(trained_llava_rad, data, descriptions=str(own))
    # deterministic with a seed: the same weights (the fingerprint also covers the recorded training time)
    assert state_dict_bytes(again.model) == state_dict_bytes(from_file.model)


# --------------------------------------------------------------------------- the trained tiny preset


@pytest.fixture(scope="module")
def trained(trained_llava_rad: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("radz") / "llava-radz-tiny-synthcxr"
    start = time.perf_counter()
    api.train(
        "llava-radz",
        "tiny",
        "synthcxr",
        out,
        seed=0,
        device="cpu",
        log=lambda m: None,
        train_args={"base": str(trained_llava_rad)},
    )
    seconds = time.perf_counter() - start
    runs = tmp_path_factory.mktemp("radz-runs")
    scores = {}
    for name, args in (("trained", {"checkpoint": str(out)}), ("untrained", {"base": str(trained_llava_rad)})):
        outcome = api.evaluate(
            "llava-radz", [ZS], log=lambda m: None, model_args=args, output=str(runs), bootstrap=0, device="cpu"
        )
        scores[name] = outcome.results
    return {"checkpoint": out, "seconds": seconds, **scores}


def _auc(results: dict) -> float:
    return float(results["tasks"][ZS]["metrics"]["AUC"]["value"])


@pytest.mark.slow
def test_tiny_preset_reaches_the_must_show_auc(trained):
    auc, auc0 = _auc(trained["trained"]), _auc(trained["untrained"])
    print(f"llava-radz tiny: trained in {trained['seconds']:.0f} s, {ZS} AUC {auc:.3f} (untrained {auc0:.3f})")
    assert auc >= 0.85
    assert auc >= auc0 + 0.15


@pytest.mark.slow
def test_trained_checkpoint_records_dkam_and_identity(trained, tmp_path):
    ck: Path = trained["checkpoint"]
    config = json.loads((ck / "config.json").read_text())
    dk = config["dkam"]
    assert dk["enabled"] and dk["library"] == "disease" and dk["source"] == "generate"
    assert dk["names"] == list(synth.LABELS) and all(dk["descriptions"][n] for n in dk["names"])
    assert config["train"]["samples"] == 1400 and config["train"]["lora"]["merged"] is True
    record = json.loads((ck / "training.json").read_text())
    # the unsaved trained model's fingerprint (written by api.train) is the saved checkpoint's
    assert record["fingerprint"] == quick_fingerprint({"checkpoint": str(ck)})
    # the run names the model by these weights (runner: model name + weights fingerprint)
    assert trained["trained"]["model"]["fingerprint"] == stable_hash(
        {"model": "llava-radz", "weights": record["fingerprint"]}, 32
    )
    loaded = LlavaRadZ(checkpoint=str(ck), device="cpu")
    assert loaded.fingerprint() == record["fingerprint"] and loaded.describe()["trained"] is True
    loaded.save(tmp_path / "again")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "encoder_tokenizer.json"):
        assert (ck / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert quick_fingerprint({"preset": "tiny"}) is None and quick_fingerprint({"base": str(ck)}) is None


@pytest.mark.slow
def test_trained_model_still_generates(trained, synthcxr):
    model = LlavaRadZ(checkpoint=str(trained["checkpoint"]), device="cpu")
    image = synthcxr("test")[0].image
    requests = [
        GenerationRequest(images=(image,), prompt="Describe the findings of this chest X-ray.", max_new_tokens=40),
        GenerationRequest(images=(), prompt="What is a pleural effusion?", max_new_tokens=20),
    ]
    first = model.generate(requests)
    assert len(first) == 2 and all(isinstance(t, str) and t.strip() for t in first)
    assert model.generate(requests) == first  # greedy decoding is deterministic
    assert len(first[0].split()) >= 3


@pytest.mark.slow
def test_bad_checkpoints_give_clear_errors(trained, tmp_path):
    ck: Path = trained["checkpoint"]
    with pytest.raises(BenchError, match="checkpoint directory not found"):
        LlavaRadZ(checkpoint=str(tmp_path / "nowhere"))
    model = LlavaRadZ(checkpoint=str(ck), device="cpu")
    bad = tmp_path / "bad"
    model.save(bad)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(BenchError, match=r"bad is missing tokenizer\.json"):
        LlavaRadZ(checkpoint=str(bad))
    model.save(bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(BenchError, match=r"cannot read model\.safetensors"):
        LlavaRadZ(checkpoint=str(bad))
    model.save(bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "n_img_tokens": 6}))
    with pytest.raises(BenchError, match=r"weights do not match config\.json"):
        LlavaRadZ(checkpoint=str(bad))
    (bad / "config.json").write_text(json.dumps({**config, "model": "llava-rad"}))
    with pytest.raises(BenchError, match="not 'llava-radz'"):
        LlavaRadZ(checkpoint=str(bad))
    (bad / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "dkam"}))
    with pytest.raises(BenchError, match=r"config\.json is incomplete"):
        LlavaRadZ(checkpoint=str(bad))
