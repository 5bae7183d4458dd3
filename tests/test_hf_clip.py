"""hf-clip: tiny CLIP and SigLIP checkpoints built from configs (random weights, a tokenizer trained on
the fly, the processor saved alongside), loaded exactly as a user's save_pretrained folder would be."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from bench.interfaces import BenchError, ImageRef
from bench.metrics.grounding import mean_cnr
from reports.io import read_results
from reports.schema import SAMPLE_RECORD
from tests.conftest import run_bench

HIDDEN = 32
SENTENCES = [
    "There is a small left pleural effusion.",
    "Moderate cardiomegaly.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "No pneumothorax.",
    "Bibasilar atelectasis.",
    "Mild pulmonary edema with vascular congestion.",
    "A pulmonary nodule in the right upper zone.",
    "The lungs are clear. No acute cardiopulmonary process.",
    "Apical pneumothorax on the right side.",
    "Heart size is normal. The cardiac silhouette is enlarged.",
]


def train_tokenizer(eos_only: bool = False, max_length: int = 32):
    """A WordPiece tokenizer trained on a few report sentences, wrapped for save_pretrained.

    CLIP style: ``[CLS] text [SEP]`` with [SEP] the EOS the text tower pools; SigLIP style
    (``eos_only``): ``text [SEP]``, input_ids only (as SigLIP's tokenizer)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    template = "$A [SEP]" if eos_only else "[CLS] $A [SEP]"
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    kwargs = {"model_input_names": ["input_ids"]} if eos_only else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
        model_max_length=max_length,
        **kwargs,
    )


def tiny_layers(**extra) -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, **extra)


def build_clip(directory: Path, seed: int = 0, projection_dim: int = 16):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    tokenizer = train_tokenizer()
    config = CLIPConfig(
        text_config=tiny_layers(
            vocab_size=tokenizer.vocab_size, max_position_embeddings=32, bos_token_id=2, eos_token_id=3, pad_token_id=0
        ),
        vision_config=tiny_layers(image_size=32, patch_size=8),
        projection_dim=projection_dim,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return model, tokenizer


def build_siglip(directory: Path, seed: int = 0):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(eos_only=True, max_length=16)
    config = SiglipConfig(
        text_config=tiny_layers(
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=16,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
            projection_size=HIDDEN,
        ),
        vision_config=tiny_layers(image_size=32, patch_size=8),
    )
    model = SiglipModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return model, tokenizer


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-clip")
    build_clip(d)
    return d


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-siglip")
    build_siglip(d)
    return d


@pytest.fixture(scope="module")
def clip(clip_dir):
    from models.hf_clip import HFClip

    return HFClip(pretrained=str(clip_dir), device="cpu")


def gray_image(seed: int = 0, size: tuple[int, int] = (64, 64)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=size, dtype=np.uint8), "L")


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_bench_run_zero_shot_retrieval_grounding(kind, clip_dir, siglip_dir, tmp_path):
    directory = clip_dir if kind == "clip" else siglip_dir
    tasks = ("synthcxr_zs", "synthcxr_retrieval", "synthcxr_grounding")
    args = (
        "run", "--model", "hf-clip", "--model-args", f"pretrained={directory},batch_size=8",
        "--task", ",".join(tasks), "--limit", "16", "--output", str(tmp_path), "--device", "cpu",
        "--bootstrap", "50", "--no-progress", "--cache", str(tmp_path / "cache.sqlite"),
    )  # fmt: skip
    res = run_bench(*args)
    assert res.returncode == 0, res.stderr
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    data = read_results(run_dir / "results.json")  # validates against the schema
    assert set(data["tasks"]) == set(tasks) and data["status"] == "complete"
    assert data["model"]["name"] == "hf-clip" and data["model"]["description"]["model_type"] == kind
    assert data["model"]["description"]["image_processor"].endswith("Pil")  # no torchvision needed
    zs, ret, gr = (data["tasks"][t] for t in tasks)
    assert zs["n_samples"] == 16 and 0.0 <= zs["metrics"]["AUC"]["value"] <= 1.0
    assert ret["metrics"]["Recall@1 i2t"]["n"] == 16
    assert gr["n_samples"] == 16 and set(gr["metrics"]) == {"CNR", "CNR-signed", "CNR-per-box", "CNR-unbiased"}
    records = [json.loads(line) for line in (run_dir / gr["samples_file"]).read_text().splitlines()]
    for r in records:
        jsonschema.validate(r, SAMPLE_RECORD)
        assert np.array(r["prediction"]).shape == (4, 4)  # the 4x4 patch grid (224 px squares, no crop)
        assert r["reference"]["image_shape"] == [224, 224] and r["inputs"]["phrase"]
    # the task's mean CNR is the registered metric's value on the same records
    cnr = gr["metrics"]["CNR"]
    expected = mean_cnr([r["prediction"] for r in records], [r["reference"] for r in records])
    assert cnr["value"] == pytest.approx(expected, rel=1e-9)
    assert cnr["n"] + cnr["n_undefined"] == 16
    assert set(cnr["per_category"]) == {r["reference"]["category"] for r in records}
    if kind == "clip":  # the same run again is served from the cache (quick fingerprint = the model's)
        again = run_bench(*args, "--run-id", "again")
        assert again.returncode == 0, again.stderr
        second = read_results(tmp_path / "again" / "results.json")
        assert all(t["calls"]["model_items"] == 0 for t in second["tasks"].values())
        assert second["tasks"]["synthcxr_grounding"]["metrics"]["CNR"]["value"] == cnr["value"]


