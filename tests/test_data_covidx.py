"""COVIDx reader: the space-separated lists (CXR-2 positive/negative and the older three classes),
official and LLaVA-RadZ splits, training subsets and malformed copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import covidx
from bench.data.common import seeded_split
from bench.interfaces import BenchError
from tests.conftest import run_bench

# <patient id> <filename> <label> <source>, as in the COVIDx CXR-2 train.txt / test.txt
TRAIN = [
    ("3", "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg", "positive", "cohen"),
    ("3", "SARS-10.1148rg.242035193-g04mr34g0-Fig8b-day5.jpeg", "positive", "cohen"),
    ("5", "nejmc2001573_f1a.jpeg", "positive", "cohen"),
    ("419639-003251", "MIDRC-RICORD-1C-419639-003251-46647-0.png", "positive", "ricord"),
    ("ff8a4c5c-1a2b", "ff8a4c5c-1a2b-4c5d-9e8f-000000000001.png", "negative", "rsna"),
    ("ff8a4c5c-3c4d", "ff8a4c5c-3c4d-4c5d-9e8f-000000000002.png", "negative", "rsna"),
    ("1", "COVID(1).png", "positive", "sirm"),  # same patient id as below, another source
    ("1", "NORMAL (12).png", "negative", "bimcv"),  # a filename with a space
]
TEST = [
    ("419639-000082", "MIDRC-RICORD-1C-419639-000082-36001-0.png", "positive", "ricord"),
    ("a1b2", "a1b2c3d4-0000-0000-0000-000000000000.png", "negative", "rsna"),
    ("a1b3", "a1b3c3d4-0000-0000-0000-000000000000.png", "negative", "rsna"),
]
OLD = [
    ("9", "person1_bacteria_1.jpeg", "pneumonia", ""),
    ("10", "normal-1.png", "normal", ""),
    ("11", "covid-1.png", "COVID-19", ""),
]


def lines(rows: list[tuple[str, str, str, str]]) -> str:
    return "".join(" ".join(v for v in r if v) + "\n" for r in rows)


def make_covidx(root: Path, train=TRAIN, test=TEST, val=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test), ("val", val)):
        if rows is None:
            continue
        (root / f"{name}.txt").write_text(lines(rows))
        (root / name).mkdir(exist_ok=True)
        for k, r in enumerate(rows):
            img = Image.fromarray(np.full((16, 16), 20 * k, dtype=np.uint8), mode="L")
            img.save(root / name / r[1], format="PNG" if r[1].endswith(".png") else "JPEG")
    return root


def test_official_split_labels_and_meta(tmp_path: Path) -> None:
    root = make_covidx(tmp_path / "covidx")
    test = covidx.load(root, "test")
    assert [s.id for s in test] == [f"test/{r[1]}" for r in TEST]
    assert [s.labels for s in test] == [{"COVID-19": 1}, {"COVID-19": 0}, {"COVID-19": 0}]
    first = test[0]
    assert first.meta["patient_id"] == "419639-000082" and first.meta["source"] == "ricord"
    assert first.meta["label_scheme"] == "binary" and first.meta["label_raw"] == "positive"
    assert first.image.path.endswith("test/MIDRC-RICORD-1C-419639-000082-36001-0.png")
    assert first.image.load().size == (16, 16)
    train, val = covidx.load(root, "train"), covidx.load(root, "val")
    assert sorted(s.id for s in train + val) == sorted(f"train/{r[1]}" for r in TRAIN)
    spaced = next(s for s in train + val if "NORMAL" in s.id)
    assert spaced.id == "train/NORMAL (12).png" and spaced.labels == {"COVID-19": 0}


def test_val_split_by_patient_keyed_by_source(tmp_path: Path) -> None:
    root = make_covidx(tmp_path / "covidx")
    val = covidx.load(root, "val", val_fraction=0.3)
    keys = {f"{r[3]}/{r[0]}" for r in TRAIN}
    expected = seeded_split(keys, {"train": 0.7, "val": 0.3}, 0)
    assert {f"{s.meta['source']}/{s.meta['patient_id']}" for s in val} == {k for k, v in expected.items() if v == "val"}
    # patient "3" has two images: both land in the same split
    train = covidx.load(root, "train", val_fraction=0.3)
    assert sum(s.meta["patient_id"] == "3" for s in train) in (0, 2)
    assert sum(s.meta["patient_id"] == "3" for s in train) + sum(s.meta["patient_id"] == "3" for s in val) == 2
    # ids "1" of sirm and bimcv are different patients (split independently, not merged)
    assert len([k for k in keys if k.endswith("/1")]) == 2


def test_val_txt_is_used_when_present(tmp_path: Path) -> None:
    val_rows = [("77", "val-image-1.png", "negative", "rsna")]
    root = make_covidx(tmp_path / "covidx", val=val_rows)
    assert [s.id for s in covidx.load(root, "val")] == ["val/val-image-1.png"]
    assert len(covidx.load(root, "train")) == len(TRAIN)


def test_llava_radz_pooled_split(tmp_path: Path) -> None:
    root = make_covidx(tmp_path / "covidx")
    got = {s: covidx.load(root, s, split_scheme="llava_radz") for s in covidx.SPLITS}
    all_ids = {f"train/{r[1]}" for r in TRAIN} | {f"test/{r[1]}" for r in TEST}
    assert {s.id for ss in got.values() for s in ss} == all_ids
    patients = {f"{r[3]}/{r[0]}" for r in TRAIN + TEST}
    expected = seeded_split(patients, {"train": 0.7, "val": 0.2, "test": 0.1}, 0)
    for split, samples in got.items():
        assert {f"{s.meta['source']}/{s.meta['patient_id']}" for s in samples} == {
            p for p, v in expected.items() if v == split
        }
        assert all(s.meta["split_scheme"] == "llava_radz" for s in samples)


def test_older_three_class_lists(tmp_path: Path) -> None:
    root = make_covidx(tmp_path / "covidx", train=OLD, test=OLD[:1])
    test = covidx.load(root, "test")
    assert test[0].labels == {"COVID-19": 0, "Pneumonia": 1, "No Finding": 0}
    assert test[0].meta["label_scheme"] == "three_class" and test[0].meta["source"] == ""
    by_name = {s.id: s.labels for s in covidx.load(root, "train") + covidx.load(root, "val")}
    assert by_name["train/covid-1.png"] == {"COVID-19": 1, "Pneumonia": 0, "No Finding": 0}
    assert by_name["train/normal-1.png"] == {"COVID-19": 0, "Pneumonia": 0, "No Finding": 1}


def test_versioned_list_names(tmp_path: Path) -> None:
    root = make_covidx(tmp_path / "covidx")
    (root / "train.txt").rename(root / "train_COVIDx9A.txt")
    (root / "test.txt").rename(root / "test_COVIDx9A.txt")
    assert len(covidx.load(root, "test")) == len(TEST)
    assert covidx.load(root, "test")[0].meta["list_file"] == "test_COVIDx9A.txt"


def test_train_fraction(tmp_path: Path) -> None:
    rows = [(f"p{i}", f"img{i}.png", "positive" if i % 5 == 0 else "negative", "src") for i in range(200)]
    root = tmp_path / "covidx"
    root.mkdir()
    (root / "train.txt").write_text(lines(rows))
    (root / "test.txt").write_text(lines(rows[:3]))
    full = covidx.load(root, "train", check_images=False)
    one = covidx.load(root, "train", check_images=False, train_fraction=0.01)
    ten = covidx.load(root, "train", check_images=False, train_fraction=0.1)
    assert {s.id for s in one} < {s.id for s in ten} < {s.id for s in full}
    assert {s.labels["COVID-19"] for s in one} == {0, 1}  # stratified: both classes kept
    assert ten[0].meta["subset_size"] == len(ten) and ten[0].meta["subset_of"] == len(full)


# --------------------------------------------------------------------------- malformed copies


def malformed_variants(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(dataset, root, substring the error must contain) for the shared fuzz test."""
    out: list[tuple[str, Path, str]] = []

    def variant(name: str, expect: str, edit, **kw) -> None:
        root = make_covidx(tmp_path / f"covidx-{name}", **kw)
        edit(root)
        out.append(("covidx", root, expect))

    variant("no-test", "missing test.txt", lambda r: (r / "test.txt").unlink())
    variant(
        "bad-label",
        "test.txt, line 2: expected '<patient id> <filename> <label> <source>'",
        lambda r: (r / "test.txt").write_text("1 a.png positive rsna\n2 b.png maybe rsna\n"),
    )
    variant(
        "mixed-labels",
        "a normal/pneumonia/COVID-19 label, but train.txt line 1 uses positive/negative",
        lambda r: (r / "test.txt").write_text(lines(OLD)),
    )
    variant(
        "no-image-folder",
        "missing folder test/",
        lambda r: shutil.rmtree(r / "test"),
    )
    variant(
        "missing-image",
        "a1b3c3d4-0000-0000-0000-000000000000.png",
        lambda r: (r / "test" / "a1b3c3d4-0000-0000-0000-000000000000.png").unlink(),
    )
    variant("empty-list", "test.txt: the list is empty", lambda r: (r / "test.txt").write_text("\n"))
    variant(
        "duplicate",
        "is listed twice",
        lambda r: (r / "test.txt").write_text(lines([*TEST, TEST[0]])),
    )
    variant(
        "corrupt-image",
        "cannot read image",
        lambda r: [(r / "test" / t[1]).write_bytes(b"\x89PNG broken") for t in TEST],
    )
    return out


def test_malformed_variants_raise_clear_errors(tmp_path: Path) -> None:
    for dataset, root, expect in malformed_variants(tmp_path):
        assert dataset == "covidx"
        report = covidx.check(root)
        assert not report.ok, root.name
        assert any(expect in p for p in report.problems), (root.name, report.problems)


def test_unknown_options_and_scheme(tmp_path: Path) -> None:
    root = make_covidx(tmp_path / "covidx")
    with pytest.raises(BenchError, match="unknown split_scheme 'random'"):
        covidx.load(root, "test", split_scheme="random")
    with pytest.raises(BenchError, match="unknown option"):
        covidx.load(root, "test", colour=True)


def test_cli_check(tmp_path: Path) -> None:
    root = make_covidx(tmp_path / "covidx")
    proc = run_bench("data", "check", "covidx", "--root", str(root), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["splits"]["test"] == 3
    assert report["splits"]["train"] + report["splits"]["val"] == len(TRAIN)
    (root / "test.txt").write_text("1 a.png sick rsna\n")
    proc = run_bench("data", "check", "covidx", "--root", str(root), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "test.txt, line 1" in json.loads(proc.stdout)["problems"][0]
