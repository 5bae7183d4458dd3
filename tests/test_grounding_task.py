"""The phrase-grounding protocol: phrases from synthcxr reports, maps from a box oracle, CNR scoring,
records, and `bench run` / `bench score` with the clip-baseline's patch-token maps."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bench.data import synthcxr
from bench.interfaces import GROUND, BenchError, Box, ImageRef, ModelAdapter, Sample
from bench.metrics.chexpert_rules import label_report
from bench.metrics.clinical import POSITIVE, UNCERTAIN
from bench.plugins import registry
from reports.io import read_results
from tasks.grounding import PhraseGrounding
from tests.conftest import run_bench

VARIANTS = ("CNR", "CNR-signed", "CNR-per-box", "CNR-unbiased")


class MapOracle(ModelAdapter):
    """A ``ground`` model answering from a table: (image key, phrase) -> map."""

    name = "oracle"
    capabilities = frozenset({GROUND})

    def __init__(self, maps: dict[tuple[str, str], np.ndarray]) -> None:
        super().__init__()
        self.maps = maps
        self.calls: list[tuple[str, str]] = []

    def similarity_map(self, image: ImageRef, phrase: str) -> np.ndarray:
        self.calls.append((image.key, phrase))
        return self.maps[(image.key, phrase)]


@pytest.fixture(scope="module")
def task() -> PhraseGrounding:
    return PhraseGrounding(registry().get("tasks", "synthcxr_grounding"))


@pytest.fixture(scope="module")
def phrases(task) -> list[Sample]:
    return task.prepare(synthcxr.load(None, "test")[:80])


def box_mask(boxes: list[Box], size: int = 224) -> np.ndarray:
    mask = np.zeros((size, size))
    for b in boxes:
        mask[int(b.y) : int(b.y + b.h), int(b.x) : int(b.x + b.w)] = 1.0
    return mask


def coarse(a: np.ndarray, factor: int = 8) -> np.ndarray:
    """Block means: a patch-grid-like map (224 -> 28)."""
    n = a.shape[0] // factor
    return a.reshape(n, factor, n, factor).mean(axis=(1, 3))


# --------------------------------------------------------------------------- phrases


def test_one_phrase_per_present_finding_from_the_report(task, phrases):
    images = synthcxr.load(None, "test")[:80]
    expected = sum(1 for s in images for f in {b.label for b in s.boxes} if s.labels[f] == 1)
    assert len(phrases) == expected > 40
    assert len({p.id for p in phrases}) == len(phrases)
    for p in phrases:
        finding = p.meta["category"]
        assert p.boxes and all(b.label == finding for b in p.boxes)
        assert p.labels[finding] == 1  # hedged findings are left out by default
        assert p.id == f"{p.meta['image_id']}-{finding.lower().replace(' ', '-')}"
        assert p.meta["phrase_source"] in ("findings", "impression")  # every synthcxr finding is reported
        assert p.meta["phrase"] in p.sections[p.meta["phrase_source"]]
        observation = "Lung Lesion" if finding == "Nodule" else finding
        assert label_report(p.meta["phrase"])[observation] in (POSITIVE, UNCERTAIN)
    effusions = [p for p in phrases if p.meta["category"] == "Pleural Effusion"]
    assert effusions and all(
        "effusion" in p.meta["phrase"].lower() or "pleural" in p.meta["phrase"].lower() for p in effusions
    )
    bilateral = [p for p in effusions if p.meta["location"]["Pleural Effusion"] == "both bases"]
    assert all(len(p.boxes) == 2 for p in bilateral)


def test_canonical_phrases_and_uncertain_option(task):
    spec = dataclasses.replace(task.spec, options={"phrase_source": "canonical", "uncertain": "include"})
    images = synthcxr.load(None, "test")[:80]
    prepared = PhraseGrounding(spec).prepare(images)
    hedged = sum(1 for s in images for f in {b.label for b in s.boxes} if s.labels[f] == -1)
    assert hedged > 0 and len(prepared) == len(task.prepare(images)) + hedged
    for p in prepared:
        finding = p.meta["category"]
        assert p.meta["phrase_source"] == "canonical"
        assert p.meta["phrase"] == f"{finding.lower()} in the {p.meta['location'][finding]}"
    with pytest.raises(BenchError, match="unknown option"):
        PhraseGrounding(dataclasses.replace(task.spec, options={"phrases": "x"}))


# --------------------------------------------------------------------------- CNR from known maps


def _run(task: PhraseGrounding, samples: list[Sample], maps: dict) -> tuple[list[dict], dict]:
    records = list(task.predict(MapOracle(maps), samples, batch_size=8))
    records = [json.loads(json.dumps(r)) for r in records]  # what the samples file holds
    return records, task.score(records, bootstrap=100, seed=0)


def test_box_mask_maps_are_undefined_not_infinite(task, phrases):
    """A map equal to the box mask has zero variance inside and outside: CNR is undefined (reason
    zero_variance), counted, never inf or 0."""
    sample = phrases[:12]
    maps = {(p.image.key, p.meta["phrase"]): box_mask(p.boxes) for p in sample}
    records, metrics = _run(task, sample, maps)
    cnr = metrics["CNR"]
    assert cnr["value"] is None and cnr["n"] == 0 and cnr["n_undefined"] == 12
    assert cnr["undefined_reasons"] == {"zero_variance": 12}
    assert all(r["scores"]["CNR"] is None for r in records)


def test_noisy_box_maps_score_high_and_inverted_maps_negative(task, phrases):
    rng = np.random.default_rng(0)
    sample = phrases[:24]
    good = {(p.image.key, p.meta["phrase"]): coarse(box_mask(p.boxes) + rng.normal(0, 0.3, (224, 224))) for p in sample}
    records, metrics = _run(task, sample, good)
    assert set(metrics) == set(VARIANTS)
    cnr = metrics["CNR"]
    assert cnr["n"] == 24 and cnr["value"] > 2.0, cnr
    assert cnr["ci95"][0] < cnr["value"] < cnr["ci95"][1]
    assert metrics["CNR-signed"]["value"] == pytest.approx(cnr["value"])  # the map is higher inside
    assert metrics["CNR-unbiased"]["value"] < cnr["value"]  # ddof = 1: larger variances
    cats = {p.meta["category"] for p in sample}
    assert set(cnr["per_category"]) == cats
    assert cnr["category_mean"] == pytest.approx(np.mean([c["value"] for c in cnr["per_category"].values()]))
    r = records[0]
    assert np.array(r["prediction"]).shape == (28, 28)
    assert r["reference"]["image_shape"] == [224, 224] and r["reference"]["category"] == sample[0].meta["category"]
    assert r["inputs"]["phrase"] == sample[0].meta["phrase"] and r["inputs"]["phrase_source"] == "findings"
    assert all(v == round(v, 4) for row in r["prediction"] for v in row)
    inverted = {k: -v for k, v in good.items()}
    _, flipped = _run(task, sample, inverted)
    assert flipped["CNR"]["value"] == pytest.approx(cnr["value"], rel=1e-3)
    assert flipped["CNR-signed"]["value"] == pytest.approx(-cnr["value"], rel=1e-3)


def test_nan_cells_are_null_in_records_and_ignored(task, phrases, tmp_path):
    sample = phrases[:6]
    maps = {}
    for p in sample:
        m = coarse(box_mask(p.boxes) + np.random.default_rng(1).normal(0, 0.3, (224, 224)))
        m[:, :2] = np.nan  # the model saw nothing there (e.g. a centre crop)
        maps[(p.image.key, p.meta["phrase"])] = m
    records, metrics = _run(task, sample, maps)
    assert all(row[0] is None and row[1] is None for row in records[0]["prediction"])
    assert metrics["CNR"]["n"] == 6 and np.isfinite(metrics["CNR"]["value"])
    for r in records:  # the per-record score is what scoring computes for that phrase
        alone = task.score([r], bootstrap=0, seed=0)["CNR"]["value"]
        assert r["scores"]["CNR"] == pytest.approx(alone)


def test_a_phrase_sample_is_used_as_is(task, tmp_path):
    """MS-CXR-style samples (one per phrase, category and size in meta) pass through unchanged."""
    from PIL import Image

    path = tmp_path / "cxr.png"
    Image.fromarray(np.zeros((30, 40), dtype=np.uint8)).save(path)
    sample = Sample(
        id="d1-abc",
        dataset="ms_cxr",
        split="test",
        images=[ImageRef(key="mimic_cxr/d1", path=str(path))],
        labels={"Pneumonia": 1},
        boxes=[Box("Pneumonia", 10, 5, 12, 10)],
        meta={"phrase": "right basal opacity", "category": "Pneumonia", "image_width": 400, "image_height": 300},
    )
    assert task.prepare([sample]) == [sample]
    rng = np.random.default_rng(2)
    smap = rng.normal(size=(6, 8))
    records, metrics = _run(task, [sample], {("mimic_cxr/d1", "right basal opacity"): smap})
    assert records[0]["reference"] == {"boxes": [[10, 5, 12, 10]], "image_shape": [300, 400], "category": "Pneumonia"}
    assert records[0]["inputs"]["phrase_source"] == "dataset"
    assert set(metrics["CNR"]["per_category"]) == {"Pneumonia"}
    assert PhraseGrounding.image_shape(dataclasses.replace(sample, meta={"phrase": "x"})) == (30, 40)  # from the file


# --------------------------------------------------------------------------- models and the CLI


def test_clip_baseline_map_is_its_patch_token_similarity():
    import torch
    import torch.nn.functional as F

    from models.components.image_preprocess import ImagePreprocessor
    from models.reference.clip_baseline import ClipBaseline

    model = ClipBaseline(device="cpu")
    image = synthcxr.load(None, "test")[0].image
    smap = model.similarity_map(image, "small left pleural effusion")
    with torch.no_grad():
        x = model.preprocess([image])
        tokens = F.normalize(model.model.image_proj(model.model.visual(x)[1][0]), dim=-1)
    text = torch.from_numpy(model.encode_texts(["small left pleural effusion"])[0])
    assert smap.shape == (8, 8) and smap.dtype == np.float32  # 64 px, 8 px patches
    assert np.allclose(smap, (tokens @ text).reshape(8, 8).numpy(), atol=1e-5)
    # centre-crop preprocessing of a wide image: the grid is laid on the image, NaN where cropped away
    from PIL import Image

    model.preprocessor = ImagePreprocessor(size=64, channels=1, resize_mode="center_crop")
    wide = model.similarity_map(Image.fromarray(np.full((64, 128), 90, dtype=np.uint8)), "edema")
    assert wide.shape == (16, 32) and np.isnan(wide[:, :8]).all() and np.isnan(wide[:, 24:]).all()
    assert not np.isnan(wide[:, 8:24]).any()


def test_bench_run_and_rescore_with_clip_baseline(tmp_path):
    res = run_bench(
        "run", "--model", "clip-baseline", "--model-args", "device=cpu", "--task", "synthcxr_grounding",
        "--limit", "12", "--output", str(tmp_path), "--bootstrap", "100", "--no-progress", "--no-cache",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    data = read_results(run_dir / "results.json")
    task = data["tasks"]["synthcxr_grounding"]
    assert task["n_samples"] == 12 and task["family"] == "grounding"
    assert task["config"]["canonical_template"] == "{finding} in the {location}"
    assert set(task["config"]["variants"]) == set(VARIANTS)
    metrics = task["metrics"]
    assert metrics["CNR"]["n"] + metrics["CNR"]["n_undefined"] == 12 and metrics["CNR"]["value"] >= 0
    samples = run_dir / task["samples_file"]
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    assert all(np.array(r["prediction"]).shape == (8, 8) for r in records)
    assert samples.stat().st_size < 12 * 2000  # small patch grids
    from bench import api  # `bench score` without a model: the same metrics from the samples file

    rescored = api.score(samples, task="synthcxr_grounding", bootstrap=100, seed=0)
    for v in VARIANTS:
        assert rescored[v]["value"] == pytest.approx(metrics[v]["value"]) and rescored[v]["ci95"] == metrics[v]["ci95"]
    generic = api.score(samples, metrics=["CNR"], bootstrap=0)
    assert generic["CNR"]["value"] == pytest.approx(metrics["CNR"]["value"])
