"""Fine-tuning at 1 / 10 / 100 % of the training labels (tasks/finetune.py): subsets, the linear probe against
the Scratch baseline on synthcxr, the feature cache shared across fractions, full fine-tuning on a tiny
budget, and the RSNA / SIIM-ACR / COVIDx tasks on fixture files in their real formats."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import api
from bench.cache import PredictionCache
from bench.data import covidx, rle, subsets, synthcxr
from bench.data import rsna_pneumonia as rsna
from bench.data import siim_acr as siim
from bench.interfaces import BenchError, Sample, resolve
from bench.plugins import registry
from bench.runner import dataset_fingerprint
from leaderboard.site import build_site
from reports.io import read_results
from tasks.catalog import SYNTH_FINDINGS
from tasks.finetune_train import Hyper, reinitialise, train_full
from tests.conftest import run_bench
from tests.test_data_rsna_siim import rsna_labels, write_dicom

FINDINGS = list(SYNTH_FINDINGS)


def task_for(name: str, **options):
    spec = registry().get("tasks", name)
    spec = dataclasses.replace(spec, options={**spec.options, **options})
    return resolve(spec.factory)(spec)


@pytest.fixture(scope="module")
def synth() -> dict[str, list[Sample]]:
    return {split: synthcxr.load(None, split) for split in ("train", "val", "test")}


# --------------------------------------------------------------------------- subsets


def test_multilabel_subsets_are_small_nested_and_keep_every_class(synth):
    train = synth["train"]
    stratify = subsets.rarest_positive(train, FINDINGS)
    strata = len({stratify(s) for s in train})
    for seed in (0, 1, 2):
        one = subsets.subset_ids(train, 0.01, seed=seed, stratify=stratify, cover=FINDINGS)
        ten = subsets.subset_ids(train, 0.1, seed=seed, stratify=stratify, cover=FINDINGS)
        assert 14 <= len(one) <= 14 + strata  # 1 % of 1,400 plus at most one rounding per stratum
        assert one < ten  # nested
        chosen = [s for s in train if s.id in one]
        for c in FINDINGS:
            assert any(s.labels.get(c) == 1 for s in chosen) and any(s.labels.get(c) != 1 for s in chosen), c
    draws = {frozenset(subsets.subset_ids(train, 0.01, seed=k, stratify=stratify, cover=FINDINGS)) for k in range(3)}
    assert len(draws) == 3  # seeded: another seed, another subset


def test_cover_keeps_a_class_that_has_no_stratum_of_its_own():
    # every A-positive also has a rarer label (B, C or D), so no stratum is A's own
    def labels(i: int) -> dict[str, int]:
        return {
            "A": int(i < 30),
            "B": int(i < 10 or 30 <= i < 40),
            "C": int(10 <= i < 20 or 40 <= i < 50),
            "D": int(20 <= i < 30 or 50 <= i < 65),
        }

    samples = [Sample(id=f"s{i:03d}", dataset="toy", split="train", labels=labels(i)) for i in range(100)]
    stratify = subsets.rarest_positive(samples, "ABCD")
    assert {stratify(s) for s in samples if s.labels["A"]} <= {"B", "C", "D"}
    lacking = 0
    for seed in range(20):
        plain = subsets.subset_ids(samples, 0.01, seed=seed, stratify=stratify)
        covered = subsets.subset_ids(samples, 0.01, seed=seed, stratify=stratify, cover="ABCD")
        lacking += not any(samples[int(i[1:])].labels["A"] for i in plain)
        assert plain <= covered and len(covered) <= len(plain) + 1
        assert any(samples[int(i[1:])].labels["A"] for i in covered)
    assert lacking > 0  # without cover some seeds lose class A


def test_data_that_cannot_support_a_class_is_refused(synth):
    task = task_for("synthcxr_ft_1pct", classes=(*FINDINGS, "Fracture"))
    with pytest.raises(BenchError, match=r"full train split \(1400 samples\) cannot support fine-tuning: Fracture"):
        task.use_splits({"train": synth["train"], "val": synth["val"]})
    no_finding = [s for s in synth["val"] if not any(s.labels.get(c) in (1, -1) for c in FINDINGS)]
    with pytest.raises(BenchError, match="no class has both positive and negative examples in the val split"):
        task_for("synthcxr_ft_1pct").use_splits({"train": synth["train"], "val": no_finding})
    with pytest.raises(BenchError, match="needs its train and val splits"):
        next(task_for("synthcxr_ft_1pct").predict(None, synth["test"], 8))  # type: ignore[arg-type]


def test_scoring_records_without_seeds_is_refused(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "prediction": {"Edema": 0.4}, "reference": {"Edema": 1}}) + "\n")
    with pytest.raises(BenchError, match="keyed by training seed"):
        api.score(plain, task="synthcxr_ft_1pct", bootstrap=0)


def test_fingerprint_changes_with_the_chosen_ids(synth):
    selections = []
    for seeds, fraction in (((0,), 0.01), ((1,), 0.01), ((0,), 0.1)):
        task = task_for("synthcxr_ft_1pct", seeds=seeds, fraction=fraction)
        task.use_splits({"train": synth["train"], "val": synth["val"]})
        selections.append(task.data_selection())
    fingerprints = {dataset_fingerprint("synthcxr", synth["test"], sel) for sel in selections}
    assert len(fingerprints) == 3
    assert dataset_fingerprint("synthcxr", synth["test"], {}) == dataset_fingerprint("synthcxr", synth["test"])


# --------------------------------------------------------------------------- the linear probe on synthcxr


def test_linear_probe_beats_scratch_fractions_rank_and_features_are_cached(trained_clip, tmp_path, synth):
    cache = tmp_path / "cache.sqlite"
    tasks = "synthcxr_ft_1pct,synthcxr_ft_10pct,synthcxr_ft_100pct,synthcxr_ft_1pct_scratch"
    # --limit: 200 of the 400 test images, to keep the suite fast (benchmarks/finetune_speed.py runs all)
    res = run_bench(
        "run", "--model", "clip-baseline", "--model-args", f"checkpoint={trained_clip}", "--task", tasks,
        "--output", str(tmp_path / "runs"), "--cache", str(cache), "--bootstrap", "200", "--limit", "200",
        "--no-progress",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)
    results = read_results(printed["run_dir"])
    got = results["tasks"]
    auc = {name: t["metrics"]["AUC"] for name, t in got.items()}

    # mean ± sd over seeds, per-seed values kept, and the printed summary says so
    for name, n_seeds in (("synthcxr_ft_1pct", 3), ("synthcxr_ft_10pct", 3), ("synthcxr_ft_100pct", 1)):
        seeds = auc[name]["seeds"]
        assert len(seeds) == n_seeds and got[name]["config"]["seeds"] == list(range(n_seeds))
        values = [s["value"] for s in seeds.values()]
        assert auc[name]["value"] == pytest.approx(np.mean(values))
        if n_seeds > 1:
            assert auc[name]["sd"] == pytest.approx(np.std(values, ddof=1)) and auc[name]["sd"] > 0
            assert printed["summary"][name]["AUC"] == f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} (3 seeds)"
        else:
            assert auc[name]["sd"] is None
        assert auc[name]["ci95"][0] < auc[name]["value"] < auc[name]["ci95"][1]
    # the pretrained encoder at 1 % beats the same architecture from scratch by a clear margin
    assert auc["synthcxr_ft_1pct"]["value"] > auc["synthcxr_ft_1pct_scratch"]["value"] + 0.15
    assert auc["synthcxr_ft_1pct"]["value"] > 0.8 and auc["synthcxr_ft_1pct_scratch"]["value"] < 0.7
    assert all(v["value"] < 0.7 for v in auc["synthcxr_ft_1pct_scratch"]["seeds"].values())
    # more labels, better on average over seeds
    assert auc["synthcxr_ft_100pct"]["value"] >= auc["synthcxr_ft_10pct"]["value"] >= auc["synthcxr_ft_1pct"]["value"]
    assert got["synthcxr_ft_1pct_scratch"]["config"]["init"] == "scratch"
    for name in got:
        assert set(got[name]["metrics"]) == {
            "AUC", "F1-val-threshold", "ACC-val-threshold", "F1-optimistic", "ACC-optimistic"
        }  # fmt: skip
        assert got[name]["metrics"]["F1-val-threshold"]["threshold_policy"] == "validation"
    # the chosen ids are in the fingerprint: the same test split, one fingerprint per selection of training ids
    prints = {name: t["dataset_fingerprint"] for name, t in got.items()}
    assert len(set(prints.values())) == 3 and prints["synthcxr_ft_1pct_scratch"] == prints["synthcxr_ft_1pct"]

    # features are computed once per model and image: the 10 % and 100 % tasks compute only new training images
    train = synth["train"]
    stratify = subsets.rarest_positive(train, FINDINGS)

    def union(fraction: float) -> set[str]:
        return set().union(
            *(subsets.subset_ids(train, fraction, seed=k, stratify=stratify, cover=FINDINGS) for k in range(3))
        )

    one, ten, held = union(0.01), union(0.1), len(synth["val"]) + 200
    calls = {name: t["calls"] for name, t in got.items()}
    assert calls["synthcxr_ft_1pct"]["model_items"] == len(one) + held
    assert calls["synthcxr_ft_10pct"]["model_items"] == len(ten - one)
    # served from this run's memory (computed by the 1 % task) or, across runs, from the cache
    assert calls["synthcxr_ft_10pct"]["reused"] + calls["synthcxr_ft_10pct"]["cache_hits"] >= held + len(one)
    assert calls["synthcxr_ft_100pct"]["model_items"] == len(train) - len(ten)
    sizes = [r["train_samples"] for r in got["synthcxr_ft_1pct_scratch"]["config"]["runs"]]
    assert calls["synthcxr_ft_1pct_scratch"]["model_items"] == sum(sizes) + 3 * held  # one random backbone per seed
    fp = results["model"]["fingerprint"]  # one cached feature row per model and image, whatever the fraction
    everything = [s.image.key for s in synth["train"] + synth["val"] + synth["test"][:200]]
    with PredictionCache(cache) as store:
        assert len(store.get_many([(fp, "embed", key, "features:backbone") for key in everything])) == len(everything)

    # the leaderboard shows mean ± sd over seeds, and exports the sd
    index = build_site([tmp_path / "runs"], tmp_path / "site")
    one = auc["synthcxr_ft_1pct"]
    assert f"{one['value']:.4f}" in index.read_text() and f" ± {one['sd']:.4f}</span>" in index.read_text()
    table = json.loads((tmp_path / "site" / "tables" / "synthcxr_ft_1pct.json").read_text())
    assert table["rows"][0]["AUC sd over seeds"] == pytest.approx(one["sd"])

    # rescoring the samples file without the model gives the same numbers
    samples = Path(printed["run_dir"]) / got["synthcxr_ft_1pct"]["samples_file"]
    again = api.score(samples, task="synthcxr_ft_1pct", bootstrap=200, seed=0)
    assert again["AUC"]["value"] == pytest.approx(auc["synthcxr_ft_1pct"]["value"])
    assert again["AUC"]["sd"] == pytest.approx(auc["synthcxr_ft_1pct"]["sd"])
    assert again["F1-optimistic"]["ci95"] == pytest.approx(got["synthcxr_ft_1pct"]["metrics"]["F1-optimistic"]["ci95"])


# --------------------------------------------------------------------------- full fine-tuning


def test_full_finetuning_trains_a_copy_of_the_backbone(trained_clip, synth):
    from models.reference.clip_baseline import ClipBaseline

    model = ClipBaseline(checkpoint=str(trained_clip), device="cpu")
    images = [s.image for s in synth["test"][:8]]
    before = model.encode_images(images)
    backbone, dim = model.image_backbone()
    start = {k: v.clone() for k, v in backbone.state_dict().items()}
    train, val = synth["train"][:16], synth["val"][:24]
    y = task_for("synthcxr_ft_1pct").labels(train)
    y_val = task_for("synthcxr_ft_1pct").labels(val)
    hp = Hyper(lr=1e-3, head_lr=1e-2, weight_decay=0.0, batch_size=8, max_epochs=2, min_steps=0, warmup_ratio=0.0,
               patience=5)  # fmt: skip
    predict, outcome = train_full(backbone, dim, model.preprocess, [s.image for s in train], y, [s.image for s in val],
                                  y_val, hp, seed=0, batch_size=8)  # fmt: skip
    assert outcome.steps == 4 and outcome.epochs_run == 2 and 1 <= outcome.best_epoch <= 2
    probs = predict(images)
    assert probs.shape == (8, len(FINDINGS)) and ((probs > 0) & (probs < 1)).all()
    changed = [k for k, v in backbone.state_dict().items() if not torch.equal(v, start[k])]
    assert len(changed) > len(start) // 2  # the backbone itself was trained
    np.testing.assert_array_equal(model.encode_images(images), before)  # the adapter is untouched


def test_full_finetuning_task_and_scratch_on_a_tiny_budget(trained_clip, synth):
    from models.reference.clip_baseline import ClipBaseline

    model = ClipBaseline(checkpoint=str(trained_clip), device="cpu")
    out = {}
    for name in ("synthcxr_ft_1pct_full", "synthcxr_ft_1pct_full_scratch"):
        task = task_for(name, seeds=(0,), max_epochs=2, min_steps=4, batch_size=16)
        task.use_splits({"train": synth["train"], "val": synth["val"][:40]})
        records = list(task.predict(model, synth["test"][:40], 16))
        out[name] = task.score(records, 0, 0)
        config = task.config()
        assert config["mode"] == "full" and config["optimisation"]["precision"].startswith("bf16 autocast on CUDA")
        [run] = config["runs"]
        assert run["train_samples"] == 14 and run["steps"] == 4 and run["epochs_per_round"] == 2
        assert set(records[0]["prediction"]) == {"0"} and len(records) == 40
    for scores in out.values():
        assert 0.0 <= scores["AUC"]["value"] <= 1.0 and scores["AUC"]["sd"] is None


def test_scratch_reinitialises_every_parameter_reproducibly(trained_clip):
    from models.reference.clip_baseline import ClipBaseline

    model = ClipBaseline(checkpoint=str(trained_clip), device="cpu")
    (a, _), (b, _), (c, _) = model.image_backbone(), model.image_backbone(), model.image_backbone()
    pretrained = {k: v.clone() for k, v in a.state_dict().items()}
    counts = reinitialise(a, 1)
    reinitialise(b, 1)
    reinitialise(c, 2)
    assert sum(counts.values()) == len(list(a.parameters()))
    assert counts["normal"] >= 2  # the ViT's class token and position embedding have no reset_parameters()
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q), name  # same seed, same init
        if p.numel() > 1 and not torch.all(p == p.flatten()[0]):  # not a constant (norm scale 1, bias 0)
            assert not torch.equal(p, r), name
            assert not torch.equal(p, pretrained[name]), name


# --------------------------------------------------------------------------- RSNA / SIIM-ACR / COVIDx fixtures


def _pixels(k: int, positive: bool) -> np.ndarray:
    rng = np.random.default_rng(k)
    img = rng.integers(0, 2000, size=(16, 16))
    if positive:
        img[4:12, 4:12] += 1500
    return img.astype(np.uint16)


def make_rsna_root(root: Path, n: int = 24) -> Path:
    rows = []
    for i in range(n):
        pid = f"{i:08d}-aaaa-4bbb-8ccc-{i:012d}"
        positive = i % 2 == 0
        rows.append((pid, 10.0, 20.0, 30.0, 40.0, 1) if positive else (pid, "", "", "", "", 0))
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", _pixels(i, positive))
    (root / "stage_2_train_labels.csv").write_text(rsna_labels(rows))
    return root


def make_siim_root(root: Path, n: int = 24) -> Path:
    lines = ["ImageId, EncodedPixels"]
    for i in range(n):
        image_id = f"1.2.276.0.7230010.3.1.4.8323329.{1000 + i}.1517875162.{i:06d}"
        positive = i % 3 == 1
        if positive:
            mask = np.zeros((1024, 1024), dtype=bool)
            mask[100 + i : 200 + i, 300:400] = True
            lines.append(f"{image_id}, {rle.encode(mask, 'relative')}")
        else:
            lines.append(f"{image_id}, -1")
        folder = root / "dicom-images-train" / f"1.2.276.0.7230010.3.1.2.{i}" / f"1.2.276.0.7230010.3.1.3.{i}"
        write_dicom(folder / f"{image_id}.dcm", _pixels(100 + i, positive))
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
    return root


def make_covidx_root(root: Path, n: int = 30) -> Path:
    for split, start in (("train", 0), ("test", n)):
        (root / split).mkdir(parents=True)
        lines = []
        for i in range(start, start + n // 2 if split == "test" else start + n):
            positive = i % 2 == 0
            name = f"img-{i:03d}.png"
            Image.fromarray((_pixels(200 + i, positive) // 16).astype(np.uint8), mode="L").save(root / split / name)
            lines.append(f"p{i} {name} {'positive' if positive else 'negative'} {'ricord' if positive else 'rsna'}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_rsna_siim_covidx_finetune_tasks_on_fixture_files(trained_clip, tmp_path):
    data = tmp_path / "data"
    readers = {
        "rsna_ft_100pct": (rsna, make_rsna_root(data / "rsna_pneumonia"), "Pneumonia"),
        "siim_ft_100pct": (siim, make_siim_root(data / "siim_acr"), "Pneumothorax"),
        "covidx_ft_1pct": (covidx, make_covidx_root(data / "covidx"), "COVID-19"),
    }
    for name, (reader, root, label) in readers.items():  # the fixtures have both classes in every split
        for split in ("train", "val", "test"):
            values = {s.labels[label] for s in reader.load(root, split, split_scheme="llava_radz")}
            assert values == {0, 1}, (name, split)
    res = run_bench(
        "run", "--model", "clip-baseline", "--model-args", f"checkpoint={trained_clip}", "--task", ",".join(readers),
        "--data-root", str(data), "--output", str(tmp_path / "runs"), "--cache", str(tmp_path / "c.sqlite"),
        "--bootstrap", "0", "--no-progress",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = read_results(json.loads(res.stdout)["run_dir"])["tasks"]
    for name, (reader, root, label) in readers.items():
        task = got[name]
        test = reader.load(root, "test", split_scheme="llava_radz")
        train = reader.load(root, "train", split_scheme="llava_radz")
        assert task["n_samples"] == len(test) and task["config"]["classes"] == [label]
        assert 0.0 <= task["metrics"]["AUC"]["value"] <= 1.0
        runs = task["config"]["runs"]
        if name.endswith("100pct"):
            assert [r["train_samples"] for r in runs] == [len(train)]
        else:  # 1 % of a tiny split: one image of each class per seed
            assert [r["train_samples"] for r in runs] == [2, 2, 2]
            assert all(r["train_positives"] == {label: 1} for r in runs)
    # a training split without positives cannot be fine-tuned on: one clear message, exit status 2
    rows = [(f"{i:08d}-0000-4000-8000-{i:012d}", "", "", "", "", 0) for i in range(10)]
    empty = tmp_path / "neg" / "rsna_pneumonia"
    empty.mkdir(parents=True)
    (empty / "stage_2_train_labels.csv").write_text(rsna_labels(rows))
    for pid, *_ in rows:
        write_dicom(empty / "stage_2_train_images" / f"{pid}.dcm", _pixels(0, False))
    res = run_bench(
        "run", "--model", "clip-baseline", "--model-args", f"checkpoint={trained_clip}", "--task", "rsna_ft_10pct",
        "--data-root", str(tmp_path / "neg"), "--output", str(tmp_path / "runs2"),
        "--cache", str(tmp_path / "c2.sqlite"), "--no-progress",
    )  # fmt: skip
    assert res.returncode == 2
    assert "cannot support fine-tuning: Pneumonia (no positive example)" in res.stderr
    assert "Traceback" not in res.stderr