# --------------------------------------------------------------------------- embed


def test_embeddings_match_the_model(clip, clip_dir):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    images = [gray_image(i) for i in range(3)]
    emb = clip.encode_images(images)
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        pixels = clip.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        ref = model.get_image_features(pixel_values=pixels)
        ref = getattr(ref, "pooler_output", ref)
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    assert np.allclose(emb, ref, atol=1e-5)
    texts = ["small left pleural effusion", "no pneumothorax", "moderate cardiomegaly"]
    t = clip.encode_texts(texts)
    assert t.shape == (3, 16) and np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(t[0], t[1])
    assert np.allclose(clip.encode_texts(texts[:1]), t[:1], atol=1e-6)  # padding does not change an embedding


def test_fingerprint_quick_and_sensitive(clip, clip_dir, tmp_path):
    from models.hf_clip import quick_fingerprint

    fp = clip.fingerprint()
    assert quick_fingerprint({"pretrained": str(clip_dir)}) == fp
    assert quick_fingerprint({"pretrained": str(clip_dir), "dtype": "bfloat16"}) != fp
    assert quick_fingerprint({"pretrained": str(clip_dir), "dtype": "auto"}) is None  # needs the device
    assert quick_fingerprint({"pretrained": str(clip_dir), "dtype": "auto", "device": "cpu"}) == fp
    other = tmp_path / "other"
    build_clip(other, seed=1)
    assert quick_fingerprint({"pretrained": str(other)}) != fp


# --------------------------------------------------------------------------- ground


