"""Tests of the clip-baseline reference dual encoder (fast: tiny preset, a few synthetic images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.interfaces import BACKBONE, EMBED, GROUND, TRAIN, BenchError, ImageRef, Sample, stable_hash
from models.reference import clip_baseline
from models.reference.clip_baseline import (
    PRESETS,
    ClipBaseline,
    ClipModel,
    build_config,
    clip_loss,
    quick_fingerprint,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def make_image(i: int, positive: bool, size: int = 72) -> Image.Image:
    """Noise; positives carry a bright block in the lower left (a toy "effusion")."""
    rng = np.random.default_rng(i)
    arr = rng.normal(90, 20, (size, size))
    if positive:
        arr[size // 2 :, : size // 2] += 120
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def make_refs(n: int, offset: int = 0) -> list[ImageRef]:
    return [ImageRef(key=f"img{i}", loader=lambda i=i: make_image(i, i % 2 == 0)) for i in range(offset, offset + n)]


def make_samples(n: int) -> list[Sample]:
    out = []
    for i, ref in enumerate(make_refs(n)):
        if i % 2 == 0:
            sections = {"findings": "Large left pleural effusion.", "impression": "Effusion is present."}
        else:
            sections = {"findings": "No pleural effusion.", "impression": "Normal chest radiograph."}
        out.append(Sample(id=f"s{i}", dataset="toy", split="train", images=[ref], sections=sections))
    return out


@pytest.fixture(scope="module")
def untrained() -> ClipBaseline:
    return ClipBaseline(device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def trained() -> ClipBaseline:
    model = ClipBaseline(device="cpu", batch_size=8)
    lines: list[str] = []
    model.fit(make_samples(32), {"epochs": 8, "batch_size": 8, "lr": 1e-3, "seed": 1, "log": lines.append})
    model.log_lines = lines
    return model


# --------------------------------------------------------------------------- construction


def test_class_attributes_and_presets():
    assert ClipBaseline.name == "clip-baseline"
    assert ClipBaseline.capabilities == frozenset({EMBED, BACKBONE, GROUND, TRAIN})
    assert set(PRESETS) == {"tiny", "paper"}
    paper = PRESETS["paper"]
    assert paper["vision"] == {
        "image_size": 224, "patch_size": 16, "in_chans": 3, "width": 768, "depth": 12, "heads": 12
    }  # fmt: skip
    assert (paper["text"]["width"], paper["text"]["depth"], paper["embed_dim"]) == (512, 12, 512)
    assert (paper["train"]["batch_size"], paper["train"]["lr"], paper["train"]["weight_decay"]) == (256, 5e-4, 0.2)
    tiny = PRESETS["tiny"]
    assert tiny["vision"]["patch_size"] == 8 and tiny["embed_dim"] == 128


def test_paper_preset_builds_a_vit_b16():
    config = build_config("paper", vocab_size=30000)
    with torch.device("meta"):
        model = ClipModel(config)
    vision = sum(p.numel() for p in model.visual.parameters())
    assert 85_500_000 < vision < 86_500_000  # ViT-B/16 image tower: ~85.8M parameters
    assert model.text.config.max_length == 77 and model.text.config.causal


def test_untrained_model_basics(untrained):
    assert untrained.describe()["kind"] == "dual encoder"
    assert untrained.describe()["preset"] == "tiny" and untrained.describe()["checkpoint"] is None
    assert untrained.num_parameters() == sum(p.numel() for p in untrained.model.parameters()) > 1_000_000
    assert untrained.fingerprint() == stable_hash({"random-init": untrained.config, "seed": 0})
    assert untrained.model.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_unknown_argument_lists_accepted_ones():
    with pytest.raises(BenchError, match=r"unknown argument\(s\) colour.*accepted: checkpoint, preset, device"):
        ClipBaseline(colour="blue")
    with pytest.raises(BenchError, match=r"unknown preset 'huge'.*tiny, paper"):
        ClipBaseline(preset="huge")


def test_missing_or_broken_checkpoint(tmp_path, trained):
    with pytest.raises(BenchError, match=r"checkpoint directory not found: .*nowhere"):
        ClipBaseline(checkpoint=str(tmp_path / "nowhere"))
    ck = tmp_path / "ck"
    trained.save(ck)
    (ck / "tokenizer.json").unlink()
    with pytest.raises(BenchError, match=r"ck is missing tokenizer\.json"):
        ClipBaseline(checkpoint=str(ck))
    trained.save(ck)
    (ck / "model.safetensors").unlink()
    with pytest.raises(BenchError, match=r"ck is missing model\.safetensors"):
        ClipBaseline(checkpoint=str(ck))
    trained.save(ck)
    (ck / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(BenchError, match=r"cannot read model\.safetensors"):
        ClipBaseline(checkpoint=str(ck))
    trained.save(ck)
    (ck / "config.json").write_text(json.dumps({"model": "other"}))
    with pytest.raises(BenchError, match="not 'clip-baseline'"):
        ClipBaseline(checkpoint=str(ck))


# --------------------------------------------------------------------------- embeddings


def test_embeddings_shapes_norms_and_determinism(untrained):
    refs = make_refs(6)
    a = untrained.encode_images(refs)
    assert a.shape == (6, 128) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, untrained.encode_images(refs))  # bitwise
    pil = untrained.encode_images([r.load() for r in refs])
    assert np.array_equal(a, pil)
    assert not np.allclose(a[0], a[1])
    t = untrained.encode_texts(["pleural effusion", "no pleural effusion", "cardiomegaly"])
    assert t.shape == (3, 128) and t.dtype == np.float32
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(t, untrained.encode_texts(["pleural effusion", "no pleural effusion", "cardiomegaly"]))
    assert untrained.encode_texts([]).shape == (0, 128)
    assert untrained.encode_images([]).shape == (0, 128)
    with pytest.raises(BenchError, match="not a single string"):
        untrained.encode_texts("pleural effusion")


def test_batch_size_does_not_change_embeddings(untrained):
    refs = make_refs(5)
    other = ClipBaseline(device="cpu", batch_size=2)
    assert other.fingerprint() == untrained.fingerprint()
    assert np.allclose(other.encode_images(refs), untrained.encode_images(refs), atol=1e-5)
    texts = ["no pneumothorax", "small left pleural effusion with adjacent atelectasis", "edema"]
    assert np.allclose(other.encode_texts(texts), untrained.encode_texts(texts), atol=1e-5)


def test_seed_controls_random_init(untrained):
    refs = make_refs(2)
    other = ClipBaseline(device="cpu", seed=1)
    assert other.fingerprint() != untrained.fingerprint()
    assert not np.allclose(other.encode_images(refs), untrained.encode_images(refs))


def test_untrained_model_is_the_same_in_another_process(untrained):
    code = (
        "import numpy as np, hashlib;"
        "from models.reference.clip_baseline import ClipBaseline;"
        "m = ClipBaseline(device='cpu');"
        "e = m.encode_texts(['pleural effusion', 'no pleural effusion']);"
        "print(m.fingerprint(), m.tokenizer.sha256(), np.round(e, 4).tolist())"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    fp, tok_sha, emb = out.stdout.strip().split(" ", 2)
    assert fp == untrained.fingerprint()
    assert tok_sha == untrained.tokenizer.sha256()
    here = np.round(untrained.encode_texts(["pleural effusion", "no pleural effusion"]), 4)
    assert np.allclose(np.array(json.loads(emb)), here, atol=2e-4)


def test_preprocess_and_backbone(untrained):
    refs = make_refs(3)
    x = untrained.preprocess(refs)
    assert x.shape == (3, 1, 64, 64) and x.dtype == torch.float32
    backbone, dim = untrained.image_backbone()
    assert dim == 160
    with torch.no_grad():
        feats = backbone(x)
        expected = untrained.model.visual(x)[0]
    assert feats.shape == (3, 160)
    assert torch.allclose(feats, expected, atol=1e-6)
    # the backbone is a copy: training it must not change the adapter's embeddings or fingerprint
    before, fp = untrained.encode_images(refs), untrained.fingerprint()
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(0.1)
    assert np.array_equal(untrained.encode_images(refs), before) and untrained.fingerprint() == fp


# --------------------------------------------------------------------------- training


def test_clip_loss_values():
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * emb @ emb.t()
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert float(clip_loss(emb, emb, scale)) == pytest.approx(float(expected), rel=1e-5)
    # identical captions: a duplicate pair shares the target mass
    same = torch.eye(4, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    soft = clip_loss(emb, emb, scale, same)
    target = same.float() / same.float().sum(1, keepdim=True)
    manual = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    assert float(soft) == pytest.approx(float(manual), rel=1e-5)


def test_logit_scale_is_clamped_at_100():
    model = ClipModel(build_config("tiny", vocab_size=50))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(100.0)


def test_fit_learns_the_toy_task(trained):
    result = trained.last_train_result
    assert result.steps == 8 * 4
    assert result.history[-1]["train_loss"] < 0.8 * result.history[0]["train_loss"]
    assert any("trained 32 steps" in line for line in trained.log_lines)
    assert trained.describe()["trained"] is True
    assert trained.config["train"]["epochs"] == 8
    # the tokenizer was trained on the reports: their words are single tokens
    assert trained.tokenizer.tokenize("pleural effusion") == ["[CLS]", "pleural", "effusion", "[SEP]"]
    refs = make_refs(12, offset=100)  # unseen images
    img = trained.encode_images(refs)
    txt = trained.encode_texts(["pleural effusion", "no pleural effusion"])
    score = img @ txt[0] - img @ txt[1]
    positive = np.array([i % 2 == 0 for i in range(100, 112)])
    assert score[positive].min() > score[~positive].max()


def test_fit_is_deterministic(trained):
    again = ClipBaseline(device="cpu", batch_size=8)
    again.fit(make_samples(32), {"epochs": 8, "batch_size": 8, "lr": 1e-3, "seed": 1})
    assert again.fingerprint() == trained.fingerprint()


def test_fit_rejects_unknown_config_and_empty_data(untrained):
    with pytest.raises(BenchError, match=r"unknown config key\(s\) epoch;.*accepted: preset, epochs"):
        untrained.fit(make_samples(4), {"epoch": 1})
    with pytest.raises(BenchError, match="at least 2 samples"):
        untrained.fit([], {})


def test_save_load_round_trip(trained, tmp_path):
    refs = make_refs(5, offset=50)
    texts = ["pleural effusion", "no pleural effusion", "unseen words zebra"]
    trained.save(tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded = ClipBaseline(checkpoint=str(tmp_path / "ck"), device="cpu")
    assert loaded.fingerprint() == trained.fingerprint() != ClipBaseline(device="cpu").fingerprint()
    assert np.array_equal(loaded.encode_images(refs), trained.encode_images(refs))
    assert np.array_equal(loaded.encode_texts(texts), trained.encode_texts(texts))
    assert loaded.describe()["checkpoint"] == str(tmp_path / "ck")
    # the fingerprint hashes the weights file as written
    weights = (tmp_path / "ck" / "model.safetensors").read_bytes()
    assert clip_baseline.state_dict_bytes(loaded.model) == weights
    # load() into an existing adapter replaces its weights
    fresh = ClipBaseline(device="cpu")
    fresh.load(tmp_path / "ck")
    assert fresh.fingerprint() == trained.fingerprint()
    # saving the loaded model again writes identical files
    loaded.save(tmp_path / "ck2")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (tmp_path / "ck" / name).read_bytes() == (tmp_path / "ck2" / name).read_bytes()


def test_fingerprint_changes_when_a_weight_changes(trained, tmp_path):
    trained.save(tmp_path / "ck")
    loaded = ClipBaseline(checkpoint=str(tmp_path / "ck"), device="cpu")
    before = loaded.fingerprint()
    assert before == quick_fingerprint({"checkpoint": str(tmp_path / "ck")})  # known without loading
    with torch.no_grad():
        loaded.model.text_proj.linear.weight[0, 0] += 1e-3
    loaded.save(tmp_path / "ck_changed")
    changed = ClipBaseline(checkpoint=str(tmp_path / "ck_changed"), device="cpu").fingerprint()
    assert changed != before
    assert changed == quick_fingerprint({"checkpoint": str(tmp_path / "ck_changed")})
    assert quick_fingerprint({"preset": "tiny"}) is None  # a random init needs the model


def test_texts_are_embedded_as_the_pool_of_their_sentences(untrained):
    assert untrained.config["text_pooling"] == "sentences"
    text = "Small left pleural effusion. No pneumothorax."
    model, tok = untrained.model, untrained.tokenizer
    with torch.no_grad():
        z = []
        for sentence in ("Small left pleural effusion.", "No pneumothorax."):
            ids, mask = tok.encode([sentence], max_length=64)
            z.append(model.text_proj(model.text(ids, mask)[0])[0])
        expected = torch.nn.functional.normalize(z[0] + z[1], dim=0).numpy()
    got = untrained.encode_texts([text, "No pneumothorax."])
    assert np.allclose(got[0], expected, atol=1e-5)
    assert not np.allclose(got[0], got[1], atol=1e-3)
    # a one-sentence text is just that sentence; sentence splitting ignores extra spaces
    assert np.allclose(untrained.encode_texts(["No pneumothorax.  "])[0], got[1], atol=1e-6)
