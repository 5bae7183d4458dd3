"""Tests of the shared model building blocks in models/components (fast, CPU, tiny configs)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from bench.interfaces import BenchError, ImageRef
from models.components import devices, image_preprocess, projector, text_encoder, tokenizer, trainer, vit

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPORTS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion. No pneumothorax.",
    "Moderate cardiomegaly. Mild pulmonary edema.",
    "Right lower lobe consolidation. No pleural effusion.",
    "The lungs are clear. Heart size is normal.",
]

# --------------------------------------------------------------------------- devices


def test_resolve_device_cpu_and_auto():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve_device("auto").type == expected
    assert devices.resolve_device(None).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_cuda_unavailable_is_a_clear_error():
    with pytest.raises(BenchError, match="CUDA is not available"):
        devices.resolve_device("cuda")
    with pytest.raises(BenchError, match="CUDA is not available"):
        devices.resolve_device("cuda:0")


def test_resolve_device_unknown_name():
    with pytest.raises(BenchError, match="unknown device 'tpu'"):
        devices.resolve_device("tpu")


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert devices.set_threads(1) == 1
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("BENCH_THREADS", "2")
        assert devices.set_threads() == 2
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("BENCH_THREADS", "many")
        with pytest.raises(BenchError, match="BENCH_THREADS"):
            devices.set_threads()
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- ViT


def small_vit(**kw) -> vit.VisionTransformer:
    torch.manual_seed(0)
    cfg = {"image_size": 32, "patch_size": 8, "in_chans": 1, "width": 32, "depth": 2, "heads": 4, **kw}
    return vit.VisionTransformer(vit.ViTConfig(**cfg)).eval()


def test_vit_shapes_and_pooling():
    model = small_vit()
    x = torch.randn(3, 1, 32, 32)
    pooled, patches = model(x)
    assert pooled.shape == (3, 32)
    assert patches.shape == (3, 16, 32)  # (32 / 8) ** 2 patch tokens, CLS excluded
    tokens = model.forward_tokens(x)
    assert torch.equal(pooled, tokens[:, 0])
    mean_model = small_vit(pool="mean")
    pooled_mean, patches_mean = mean_model(x)
    assert torch.allclose(pooled_mean, patches_mean.mean(dim=1))
    pooled_max, patches_max = small_vit(pool="max")(x)
    assert torch.equal(pooled_max, patches_max.amax(dim=1))
    with pytest.raises(BenchError, match="pool must be"):
        small_vit(pool="gem")


def test_conv_stem_full_resolution_conv_keeps_the_token_grid():
    plain = small_vit(stem="conv")
    full = small_vit(stem="conv", stem_full_res=True)
    convs = [m for m in full.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs[:2]] == [(1, 1), (2, 2)]  # the extra conv runs before any down-sampling
    assert len(convs) == len([m for m in plain.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]) + 1
    x = torch.randn(2, 1, 32, 32)
    assert full(x)[1].shape == plain(x)[1].shape == (2, 16, 32)
    assert convs[0].out_channels == full.config.stem_channels // 2


def test_vit_rgb_and_grayscale_inputs_are_matched():
    gray = small_vit()
    x_rgb = torch.rand(2, 3, 32, 32)
    assert torch.allclose(gray(x_rgb)[0], gray(x_rgb.mean(dim=1, keepdim=True))[0], atol=1e-6)
    rgb = small_vit(in_chans=3)
    x1 = torch.rand(2, 1, 32, 32)
    assert torch.allclose(rgb(x1)[0], rgb(x1.expand(-1, 3, -1, -1))[0], atol=1e-6)


def test_vit_rejects_bad_sizes():
    with pytest.raises(BenchError, match="multiple of patch_size"):
        vit.VisionTransformer(vit.ViTConfig(image_size=30, patch_size=8))
    with pytest.raises(BenchError, match="multiple of patch size"):
        small_vit()(torch.rand(1, 1, 36, 36))


def test_vit_pos_embed_interpolation():
    model = small_vit()
    g = model.grid
    assert model.interpolate_pos_embed(g, g) is model.pos_embed
    # A field that varies along rows only (value = row index) must keep its row values when only
    # the width is resampled: checks orientation (h vs w) and that CLS is untouched.
    with torch.no_grad():
        rows = torch.arange(g, dtype=torch.float32).view(g, 1, 1).expand(g, g, model.width)
        model.pos_embed[0, 1:] = rows.reshape(g * g, model.width)
        model.pos_embed[0, 0] = 7.0
    out = model.interpolate_pos_embed(g, 2 * g)
    assert out.shape == (1, 1 + g * 2 * g, model.width)
    assert torch.all(out[0, 0] == 7.0)
    grid = out[0, 1:, 0].reshape(g, 2 * g)
    expected = torch.arange(g, dtype=torch.float32).view(g, 1).expand(g, 2 * g)
    assert torch.allclose(grid, expected, atol=1e-5)
    # A constant field stays constant at any size.
    with torch.no_grad():
        model.pos_embed[0, 1:] = 0.25
    out = model.interpolate_pos_embed(6, 3)
    assert torch.allclose(out[0, 1:], torch.full((18, model.width), 0.25), atol=1e-6)


def test_vit_runs_at_another_image_size():
    model = small_vit()
    pooled, patches = model(torch.rand(2, 1, 48, 64))
    assert pooled.shape == (2, 32)
    assert patches.shape == (2, 6 * 8, 32)
    assert torch.isfinite(pooled).all()


def test_pooled_image_encoder():
    model = small_vit()
    enc = vit.PooledImageEncoder(model)
    x = torch.rand(2, 1, 32, 32)
    assert enc.feature_dim == 32
    assert torch.equal(enc(x), model(x)[0])


# --------------------------------------------------------------------------- text encoder


def small_text(**kw) -> text_encoder.TextTransformer:
    torch.manual_seed(0)
    cfg = {"vocab_size": 50, "max_length": 16, "width": 32, "depth": 2, "heads": 4, **kw}
    return text_encoder.TextTransformer(text_encoder.TextEncoderConfig(**cfg)).eval()


@pytest.mark.parametrize("pool,causal", [("cls", False), ("mean", False), ("eos", False), ("eos", True)])
def test_text_encoder_padding_does_not_change_output(pool, causal):
    model = small_text(pool=pool, causal=causal)
    ids = torch.tensor([[1, 7, 8, 9, 2]])
    padded = torch.tensor([[1, 7, 8, 9, 2, 0, 0, 0]])
    mask = (padded != 0).long()
    pooled, states = model(ids)
    pooled_p, states_p = model(padded, mask)
    assert pooled.shape == (1, 32) and states_p.shape == (1, 8, 32)
    assert torch.allclose(pooled, pooled_p, atol=1e-5)
    assert torch.allclose(states, states_p[:, :5], atol=1e-5)


def test_text_encoder_pooling_positions():
    model = small_text(pool="eos")
    ids = torch.tensor([[1, 5, 2, 0], [1, 5, 6, 2]])
    pooled, states = model(ids, (ids != 0).long())
    assert torch.equal(pooled[0], states[0, 2])
    assert torch.equal(pooled[1], states[1, 3])
    mean_model = small_text(pool="mean")
    pooled, states = mean_model(ids, (ids != 0).long())
    assert torch.allclose(pooled[0], states[0, :3].mean(dim=0), atol=1e-6)


def test_text_encoder_causal_ignores_future_tokens():
    model = small_text(causal=True)
    a = model(torch.tensor([[1, 5, 6, 7, 2]]))[1]
    b = model(torch.tensor([[1, 5, 6, 9, 2]]))[1]
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_text_encoder_too_long():
    with pytest.raises(BenchError, match="max_length 16"):
        small_text()(torch.ones(1, 17, dtype=torch.long))


# --------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def tok() -> tokenizer.TextTokenizer:
    return tokenizer.TextTokenizer.train(REPORTS * 3, vocab_size=300)


def test_tokenizer_special_tokens_and_lowercase(tok):
    assert [tok._tok.token_to_id(t) for t in tokenizer.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = tok.encode_ids("No Pleural Effusion")
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert ids == tok.encode_ids("no pleural effusion")
    assert tok.tokenize("no pleural effusion.") == ["[CLS]", "no", "pleural", "effusion", ".", "[SEP]"]
    assert tok.decode(tok.encode_ids("Small LEFT pleural effusion.")) == "small left pleural effusion."


def test_tokenizer_batch_encode_padding_and_truncation(tok):
    ids, mask = tok.encode(["no pneumothorax", "small left pleural effusion. no pneumothorax."], max_length=6)
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.shape == (2, 6)
    assert ids[0].tolist()[:4] == tok.encode_ids("no pneumothorax") and ids[0, 4:].tolist() == [0, 0]
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0]
    assert mask[1].tolist() == [1] * 6
    assert ids[1, -1].item() == tok.sep_id  # truncation keeps the final [SEP]
    ids, mask = tok.encode(["no pneumothorax"], max_length=10, padding="max_length")
    assert ids.shape == (1, 10) and int(mask.sum()) == 4


def test_tokenizer_save_load_round_trip(tok, tmp_path):
    path = tok.save(tmp_path / "tok.json")
    assert json.loads(path.read_text())["model"]["type"] == "WordPiece"
    loaded = tokenizer.TextTokenizer.load(path)
    assert loaded.to_str() == tok.to_str() and loaded.sha256() == tok.sha256()
    a = tok.encode(REPORTS, max_length=32)
    b = loaded.encode(REPORTS, max_length=32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_tokenizer_training_is_deterministic_and_bpe_works():
    a = tokenizer.TextTokenizer.train(REPORTS, vocab_size=200)
    b = tokenizer.TextTokenizer.train(REPORTS, vocab_size=200)
    assert a.to_str() == b.to_str()
    bpe = tokenizer.TextTokenizer.train(REPORTS, vocab_size=200, kind="bpe")
    assert json.loads(bpe.to_str())["model"]["type"] == "BPE"
    assert bpe.decode(bpe.encode_ids("No pleural effusion")) == "no pleural effusion"
    assert bpe.encode_ids("x")[0] == 1


def test_tokenizer_errors(tmp_path):
    with pytest.raises(BenchError, match="unknown tokenizer kind"):
        tokenizer.TextTokenizer.train(REPORTS, kind="unigram")
    with pytest.raises(BenchError, match="no non-empty texts"):
        tokenizer.TextTokenizer.train(["", "  "])
    with pytest.raises(BenchError, match="tokenizer file not found"):
        tokenizer.TextTokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BenchError, match=r"bad\.json"):
        tokenizer.TextTokenizer.load(bad)


# --------------------------------------------------------------------------- projector


def test_projectors():
    torch.manual_seed(0)
    lin = projector.build_projector("linear", 8, 4)
    assert lin.linear.bias is None
    x = torch.randn(5, 8)
    assert lin(x).shape == (5, 4)
    assert torch.allclose(lin(2 * x), 2 * lin(x), atol=1e-6)  # linear
    mlp = projector.build_projector("mlp2x_gelu", 8, 4, hidden_dim=16)
    assert mlp.fc1.out_features == 16 and mlp(x).shape == (5, 4)
    assert not torch.allclose(mlp(2 * x), 2 * mlp(x) - mlp(torch.zeros(1, 8)), atol=1e-3)  # non-linear
    h = torch.nn.functional.gelu(mlp.fc1(x))
    assert torch.allclose(mlp(x), mlp.fc2(h))
    with pytest.raises(BenchError, match="unknown projector kind"):
        projector.build_projector("qformer", 8, 4)


# --------------------------------------------------------------------------- image preprocessing


def test_preprocess_grayscale_constant_image():
    pre = image_preprocess.ImagePreprocessor(size=16, channels=1, mean=(0.5,), std=(0.25,))
    out = pre([Image.new("L", (40, 30), 204)])
    assert out.shape == (1, 1, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (204 / 255 - 0.5) / 0.25), atol=1e-5)


def test_preprocess_rgb_from_grayscale_and_imageref(tmp_path):
    path = tmp_path / "im.png"
    arr = np.tile(np.arange(32, dtype=np.uint8)[None, :] * 8, (32, 1))
    Image.fromarray(arr, "L").save(path)
    pre = image_preprocess.ImagePreprocessor(size=32, channels=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = pre([ImageRef(key="im", path=str(path)), str(path)])
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out[0], out[1])
    assert torch.equal(out[0, 0], out[0, 2])
    assert torch.allclose(out[0, 0, 5], torch.from_numpy(arr[5].astype(np.float32) / 255))


def test_preprocess_16bit_and_center_crop():
    arr = np.full((20, 40), 65535 // 2, dtype=np.uint16)
    arr[:, :10] = 0  # left quarter dark: removed by the centre crop, kept by the squash resize
    im = Image.fromarray(arr)
    assert im.mode.startswith("I;16")
    crop = image_preprocess.ImagePreprocessor(size=20, mean=(0.0,), std=(1.0,), resize_mode="center_crop")
    out = crop([im])
    assert out.shape == (1, 1, 20, 20)
    assert torch.allclose(out, torch.full_like(out, (65535 // 2) / 65535), atol=1e-4)
    squash = image_preprocess.ImagePreprocessor(size=20, mean=(0.0,), std=(1.0,))
    assert float(squash([im])[0, 0, :, 0].max()) < 0.01


def test_preprocess_config_round_trip_and_errors():
    pre = image_preprocess.ImagePreprocessor(size=48, channels=3, mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    d = json.loads(json.dumps(pre.to_dict()))
    assert image_preprocess.ImagePreprocessor.from_dict(d) == pre
    with pytest.raises(BenchError, match="channels"):
        image_preprocess.ImagePreprocessor(channels=2)
    with pytest.raises(BenchError, match="std"):
        image_preprocess.ImagePreprocessor(std=(0.0,))


def test_augment_identity_parameters_leave_images_unchanged():
    aug = image_preprocess.TrainAugment(
        scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, translate=0.0, brightness=0.0, contrast=0.0
    )
    x = torch.rand(3, 1, 24, 24)
    assert torch.allclose(aug(x, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_augment_changes_images_deterministically_within_range():
    aug = image_preprocess.TrainAugment()
    x = torch.rand(4, 1, 32, 32)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float((a - x).abs().mean()) > 0.01
    theta = aug.affine(1000, torch.Generator().manual_seed(0))
    # crop area within 0.8-1.0 of the image, rotation within +-7 degrees
    area = torch.det(theta[:, :, :2])
    assert float(area.min()) >= 0.8 - 1e-5 and float(area.max()) <= 1.0 + 1e-5
    angles = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).rad2deg()
    assert float(angles.abs().max()) <= 7.0 + 1e-4 and float(angles.abs().max()) > 5.0


# --------------------------------------------------------------------------- trainer


def test_cosine_schedule_known_values():
    lr = trainer.cosine_lr
    assert lr(0, 110, 10, 1.0) == pytest.approx(0.1)
    assert lr(4, 110, 10, 1.0) == pytest.approx(0.5)
    assert lr(9, 110, 10, 1.0) == pytest.approx(1.0)
    assert lr(10, 110, 10, 1.0) == pytest.approx(1.0)
    assert lr(60, 110, 10, 1.0) == pytest.approx(0.5)
    assert lr(35, 110, 10, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr(110, 110, 10, 1.0) == pytest.approx(0.0)
    assert lr(110, 110, 10, 1.0, min_lr=0.1) == pytest.approx(0.1)
    assert lr(0, 100, 0, 2e-3) == pytest.approx(2e-3)


def toy_problem(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return x, x @ w + 0.1


def toy_batches(x, y, batch_size):
    def batches(epoch):
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    return batches


def mse(model, batch):
    xb, yb = batch
    return torch.nn.functional.mse_loss(model(xb), yb)


def test_length_grouped_batches_cover_samples_once_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 80, size=203).tolist()
    batches = trainer.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(1), window=4)
    flat = [i for b in batches for i in b]
    assert len(batches) == 203 // 8 and all(len(b) == 8 for b in batches) and len(set(flat)) == len(flat) == 200
    padded = sum(max(lengths[i] for i in b) * 8 for b in batches)
    plain = torch.randperm(203, generator=torch.Generator().manual_seed(1)).tolist()
    padded_plain = sum(max(lengths[i] for i in plain[k : k + 8]) * 8 for k in range(0, 200, 8))
    assert padded < 0.85 * padded_plain  # sorted within windows: much less padding than random batches
    again = trainer.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(1), window=4)
    other = trainer.length_grouped_batches(lengths, 8, torch.Generator().manual_seed(2), window=4)
    assert again == batches and other != batches  # seeded
    window_of = {i: k // 32 for k, i in enumerate(plain[:200])}  # the same permutation cut into 4-batch windows
    assert all(len({window_of[i] for i in b}) == 1 for b in batches)  # a batch never mixes windows


def test_trainer_reduces_loss_and_logs_schedule():
    x, y = toy_problem()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    initial = mse(model, (x, y)).item()
    steps, lines = [], []
    cfg = trainer.TrainConfig(epochs=30, lr=0.1, weight_decay=0.0, warmup_steps=4, log_every=10)
    result = trainer.train(
        model, toy_batches(x, y, 16), mse, cfg, steps_per_epoch=4, on_step=steps.append, log=lines.append
    )
    final = mse(model, (x, y)).item()
    assert final < 0.01 * initial
    assert result.steps == 120 and len(steps) == 120 and len(result.history) == 30
    assert [s["lr"] for s in steps[:4]] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert steps[61]["lr"] == pytest.approx(trainer.cosine_lr(61, 120, 4, 0.1))
    assert steps[-1]["lr"] < 1e-3
    assert any("step 10/120" in line for line in lines)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_trainer_is_deterministic_with_a_seed():
    x, y = toy_problem()
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
        trainer.train(model, toy_batches(x, y, 16), mse, trainer.TrainConfig(epochs=2, seed=3), steps_per_epoch=4)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_gradient_accumulation_matches_a_full_batch():
    x, y = toy_problem(32)
    results = []
    for accum, bs in ((1, 32), (2, 16), (4, 8)):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        cfg = trainer.TrainConfig(epochs=1, lr=0.05, grad_accum=accum, max_grad_norm=None, warmup_steps=0)
        res = trainer.train(model, toy_batches(x, y, bs), mse, cfg, steps_per_epoch=32 // bs)
        assert res.steps == 1
        results.append(torch.cat([model.weight.flatten(), model.bias]))
    assert torch.allclose(results[0], results[1], atol=1e-6)
    assert torch.allclose(results[0], results[2], atol=1e-6)


def test_gradient_clipping_bounds_the_norm():
    x, y = toy_problem(32)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    seen = []

    def loss_and_norm(m, batch):
        loss = mse(m, batch) * 1000.0
        return loss

    orig = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        total = orig(params, max_norm, *a, **k)
        seen.append(float(torch.norm(torch.stack([p.grad.norm() for p in params]))))
        return total

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        steps = []
        cfg = trainer.TrainConfig(epochs=1, max_grad_norm=0.5)
        trainer.train(model, toy_batches(x, y, 8), loss_and_norm, cfg, steps_per_epoch=4, on_step=steps.append)
    finally:
        torch.nn.utils.clip_grad_norm_ = orig
    assert len(seen) == 4 and max(seen) <= 0.5 + 1e-4
    assert all(s["grad_norm"] > 0.5 for s in steps)  # the pre-clipping norm is reported


def test_param_groups_exclude_bias_norm_and_embeddings():
    model = vit.VisionTransformer(image_size=16, patch_size=8, in_chans=1, width=16, depth=1, heads=2)
    groups = trainer.param_groups(model, 0.1)
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_id[id(named["blocks.0.attn.qkv.weight"])] == 0.1
    assert by_id[id(named["patch_embed.proj.weight"])] == 0.1
    for name in ("blocks.0.attn.qkv.bias", "blocks.0.norm1.weight", "pos_embed", "cls_token"):
        assert by_id[id(named[name])] == 0.0
    assert len(by_id) == len(named)


def test_validation_keeps_and_restores_the_best_epoch(tmp_path):
    x, y = toy_problem()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    scripted = [0.5, 0.9, 0.7]
    snapshots = []

    def validate(m, epoch):
        assert not m.training and not torch.is_grad_enabled()
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"auc": scripted[epoch], "other": 1.0}

    cfg = trainer.TrainConfig(epochs=3, lr=0.05)
    result = trainer.train(
        model,
        toy_batches(x, y, 16),
        mse,
        cfg,
        steps_per_epoch=4,
        validate=validate,
        val_metric="auc",
        best_dir=tmp_path / "best",
        best_config={"epochs": 3},
    )
    assert result.best_epoch == 2 and result.best_metric == 0.9
    assert result.history[1]["val_auc"] == 0.9
    assert all(torch.equal(model.state_dict()[k], snapshots[1][k]) for k in snapshots[1])
    assert not torch.equal(snapshots[1]["weight"], snapshots[2]["weight"])
    config, state = trainer.load_checkpoint(tmp_path / "best")
    assert config == {"epochs": 3}
    assert torch.equal(state["weight"], snapshots[1]["weight"])


def test_trainer_rejects_a_non_finite_loss():
    x, y = toy_problem()
    model = torch.nn.Linear(4, 1)
    with pytest.raises(BenchError, match="diverged"):
        trainer.train(
            model,
            toy_batches(x, y, 16),
            lambda m, b: mse(m, b) * float("nan"),
            trainer.TrainConfig(),
            steps_per_epoch=4,
        )


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    src = tmp_path / "vocab.txt"
    src.write_text("a b c")
    out = trainer.save_checkpoint(
        tmp_path / "ck", model, {"width": 4, "name": "toy"}, {"notes.txt": "hello", "vocab.txt": src}
    )
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt", "vocab.txt"]
    assert (out / "notes.txt").read_text() == "hello" and (out / "vocab.txt").read_text() == "a b c"
    assert (out / "model.safetensors").read_bytes() == trainer.state_dict_bytes(model)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    config, state = trainer.load_checkpoint(out, fresh)
    assert config == {"width": 4, "name": "toy"}
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v) and torch.equal(state[k], v)


def test_checkpoint_with_tied_weights(tmp_path):
    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    trainer.save_checkpoint(tmp_path / "ck", model, {})
    _, state = trainer.load_checkpoint(tmp_path / "ck")
    assert torch.equal(state["emb.weight"], state["head.weight"])


def test_checkpoint_errors_name_the_directory_and_file(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(BenchError, match=r"checkpoint directory not found: .*nope"):
        trainer.load_checkpoint(missing)
    ck = tmp_path / "ck"
    trainer.save_checkpoint(ck, torch.nn.Linear(2, 2), {"a": 1})
    (ck / "config.json").unlink()
    with pytest.raises(BenchError, match=r"ck is missing config\.json"):
        trainer.load_checkpoint(ck)
    (ck / "config.json").write_text("{}")
    (ck / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BenchError, match=r"cannot read model\.safetensors"):
        trainer.load_checkpoint(ck)
    trainer.save_checkpoint(ck, torch.nn.Linear(2, 2), {"a": 1})
    with pytest.raises(BenchError, match="do not match"):
        trainer.load_checkpoint(ck, torch.nn.Linear(2, 3))
    with pytest.raises(BenchError, match="not JSON-serialisable"):
        trainer.save_checkpoint(ck, torch.nn.Linear(2, 2), {"f": object()})


# --------------------------------------------------------------------------- text_batch


def test_distinct_texts_give_the_embeddings_and_gradients_of_every_occurrence():
    """Training encodes each distinct text of a batch once: the pooled report embeddings, the sentence captions and
    the gradients equal those of encoding every occurrence (clip-baseline's tiny text tower)."""
    import torch.nn.functional as F

    from models.components.text_batch import distinct_texts, pool_rows, sentence_captions
    from models.reference.clip_baseline import ClipModel, build_config

    sentences = [
        ["No pneumothorax.", "Mild cardiomegaly."],
        ["No pneumothorax.", "The lungs are clear."],
        ["Mild cardiomegaly."],
    ]
    units = [u for s in sentences for u in s]
    owner = torch.tensor([k for k, s in enumerate(sentences) for _ in s])
    captions, cap_owner = sentence_captions(sentences, [0, 1, 2], 1, torch.Generator().manual_seed(3))
    assert cap_owner == [0, 1, 2] and all(c in sentences[k] for c, k in zip(captions, cap_owner))
    assert sentence_captions(sentences, [0, 1, 2], 0, torch.Generator()) == ([], [])

    tok = tokenizer.TextTokenizer.train(units * 4, vocab_size=120, kind="wordpiece")
    torch.manual_seed(0)
    model = ClipModel(build_config("tiny", tok.vocab_size))
    params = list(model.text.parameters()) + list(model.text_proj.parameters())

    def every_occurrence():
        ids, mask = tok.encode(units, 64)
        c_ids, c_mask = tok.encode(captions, 64)
        return model.encode_text(ids, mask, owner, 3), model.encode_text(c_ids, c_mask)

    def distinct_once():
        distinct, (rows, cap_rows) = distinct_texts(units, captions)
        assert len(distinct) == 3 and rows.tolist() == [0, 1, 0, 2, 1]  # 5 sentences, 3 distinct
        z = model.text_features(*tok.encode(distinct, 64))
        return F.normalize(pool_rows(z[rows], owner, 3), dim=-1), F.normalize(z[cap_rows], dim=-1)

    results = []
    for encode in (every_occurrence, distinct_once):
        reports, caps = encode()
        loss = (reports @ caps.t()).exp().sum()  # touches every embedding
        results.append((reports.detach(), caps.detach(), torch.autograd.grad(loss, params)))
    (r1, c1, g1), (r2, c2, g2) = results
    assert torch.allclose(r1, r2, atol=1e-6) and torch.allclose(c1, c2, atol=1e-6)
    for a, b in zip(g1, g2):  # float32 sums in another order: equal to 1e-4 of the gradient's scale
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max()) + 1e-7
    assert max(float(g.abs().max()) for g in g1) > 1e-3  # the gradients compared are not all zero