def test_similarity_map_is_the_patch_token_recipe(clip, clip_dir):
    """The map equals cosine(visual_projection(post_layernorm(patch tokens)), text embedding), row-major."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    image = gray_image(3)
    smap = clip.similarity_map(image, "left pleural effusion")
    with torch.no_grad():
        pixels = clip.processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state[0, 1:]  # drop CLS
        tokens = model.visual_projection(model.vision_model.post_layernorm(hidden))
        tokens = torch.nn.functional.normalize(tokens, dim=-1)
        enc = clip.tokenizer(["left pleural effusion"], return_tensors="pt")
        text = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        text = torch.nn.functional.normalize(getattr(text, "pooler_output", text), dim=-1)[0]
    expected = (tokens @ text).reshape(4, 4).numpy()
    assert smap.shape == (4, 4) and smap.dtype == np.float32
    assert np.allclose(smap, expected, atol=1e-5)


def test_hand_built_clip_finds_the_bright_patch(tmp_path):
    """A CLIP whose towers are set by hand: patch token = sign(pixel sum) * (1, -1, 0, ...), every text
    embeds to e0, so the map is +1/sqrt(2) on the white patch and -1/sqrt(2) elsewhere."""
    from PIL import Image

    from models.hf_clip import HFClip

    model, _ = build_clip(tmp_path, projection_dim=HIDDEN)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        vision, text = model.vision_model, model.text_model
        vision.embeddings.patch_embedding.weight[0] = 1.0
        vision.embeddings.patch_embedding.weight[1] = -1.0
        for norm in (getattr(vision, "pre_layrnorm", None), vision.post_layernorm):
            if norm is not None:
                norm.weight.fill_(1.0)
        model.visual_projection.weight.copy_(torch.eye(HIDDEN))
        text.final_layer_norm.bias[0] = 1.0  # the zero hidden state normalises to the bias: e0
        model.text_projection.weight.copy_(torch.eye(HIDDEN))
    model.save_pretrained(tmp_path)
    adapter = HFClip(pretrained=str(tmp_path), device="cpu")
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[16:32, 32:48] = 255  # patch row 1, column 2 after resizing to 32 px (8 px patches)
    smap = adapter.similarity_map(Image.fromarray(pixels, "L"), "any phrase at all")
    expected = np.full((4, 4), -(0.5**0.5))
    expected[1, 2] = 0.5**0.5
    assert np.allclose(smap, expected, atol=1e-3), smap
    assert np.unravel_index(np.argmax(smap), smap.shape) == (1, 2)


def test_siglip_map_pools_each_token_with_the_head(siglip_dir):
    from transformers import SiglipModel

    from models.hf_clip import HFClip

    adapter = HFClip(pretrained=str(siglip_dir), device="cpu")
    model = SiglipModel.from_pretrained(siglip_dir).eval()
    image = gray_image(5)
    smap = adapter.similarity_map(image, "moderate cardiomegaly")
    with torch.no_grad():
        pixels = adapter.processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state  # [1, 16, D], post-layernorm
        head = model.vision_model.head
        tokens = torch.cat([head(hidden[:, i : i + 1]) for i in range(hidden.shape[1])])  # one-token pooling
        tokens = torch.nn.functional.normalize(tokens, dim=-1)
    text = torch.from_numpy(adapter.encode_texts(["moderate cardiomegaly"])[0])
    assert np.allclose(smap, (tokens @ text).reshape(4, 4).numpy(), atol=1e-5)
    # identical patch tokens (uniform image, no position embedding) pool to the image embedding itself
    with torch.no_grad():
        adapter.model.vision_model.embeddings.position_embedding.weight.zero_()
    adapter._token_cache = None
    from PIL import Image

    flat = Image.new("L", (48, 48), 128)
    smap = adapter.similarity_map(flat, "moderate cardiomegaly")
    cos = float(adapter.encode_images([flat])[0] @ adapter.encode_texts(["moderate cardiomegaly"])[0])
    assert np.allclose(smap, cos, atol=1e-5)


def test_centre_crop_map_lies_on_the_whole_image(clip):
    """An 80x40 image: the processor resizes to 64x32 and crops columns 16..48, i.e. original x 20..60."""
    from PIL import Image

    from bench.metrics.grounding import cnr
    from models.hf_clip import View, place_map, processor_view

    view = processor_view(clip.processor, 40, 80)
    assert view == View(0.0, 20.0, 40.0, 40.0)
    pixels = np.zeros((40, 80), dtype=np.uint8)
    pixels[10:20, 30:40] = 255  # original x 30..40, y 10..20 -> patch (1, 1) of the crop
    x = clip.preprocess([Image.fromarray(pixels, "L")])[0].mean(0)
    patch_means = x.reshape(4, 8, 4, 8).mean(dim=(1, 3))
    assert np.unravel_index(int(patch_means.argmax()), (4, 4)) == (1, 1)
    grid = np.zeros((4, 4))
    grid[1, 1] = 1.0
    placed = place_map(grid, view, (40, 80))
    assert placed.shape == (8, 16)  # half-patch cells (5 px) over the whole image
    assert np.isnan(placed[:, :4]).all() and np.isnan(placed[:, 12:]).all() and not np.isnan(placed[:, 4:12]).any()
    assert np.unravel_index(np.nanargmax(placed), placed.shape) in {(2, 6), (2, 7), (3, 6), (3, 7)}
    good = cnr(placed, [[30, 10, 10, 10]], (40, 80), signed=True)
    wrong = cnr(grid, [[30, 10, 10, 10]], (40, 80), signed=True)  # the grid stretched over the image
    assert good.value > 2.0 and good.value > wrong.value
    assert np.array_equal(place_map(grid, processor_view(clip.processor, 50, 50), (50, 50)), grid)


def test_image_cache_and_grayscale_16bit(clip, tmp_path):
    from PIL import Image

    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "img16.png"
    Image.fromarray(arr).save(path)
    ref = ImageRef(key="img16", path=str(path))
    a = clip.similarity_map(ref, "pleural effusion")
    b = clip.similarity_map(ref, "no pneumothorax")  # same image: patch tokens reused
    assert clip._token_cache[0] == "img16"
    assert a.shape == b.shape == (4, 4) and not np.allclose(a, b)
    assert np.isfinite(clip.encode_images([ref])).all()


# --------------------------------------------------------------------------- backbone


def test_backbone_is_a_float32_copy(clip):
    images = [gray_image(i) for i in range(2)]
    x = clip.preprocess(images)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    module, dim = clip.image_backbone()
    assert dim == HIDDEN
    with torch.no_grad():
        feats = module(x)
        expected = clip.model.vision_model(pixel_values=x).pooler_output
    assert feats.shape == (2, HIDDEN) and torch.allclose(feats, expected, atol=1e-6)
    before = clip.encode_images(images)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    assert np.allclose(clip.encode_images(images), before)


# --------------------------------------------------------------------------- bad input


def test_bad_arguments_have_clear_messages(clip_dir, tmp_path):
    from transformers import BertConfig, BertModel

    from models.hf_clip import HFClip

    with pytest.raises(BenchError, match="pretrained=DIR"):
        HFClip(device="cpu")
    with pytest.raises(BenchError, match="checkpoint directory not found"):
        HFClip(pretrained=str(tmp_path / "missing"), device="cpu")
    with pytest.raises(BenchError, match=r"unknown argument\(s\) checkpoint; accepted: pretrained, device"):
        HFClip(pretrained=str(clip_dir), checkpoint="x")
    with pytest.raises(BenchError, match="dtype must be one of"):
        HFClip(pretrained=str(clip_dir), device="cpu", dtype="float64")
    with pytest.raises(BenchError, match="batch_size must be a positive integer"):
        HFClip(pretrained=str(clip_dir), device="cpu", batch_size=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError, match=r"has no config\.json"):
        HFClip(pretrained=str(empty), device="cpu")
    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, **tiny_layers(), max_position_embeddings=16)).save_pretrained(bert)
    with pytest.raises(BenchError, match="not a dual encoder"):
        HFClip(pretrained=str(bert), device="cpu")


def test_cli_refuses_a_missing_checkpoint_without_traceback(tmp_path):
    res = run_bench(
        "run", "--model", "hf-clip", "--model-args", f"pretrained={tmp_path / 'nope'}",
        "--task", "synthcxr_zs", "--output", str(tmp_path), "--no-progress", "--no-cache",
    )  # fmt: skip
    assert res.returncode == 2
    assert "checkpoint directory not found" in res.stderr and "Traceback" not in res.stderr
