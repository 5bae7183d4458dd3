"""openclip: the optional open_clip adapter.

open_clip needs torchvision, which this environment must not have, so the model tests skip here with
the reason; what needs no open_clip (the one clear message without it, reading the folder, the
fingerprint, the crop geometry) always runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from bench.interfaces import BenchError
from models.hf_clip import View
from models.open_clip_model import quick_fingerprint, read_config, transform_view, weights_file
from tests.conftest import run_bench


def _open_clip_importable() -> bool:
    if importlib.util.find_spec("open_clip") is None:
        return False
    try:
        import open_clip  # noqa: F401
    except Exception:
        return False
    return True


HAS_OPEN_CLIP = _open_clip_importable()
needs_open_clip = pytest.mark.skipif(
    not HAS_OPEN_CLIP,
    reason="open_clip_torch is not installed (optional extra medvlbench[openclip]; needs torchvision)",
)

MODEL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_folder(directory: Path, weights: bytes = b"not really weights") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    (directory / "open_clip_pytorch_model.bin").write_bytes(weights)
    return directory


@pytest.mark.skipif(HAS_OPEN_CLIP, reason="open_clip is installed: the missing-package message cannot be shown")
def test_without_open_clip_one_message_names_the_extra(tmp_path):
    folder = write_folder(tmp_path / "biomedclip")
    res = run_bench(
        "run", "--model", "openclip", "--model-args", f"pretrained={folder}", "--task", "synthcxr_zs",
        "--output", str(tmp_path / "runs"), "--no-progress", "--no-cache", "--limit", "4",
    )  # fmt: skip
    assert res.returncode == 2
    assert "medvlbench[openclip]" in res.stderr and "open_clip_torch" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2


def test_listing_needs_no_open_clip():
    res = run_bench("list", "models", "--json")
    assert res.returncode == 0, res.stderr
    models = {m["name"]: m for m in json.loads(res.stdout)}
    assert models["openclip"]["capabilities"] == ["backbone", "embed", "ground"]
    assert models["hf-clip"]["capabilities"] == ["backbone", "embed", "ground"]


def test_folder_reading_and_fingerprint(tmp_path):
    folder = write_folder(tmp_path / "m")
    model_cfg, pre = read_config(folder)
    assert model_cfg["embed_dim"] == 16 and pre["mean"] == [0.5] * 3
    assert weights_file(folder).name == "open_clip_pytorch_model.bin"
    fp = quick_fingerprint({"pretrained": str(folder)})
    assert fp and fp == quick_fingerprint({"pretrained": str(folder), "batch_size": 4})
    assert quick_fingerprint({"pretrained": str(folder), "dtype": "bfloat16"}) != fp
    assert quick_fingerprint({"pretrained": str(folder), "text_model": "/somewhere"}) != fp
    other = write_folder(tmp_path / "m2", weights=b"other weights")
    assert quick_fingerprint({"pretrained": str(other)}) != fp
    assert quick_fingerprint({"pretrained": str(tmp_path / "missing")}) is None
    (tmp_path / "bad").mkdir()
    with pytest.raises(BenchError, match="has no open_clip_config"):
        read_config(tmp_path / "bad")
    (tmp_path / "bad" / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim": 4}}')
    with pytest.raises(BenchError, match="vision_cfg and text_cfg"):
        read_config(tmp_path / "bad")
    with pytest.raises(BenchError, match="holds no weights"):
        weights_file(tmp_path / "bad")


def test_transform_view_follows_torchvision_resize_and_centre_crop():
    # 100 x 50 (w x h), size 32: resize to 64 x 32, crop columns round(16) .. 48 -> original x 25 .. 75
    assert transform_view({}, 32, 50, 100) == View(0.0, 25.0, 50.0, 50.0)
    assert transform_view({"resize_mode": "squash"}, 32, 50, 100) == View(0.0, 0.0, 50.0, 100.0)
    assert transform_view({"resize_mode": "longest"}, 32, 50, 100) is None
    assert transform_view({}, (32, 32), 64, 64) == View(0.0, 0.0, 64.0, 64.0)


# --------------------------------------------------------------------------- with open_clip installed


@pytest.fixture(scope="module")
def openclip_dir(tmp_path_factory) -> Path:
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.CLIP(**MODEL_CFG)
    folder = tmp_path_factory.mktemp("tiny-openclip")
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


@needs_open_clip
def test_open_clip_embeddings_and_map(openclip_dir):
    import torch
    from PIL import Image

    from models.open_clip_model import OpenClip

    model = OpenClip(pretrained=str(openclip_dir), device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8), "L")
    emb = model.encode_images([image, image])
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    text = model.encode_texts(["left pleural effusion", "no pneumothorax"])
    assert text.shape == (2, 16) and not np.allclose(text[0], text[1])
    smap = model.similarity_map(image, "left pleural effusion")
    assert smap.shape == (4, 4) and np.isfinite(smap).all() and np.abs(smap).max() <= 1.0 + 1e-5
    assert model.fingerprint() == quick_fingerprint({"pretrained": str(openclip_dir)})
    module, dim = model.image_backbone()
    assert dim == 16
    with torch.no_grad():
        assert module(model.preprocess([image])).shape == (1, 16)


@needs_open_clip
def test_open_clip_bench_run(openclip_dir, tmp_path):
    from reports.io import read_results

    res = run_bench(
        "run", "--model", "openclip", "--model-args", f"pretrained={openclip_dir}",
        "--task", "synthcxr_zs,synthcxr_retrieval,synthcxr_grounding", "--limit", "8", "--device", "cpu",
        "--output", str(tmp_path), "--bootstrap", "20", "--no-progress", "--no-cache",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = read_results(Path(json.loads(res.stdout)["run_dir"]) / "results.json")
    assert set(data["tasks"]) == {"synthcxr_zs", "synthcxr_retrieval", "synthcxr_grounding"}
