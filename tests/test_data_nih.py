"""NIH ChestX-ray14 reader: fixture in the real file formats, malformed copies, the real label files."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import chestxray14 as nih
from bench.data.common import seeded_split
from bench.interfaces import BenchError
from tests.conftest import run_bench

ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
# name, findings, follow-up, patient, age, sex, view, width, height
ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1, 57, "M", "PA", 2682, 2749),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, 58, "M", "PA", 2894, 2729),
    ("00000002_000.png", "No Finding", 0, 2, 80, "M", "PA", 2500, 2048),
    ("00000003_000.png", "Hernia|Pleural_Thickening", 0, 3, 74, "F", "PA", 2500, 2048),
    ("00000003_001.png", "Infiltration", 1, 3, 75, "F", "AP", 2048, 2500),
    ("00000004_000.png", "Mass|Nodule", 0, 4, 82, "M", "AP", 2500, 2048),
    ("00000005_000.png", "No Finding", 0, 5, 69, "F", "PA", 2048, 2500),
    ("00000006_000.png", "Effusion|Infiltration|Pneumothorax", 0, 6, 61, "M", "AP", 3056, 2544),
    ("00000007_000.png", "No Finding", 0, 7, 44, "F", "PA", 2992, 2991),
    ("00000008_000.png", "Atelectasis", 0, 8, 39, "M", "PA", 2048, 2500),
]
TEST = ["00000006_000.png", "00000007_000.png", "00000008_000.png"]
TRAIN_VAL = [r[0] for r in ROWS if r[0] not in TEST]
BOXES = [
    ("00000006_000.png", "Infiltrate", 225.084745762712, 547.019216763771, 86.7796610169491, 79.1864406779661),
    ("00000006_000.png", "Effusion", 686.1, 131.5, 185.4, 313.4),
    ("00000008_000.png", "Atelectasis", 5.4, 12.8, 901.1, 873.3),
]


def entry_text(rows: list[tuple] = ROWS, *, old: bool = False) -> str:
    lines = [ENTRY_HEADER + ("," if old else "")]
    for name, findings, fu, pid, age, sex, view, w, h in rows:
        spacing = "0.143,0.143"
        lines.append(f"{name},{findings},{fu},{pid},{age},{sex},{view},{w},{h},{spacing}" + ("," if old else ""))
    return "\n".join(lines) + "\n"


def bbox_text(boxes: list[tuple] = BOXES) -> str:
    return "\n".join([BBOX_HEADER, *(",".join(str(v) for v in b) for b in boxes)]) + "\n"


def make_nih(root: Path, *, kaggle_layout: bool = True, old: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / ("Data_Entry_2017.csv" if old else "Data_Entry_2017_v2020.csv")).write_text(entry_text(old=old))
    (root / "BBox_List_2017.csv").write_text(bbox_text())
    (root / "train_val_list.txt").write_text("\n".join(TRAIN_VAL) + "\n")
    (root / "test_list.txt").write_text("\n".join(TEST) + "\n")
    for k, row in enumerate(ROWS):
        folder = root / (f"images_{1 + k % 2:03d}/images" if kaggle_layout else "images")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 10 * k, dtype=np.uint8), mode="L").save(folder / row[0])
    return root


# --------------------------------------------------------------------------- normal case


def test_test_split_ids_labels_boxes(tmp_path: Path) -> None:
    root = make_nih(tmp_path / "nih")
    test = nih.load(root, "test")
    assert [s.id for s in test] == TEST
    s6, s7, s8 = test
    assert s6.labels == {
        **{c: 0 for c in nih.CLASSES},
        "Effusion": 1,
        "Infiltration": 1,
        "Pneumothorax": 1,
        "No Finding": 0,
    }
    assert s7.labels["No Finding"] == 1 and all(s7.labels[c] == 0 for c in nih.CLASSES)
    assert -1 not in s6.labels.values() and None not in s6.labels.values()  # exhaustive 0/1 labels
    # the box file's "Infiltrate" is the Infiltration class
    assert [(b.label, round(b.x, 3), round(b.w, 3)) for b in s6.boxes] == [
        ("Infiltration", 225.085, 86.78),
        ("Effusion", 686.1, 185.4),
    ]
    assert s7.boxes == [] and len(s8.boxes) == 1
    assert s6.meta["patient_id"] == "6" and s6.meta["view"] == "AP"
    assert s6.meta["original_size"] == [3056, 2544]
    assert s6.image.path.endswith("images_002/images/00000006_000.png")  # row 7: second folder
    assert s6.image.load().size == (16, 16)


def test_pleural_thickening_is_renamed(tmp_path: Path) -> None:
    root = make_nih(tmp_path / "nih")
    by_id = {s.id: s for split in ("train", "val") for s in nih.load(root, split)}
    assert by_id["00000003_000.png"].labels["Pleural Thickening"] == 1
    assert by_id["00000003_000.png"].labels["Hernia"] == 1
    assert "Pleural_Thickening" not in by_id["00000003_000.png"].labels


def test_train_val_split_by_patient_seeded(tmp_path: Path) -> None:
    root = make_nih(tmp_path / "nih", kaggle_layout=False)
    train, val = nih.load(root, "train"), nih.load(root, "val")
    assert sorted(s.id for s in train + val) == sorted(TRAIN_VAL)
    train_p, val_p = {s.meta["patient_id"] for s in train}, {s.meta["patient_id"] for s in val}
    assert not train_p & val_p  # no patient crosses train/val
    expected = seeded_split({"1", "2", "3", "4", "5"}, {"train": 0.9, "val": 0.1}, 0)
    assert val_p == {p for p, s in expected.items() if s == "val"} and len(val_p) == 1
    assert [s.id for s in nih.load(root, "train")] == [s.id for s in train]  # deterministic
    other = nih.load(root, "val", seed=5, val_fraction=0.4)
    assert len({s.meta["patient_id"] for s in other}) == 2


def test_old_data_entry_with_trailing_comma(tmp_path: Path) -> None:
    old = make_nih(tmp_path / "old", old=True)
    new = make_nih(tmp_path / "new")
    a, b = nih.load(old, "test"), nih.load(new, "test")
    assert [(s.id, s.labels, s.meta["original_size"]) for s in a] == [
        (s.id, s.labels, s.meta["original_size"]) for s in b
    ]
    assert a[0].meta["label_file"] == "Data_Entry_2017.csv"


def test_chexnet_split_lists(tmp_path: Path) -> None:
    root = make_nih(tmp_path / "nih")
    lists = root / "chexnet_splits"
    lists.mkdir()
    label_cols = " ".join(["0"] * 14)
    (lists / "train_list.txt").write_text("".join(f"{n} {label_cols}\n" for n in TRAIN_VAL[:5]))
    (lists / "val_list.txt").write_text(f"{TRAIN_VAL[5]} {label_cols}\n")
    (lists / "test_list.txt").write_text("".join(f"{n} {label_cols}\n" for n in TRAIN_VAL[6:] + TEST))
    test = nih.load(root, "test", split_scheme="chexnet")
    assert [s.id for s in test] == TRAIN_VAL[6:] + TEST
    assert test[-1].labels["Atelectasis"] == 1  # labels from Data_Entry, not the list's columns


def test_train_fraction_subset(tmp_path: Path) -> None:
    root = make_nih(tmp_path / "nih")
    full = nih.load(root, "train")
    part = nih.load(root, "train", train_fraction=0.01)
    assert 1 <= len(part) < len(full) and {s.id for s in part} <= {s.id for s in full}
    assert part[0].meta["train_fraction"] == 0.01 and part[0].meta["subset_of"] == len(full)
    assert [s.id for s in nih.load(root, "test", train_fraction=0.01)] == TEST  # test untouched


# --------------------------------------------------------------------------- malformed copies


def malformed_variants(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(dataset, root, substring the error must contain) for the shared fuzz test."""
    out: list[tuple[str, Path, str]] = []

    def variant(name: str, expect: str, edit) -> None:
        root = make_nih(tmp_path / f"nih-{name}")
        edit(root)
        out.append(("chestxray14", root, expect))

    variant("no-entry", "Data_Entry_2017_v2020.csv", lambda r: (r / "Data_Entry_2017_v2020.csv").unlink())
    variant(
        "bad-finding",
        "unknown finding 'Pleural Thickening'",
        lambda r: (r / "Data_Entry_2017_v2020.csv").write_text(
            entry_text([*ROWS[:-1], ("00000008_000.png", "Pleural Thickening", 0, 8, 39, "M", "PA", 2048, 2500)])
        ),
    )
    variant(
        "box-outside",
        "outside the 1024x1024 image",
        lambda r: (r / "BBox_List_2017.csv").write_text(
            bbox_text([*BOXES, ("00000008_000.png", "Nodule", 900.0, 100.0, 200.0, 50.0)])
        ),
    )
    variant(
        "bbox-header",
        "BBox_List_2017.csv: missing column(s) Finding Label",
        lambda r: (r / "BBox_List_2017.csv").write_text("Image Index,Label,x,y,w,h\n00000008_000.png,Mass,1,2,3,4\n"),
    )
    variant("no-test-list", "test_list.txt: file not found", lambda r: (r / "test_list.txt").unlink())
    variant(
        "missing-image",
        "00000007_000.png",
        lambda r: next(r.glob("images_*/images/00000007_000.png")).unlink(),
    )
    variant(
        "empty-entry", "Data_Entry_2017_v2020.csv: the file is empty", lambda r: _empty(r / "Data_Entry_2017_v2020.csv")
    )
    variant(
        "list-unknown-name",
        "test_list.txt, line 2: '99999999_000.png'",
        lambda r: (r / "test_list.txt").write_text("00000006_000.png\n99999999_000.png\n"),
    )
    variant(
        "no-finding-with-finding",
        "'No Finding' listed together",
        lambda r: (r / "Data_Entry_2017_v2020.csv").write_text(
            entry_text([*ROWS[:-1], ("00000008_000.png", "No Finding|Mass", 0, 8, 39, "M", "PA", 2048, 2500)])
        ),
    )
    return out


def _empty(path: Path) -> None:
    path.write_text("")


def test_malformed_variants_raise_clear_errors(tmp_path: Path) -> None:
    for dataset, root, expect in malformed_variants(tmp_path):
        assert dataset == "chestxray14"
        report = nih.check(root)
        assert not report.ok, root.name
        assert any(expect in p for p in report.problems), (root.name, report.problems)
        with pytest.raises(BenchError):
            for split in nih.SPLITS:
                nih.load(root, split)


def test_check_collects_problems_of_every_file(tmp_path: Path) -> None:
    root = make_nih(tmp_path / "nih")
    (root / "Data_Entry_2017_v2020.csv").unlink()
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\nx.png,Mass,1,2,-3,4\n")
    (root / "test_list.txt").write_text("")
    problems = nih.check(root).problems
    assert len(problems) == 3
    assert "Data_Entry_2017_v2020.csv" in problems[0]
    assert "BBox_List_2017.csv, line 2" in problems[1]
    assert "test_list.txt: the list is empty" in problems[2]


# --------------------------------------------------------------------------- CLI


def test_cli_check_ok_and_malformed(tmp_path: Path) -> None:
    root = make_nih(tmp_path / "nih")
    proc = run_bench("data", "check", "chestxray14", "--root", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["splits"]["test"] == 3
    assert report["splits"]["train"] + report["splits"]["val"] == len(TRAIN_VAL)
    (root / "BBox_List_2017.csv").write_text(bbox_text([("00000008_000.png", "Mass", 1, 2, 3000, 4)]))
    proc = run_bench("data", "check", "chestxray14", "--root", str(root), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "BBox_List_2017.csv, line 2" in json.loads(proc.stdout)["problems"][0]


# --------------------------------------------------------------------------- real label files


def real_file(member: str, dest: Path) -> Path:
    """Copy ``torchxrayvision/data/<member>`` from the cached wheel to ``dest`` (skip if unavailable)."""
    from tests.real_reports import _wheel

    try:
        wheel = _wheel()
    except RuntimeError as exc:
        pytest.skip(f"torchxrayvision wheel not available: {exc}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, zf.open(f"torchxrayvision/data/{member}") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out)
    return dest


def test_real_data_entry_and_boxes(tmp_path: Path) -> None:
    root = tmp_path / "real"
    real_file("Data_Entry_2017_v2020.csv.gz", root / "Data_Entry_2017_v2020.csv.gz")
    real_file("BBox_List_2017.csv.gz", root / "BBox_List_2017.csv.gz")
    entries, _ = nih.read_entries(root)
    assert len(entries) == 112120
    assert len({e.meta["patient_id"] for e in entries.values()}) == 30805
    counts = {c: sum(e.labels[c] for e in entries.values()) for c in (*nih.CLASSES, nih.NO_FINDING)}
    assert counts["No Finding"] == 60361
    assert counts["Infiltration"] == 19894 and counts["Pleural Thickening"] == 3385 and counts["Hernia"] == 227
    assert set().union(*(set(e.labels.values()) for e in entries.values())) == {0, 1}
    first = entries["00000001_001.png"]
    assert first.labels["Cardiomegaly"] == 1 and first.labels["Emphysema"] == 1
    assert first.meta["original_size"] == [2894, 2729] and first.meta["view"] == "PA"
    boxes = nih.read_boxes(root, entries)
    assert sum(len(b) for b in boxes.values()) == 984 and len(boxes) == 880
    labels = [b.label for bs in boxes.values() for b in bs]
    assert labels.count("Infiltration") == 123 and "Infiltrate" not in labels
    # every box's finding is a positive label of its image (after the Infiltrate fix)
    assert all(entries[n].labels[b.label] == 1 for n, bs in boxes.items() for b in bs)
    # a reader run on the real files: placeholder lists, images not looked up
    names = sorted(entries)
    (root / "train_val_list.txt").write_text("\n".join(names[:2000]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[2000:2500]) + "\n")
    test = nih.load(root, "test", check_images=False)
    assert len(test) == 500 and test[0].id == names[2000]
    assert sum(len(s.boxes) for s in test) == sum(len(boxes.get(n, [])) for n in names[2000:2500])
