"""CheXpert and CheXpert-5x200 readers: a small tree in the official layout, and the real
``train.csv`` shipped in the torchxrayvision wheel (223,414 rows) for parsing and the 5x200 rule."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.data import chexpert, five_by_200
from bench.interfaces import BenchError
from tests.conftest import run_bench

HEADER = ",".join((*chexpert.INFO_COLUMNS, *chexpert.LABELS))
GT_HEADER = "Study," + ",".join(chexpert.LABELS)
# the benchmark radiologists' files list Lung Lesion before Lung Opacity
RADIOLOGIST_ORDER = [c for c in chexpert.LABELS]
RADIOLOGIST_ORDER[3], RADIOLOGIST_ORDER[4] = RADIOLOGIST_ORDER[4], RADIOLOGIST_ORDER[3]

TRAIN_ROWS = [  # the first rows of the real train.csv
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,"
    "-1.0,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,",
    "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,AP,,,,,,1.0,,,,0.0,,,,",
]
VALID_ROWS = [
    "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,1.0,1.0,0.0,0.0,0.0,0.0,0.0,"
    "0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg,Male,70,Lateral,,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,"
    "0.0,0.0,0.0,0.0,0.0,1.0",
]
GT_ROWS = [
    "CheXpert-v1.0/test/patient64741/study1,0,1,1,1,0,0,0,0,0,0,0,0,0,1",
    "CheXpert-v1.0/test/patient64742/study1,0,1,0,1,0,0,0,0,1,0,0,0,0,0",
]
TEST_IMAGES = ("patient64741/study1/view1_frontal.jpg", "patient64741/study1/view2_lateral.jpg")
TEST_IMAGES2 = ("patient64742/study1/view1_frontal.jpg",)
PLUS_HEADER = (
    "path_to_image,path_to_dcm,frontal_lateral,ap_pa,deid_patient_id,patient_report_date_order,report,"
    "section_narrative,section_clinical_history,section_history,section_comparison,section_technique,"
    "section_procedure_comments,section_findings,section_impression,section_end_of_impression,section_summary,"
    "section_accession_number,age,sex,race,ethnicity,interpreter_needed,insurance_type,recent_bmi,deceased,split"
)
PLUS_ROWS = [
    'valid/patient64541/study1/view1_frontal.jpg,valid/patient64541/study1/view1_frontal.dcm,Frontal,AP,p1,1,"full",'
    ',"Chest pain.",,"None.",,,"The heart is\nenlarged.","Cardiomegaly.",,,,73,Male,,,,,,,valid',
    "valid/patient64542/study1/view2_lateral.jpg,x.dcm,Lateral,,p2,1,full,,,,,,,,No acute disease.,,,,70,Male,"
    ",,,,,,valid",
]


def _jpg(size: tuple[int, int] = (16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 100).save(buf, format="JPEG")
    return buf.getvalue()


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))


def write_chexpert(
    root: Path,
    *,
    train: list[str] | None = None,
    valid: list[str] | None = None,
    gt_header: str = GT_HEADER,
    gt_rows: list[str] | None = None,
    plus: bool = False,
) -> Path:
    folder = root / "CheXpert-v1.0-small"
    jpg = _jpg()
    train = TRAIN_ROWS if train is None else train
    valid = VALID_ROWS if valid is None else valid
    _write(folder / "train.csv", HEADER, train)
    _write(folder / "valid.csv", HEADER, valid)
    for row in [*train, *valid]:
        rel = row.split(",", 1)[0].split("/", 1)[1]
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(jpg)
    _write(root / "groundtruth.csv", gt_header, GT_ROWS if gt_rows is None else gt_rows)
    for rel in (*TEST_IMAGES, *TEST_IMAGES2):
        path = root / "CheXpert-v1.0" / "test" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpg)
    if plus:
        _write(root / "df_chexpert_plus_240401.csv", PLUS_HEADER, PLUS_ROWS)
    return root


@pytest.fixture
def cx_root(tmp_path: Path) -> Path:
    return write_chexpert(tmp_path / "chexpert")


# --------------------------------------------------------------------------- chexpert


def test_train_labels_views_and_paths(cx_root):
    samples = chexpert.load(cx_root, "train")
    assert [s.id for s in samples] == [
        "train/patient00001/study1/view1_frontal",
        "train/patient00002/study2/view1_frontal",
        "train/patient00002/study1/view1_frontal",
        "train/patient00002/study1/view2_lateral",
        "train/patient00003/study1/view1_frontal",
    ]
    s1, s2 = samples[0], samples[1]
    assert s1.labels["No Finding"] == 1 and s1.labels["Pneumothorax"] == 0 and s1.labels["Support Devices"] == 1
    assert s1.labels["Cardiomegaly"] is None  # blank = not mentioned
    assert s2.labels["Cardiomegaly"] == -1 and s2.labels["Lung Opacity"] == 1 and s2.labels["Fracture"] == 1
    assert s2.labels["Support Devices"] is None and s2.labels["Pleural Effusion"] == -1
    assert set(s1.labels) == set(chexpert.LABELS)
    assert s1.meta["view"] == "Frontal" and s1.meta["ap_pa"] == "AP" and s1.meta["age"] == 68
    assert s1.meta["patient_id"] == "patient00001" and s1.meta["sex"] == "Female"
    assert samples[3].meta["view"] == "Lateral" and samples[3].meta["ap_pa"] == ""
    expected = cx_root / "CheXpert-v1.0-small" / "train" / "patient00001" / "study1" / "view1_frontal.jpg"
    assert s1.image.path == str(expected) and s1.image.load().size == (16, 16)
    frontal = chexpert.load(cx_root, "train", frontal_only=True)
    assert len(frontal) == 4 and all(s.meta["view"] == "Frontal" for s in frontal)


def test_root_may_be_the_folder_itself_or_renamed(tmp_path, cx_root):
    inner = chexpert.load(cx_root / "CheXpert-v1.0-small", "train")
    assert inner[0].image.path == chexpert.load(cx_root, "train")[0].image.path
    renamed = tmp_path / "my_copy"
    (cx_root / "CheXpert-v1.0-small").rename(renamed)
    got = chexpert.load(renamed, "val")
    assert got[0].image.path == str(renamed / "valid" / "patient64541" / "study1" / "view1_frontal.jpg")
    assert got[0].split == "val" and got[0].labels["Enlarged Cardiomediastinum"] == 1


def test_official_test_set_per_image_with_study_labels(cx_root):
    samples = chexpert.load(cx_root, "test")
    assert [s.id for s in samples] == [
        "test/patient64741/study1/view1_frontal",
        "test/patient64741/study1/view2_lateral",
        "test/patient64742/study1/view1_frontal",
    ]
    s = samples[0]
    assert s.labels["Enlarged Cardiomediastinum"] == 1 and s.labels["Lung Opacity"] == 1
    assert s.labels["Lung Lesion"] == 0 and s.labels["Support Devices"] == 1 and s.labels["No Finding"] == 0
    assert samples[1].labels == s.labels and samples[1].meta["view"] == "Lateral"
    assert samples[2].labels["Atelectasis"] == 1 and samples[2].labels["Cardiomegaly"] == 0
    assert s.image.path == str(cx_root / "CheXpert-v1.0" / "test" / "patient64741" / "study1" / "view1_frontal.jpg")
    assert [x.id for x in chexpert.load(cx_root, "test", frontal_only=True)] == [samples[0].id, samples[2].id]


def test_test_labels_read_by_header_name(tmp_path):
    """A file in the radiologists' column order (Lung Lesion before Lung Opacity) still maps by name."""
    values = {"Lung Opacity": "1", "Lung Lesion": "0", "Cardiomegaly": "1"}
    row = "CheXpert-v1.0/test/patient64741/study1," + ",".join(values.get(c, "0") for c in RADIOLOGIST_ORDER)
    root = write_chexpert(tmp_path / "c", gt_header="Study," + ",".join(RADIOLOGIST_ORDER), gt_rows=[row, GT_ROWS[1]])
    s = chexpert.load(root, "test")[0]
    assert s.labels["Lung Opacity"] == 1 and s.labels["Lung Lesion"] == 0 and s.labels["Cardiomegaly"] == 1


def test_chexpert_plus_reports(tmp_path):
    root = write_chexpert(tmp_path / "c", plus=True)
    val = chexpert.load(root, "val")
    assert val[0].sections == {
        "indication": "Chest pain.",
        "comparison": "None.",
        "findings": "The heart is enlarged.",
        "impression": "Cardiomegaly.",
    }
    assert val[1].sections == {"impression": "No acute disease."}
    rrg = chexpert.load(root, "val", frontal_only=True, require_findings=True)
    assert [s.id for s in rrg] == ["valid/patient64541/study1/view1_frontal"]
    assert all(not s.meta["has_report"] for s in chexpert.load(root, "train"))
    with pytest.raises(BenchError, match="no CheXpert Plus reports"):
        chexpert.load(write_chexpert(tmp_path / "d"), "val", require_findings=True)


@pytest.mark.parametrize(
    ("kwargs", "split", "message"),
    [
        ({"train": [TRAIN_ROWS[0].replace(",1.0", ",2.0", 1)]}, "train", r"train\.csv: row 2, column 'No Finding'"),
        ({"train": [TRAIN_ROWS[0].replace("Frontal", "PA", 1)]}, "train", "Frontal/Lateral 'PA' is not Frontal"),
        ({"train": [TRAIN_ROWS[0], TRAIN_ROWS[0]]}, "train", "appears twice"),
        ({"valid": []}, "val", r"valid\.csv: the table has a header but no rows"),
        (
            {"gt_header": GT_HEADER.replace(",Lung Lesion", "")},
            "test",
            r"groundtruth\.csv: missing column\(s\) Lung Lesion",
        ),
        ({"gt_rows": ["CheXpert-v1.0/test/patient99999/study1" + ",0" * 14]}, "test", "no image in the study folder"),
    ],
)
def test_malformed_files(tmp_path, kwargs, split, message):
    root = write_chexpert(tmp_path / "c", **kwargs)
    with pytest.raises(BenchError, match=message):
        chexpert.load(root, split)


def test_missing_files_and_bad_arguments(tmp_path, cx_root):
    (cx_root / "CheXpert-v1.0-small" / "train.csv").unlink()
    with pytest.raises(BenchError, match=r"missing train\.csv"):
        chexpert.load(cx_root, "train")
    (cx_root / "groundtruth.csv").unlink()
    with pytest.raises(BenchError, match=r"groundtruth\.csv"):
        chexpert.load(cx_root, "test")
    with pytest.raises(BenchError, match="no split 'valid'"):
        chexpert.load(cx_root, "valid")
    with pytest.raises(BenchError, match="unknown option"):
        chexpert.load(cx_root, "val", frontal=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.csv").write_text("")
    with pytest.raises(BenchError, match=r"train\.csv: the file is empty"):
        chexpert.load(tmp_path / "empty", "train")


def test_check_counts_and_problems(cx_root):
    report = chexpert.check(cx_root)
    assert report.ok, report.problems
    assert report.splits == {"train": 5, "val": 2, "test": 3}
    (cx_root / "CheXpert-v1.0-small" / "train" / "patient00003" / "study1" / "view1_frontal.jpg").unlink()
    (cx_root / "groundtruth.csv").write_text("Study,No Finding\n")
    report = chexpert.check(cx_root)
    assert report.splits == {"train": 5, "val": 2}
    assert len(report.problems) == 2
    assert any("image file not found" in p and "patient00003" in p for p in report.problems)
    assert any("groundtruth.csv: missing column(s) Enlarged Cardiomediastinum" in p for p in report.problems)


# --------------------------------------------------------------------------- chexpert5x200

OTHERS = [c for c in chexpert.LABELS if c not in five_by_200.CLASSES and c != "No Finding"]


def _five_rows(n_per_class: int) -> list[str]:
    rows, k = [], 0
    for cls in five_by_200.CLASSES:
        for j in range(n_per_class):
            k += 1
            labels = {cls: "1.0"}
            if j % 2:
                labels["No Finding"] = "1.0"  # not checked by the rule
                labels[OTHERS[j % len(OTHERS)]] = "0.0"
            cells = [labels.get(c, "") for c in chexpert.LABELS]
            rows.append(
                f"CheXpert-v1.0-small/train/patient{k:05d}/study1/view1_frontal.jpg,Male,50,Frontal,AP,"
                + ",".join(cells)
            )
    # rejected: lateral, uncertain elsewhere, uncertain class, two classes, other finding
    bad = [
        ("Lateral", {"Edema": "1.0"}),
        ("Frontal", {"Edema": "1.0", "Atelectasis": "-1.0"}),
        ("Frontal", {"Edema": "-1.0"}),
        ("Frontal", {"Edema": "1.0", "Cardiomegaly": "1.0"}),
        ("Frontal", {"Edema": "1.0", "Lung Opacity": "1.0"}),
    ]
    for view, labels in bad:
        k += 1
        cells = [labels.get(c, "") for c in chexpert.LABELS]
        name = "view2_lateral" if view == "Lateral" else "view1_frontal"
        rows.append(
            f"CheXpert-v1.0-small/train/patient{k:05d}/study1/{name}.jpg,Female,60,{view},AP," + ",".join(cells)
        )
    return rows


def test_chexpert5x200_rule_and_seed(tmp_path):
    root = write_chexpert(tmp_path / "c", train=_five_rows(5))
    a = five_by_200.load_chexpert5x200(root, per_class=3)
    b = five_by_200.load_chexpert5x200(root, per_class=3, seed=42)
    c = five_by_200.load_chexpert5x200(root, per_class=3, seed=3)
    assert len(a) == 15 and [s.id for s in a] == [s.id for s in b] and {s.id for s in a} != {s.id for s in c}
    for cls in five_by_200.CLASSES:
        members = [s for s in a if s.meta["class"] == cls]
        assert len(members) == 3 and all(s.labels == {x: int(x == cls) for x in five_by_200.CLASSES} for s in members)
    assert a[0].dataset == "chexpert5x200" and a[0].split == "test" and a[0].meta["seed"] == 42
    full = five_by_200.load_chexpert5x200(root, per_class=5)
    assert {int(s.id.split("/")[1][7:]) for s in full} == set(range(1, 26))  # none of the rejected rows
    with pytest.raises(BenchError, match=r"train\.csv .*only 5 image\(s\) are eligible for class 'Atelectasis'"):
        five_by_200.load_chexpert5x200(root, per_class=6)
    with pytest.raises(BenchError, match=r"200 are needed"):
        five_by_200.load_chexpert5x200(root)


def test_choose_does_not_depend_on_input_order():
    ids = {c: [f"{c}-{i}" for i in range(50)] for c in five_by_200.CLASSES}
    shuffled = {c: list(reversed(v)) for c, v in ids.items()}
    a = five_by_200.choose(ids, per_class=10, seed=1, what="x")
    assert a == five_by_200.choose(shuffled, per_class=10, seed=1, what="x")
    assert a != five_by_200.choose(ids, per_class=10, seed=2, what="x")


# --------------------------------------------------------------------------- the real train.csv


def _real_train_csv(tmp_path: Path) -> Path:
    from tests.real_reports import _wheel

    try:
        wheel = _wheel()
        with zipfile.ZipFile(wheel) as whl:
            blob = whl.read("torchxrayvision/data/chexpert_train.csv.gz")
    except (RuntimeError, OSError, KeyError, zipfile.BadZipFile) as exc:
        pytest.skip(f"real CheXpert train.csv unavailable (torchxrayvision wheel from PyPI): {exc}")
    folder = tmp_path / "real" / "CheXpert-v1.0-small"
    folder.mkdir(parents=True)
    (folder / "train.csv").write_bytes(gzip.decompress(blob))
    return folder.parent


def test_real_train_csv_parsing_and_5x200(tmp_path):
    root = _real_train_csv(tmp_path)
    with open(root / "CheXpert-v1.0-small" / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    samples = chexpert.load(root, "train")
    assert len(samples) == len(rows) == 223414
    assert sum(s.meta["view"] == "Frontal" for s in samples) == 191027
    # label encodings agree cell by cell with an independent read (csv module)
    code = {"1.0": 1, "0.0": 0, "-1.0": -1, "": None}
    for name in ("Atelectasis", "Pleural Effusion", "No Finding"):
        assert [s.labels[name] for s in samples] == [code[r[name]] for r in rows]
    atel = [s.labels["Atelectasis"] for s in samples]
    assert (atel.count(1), atel.count(0), atel.count(-1), atel.count(None)) == (33376, 1328, 33739, 154971)
    assert samples[0].id == "train/patient00001/study1/view1_frontal"

    # GLoRIA's rule, counted independently
    checked = [c for c in chexpert.LABELS if c != "No Finding"]
    expected = {}
    for cls in five_by_200.CLASSES:
        expected[cls] = sum(
            r["Frontal/Lateral"] == "Frontal"
            and r[cls] == "1.0"
            and all(r[c] in ("", "0.0") for c in checked if c != cls)
            for r in rows
        )
    assert expected == {
        "Atelectasis": 1087,
        "Cardiomegaly": 1034,
        "Consolidation": 537,
        "Edema": 2257,
        "Pleural Effusion": 2425,
    }
    _, frame = chexpert.read_split_table(root, "train")
    frontal = frame[frame["Frontal/Lateral"] == "Frontal"]
    masks = five_by_200.eligible_masks(frontal, chexpert.LABELS, uncertain="keep")
    assert {c: int(m.sum()) for c, m in masks.items()} == expected

    subset = five_by_200.load_chexpert5x200(root)
    assert len(subset) == 1000
    by_id = {r["Path"]: r for r in rows}
    for s in subset:
        r = by_id[s.meta["path"]]
        cls = s.meta["class"]
        assert r["Frontal/Lateral"] == "Frontal" and r[cls] == "1.0"
        assert all(r[c] in ("", "0.0") for c in checked if c != cls)
    assert [sum(s.meta["class"] == c for s in subset) for c in five_by_200.CLASSES] == [200] * 5
    keys = np.array([chexpert.relative_key(p) for p in frontal["Path"]], dtype=object)
    ids = {c: keys[m].tolist() for c, m in masks.items()}
    same = five_by_200.choose(ids, per_class=200, seed=42, what="x")
    assert sorted(i for v in same.values() for i in v) == sorted(s.id for s in subset)
    other = five_by_200.choose(ids, per_class=200, seed=43, what="x")
    assert all(len(v) == 200 for v in other.values()) and other != same


def test_chexpert_tasks_accept_the_reader_output(tmp_path):
    from bench.interfaces import resolve
    from tasks.catalog import all_tasks

    specs = {t.name: t for t in all_tasks()}
    root = write_chexpert(tmp_path / "c", train=_five_rows(200), plus=True)
    spec = specs["chexpert_zs"]
    samples = chexpert.load(root, spec.split, **spec.dataset_options)
    assert len(resolve(spec.factory)(spec).prepare(samples)) == 2
    spec = specs["chexpert5x200_zs"]
    samples = five_by_200.load_chexpert5x200(root, spec.split, **spec.dataset_options)
    assert len(resolve(spec.factory)(spec).prepare(samples)) == 1000
    spec = specs["chexpert_rrg"]
    assert len(chexpert.load(root, spec.split, **spec.dataset_options)) == 1


# --------------------------------------------------------------------------- CLI


def _check_json(name: str, root: Path) -> tuple[int, dict[str, Any], str]:
    proc = run_bench("data", "check", name, "--root", str(root), "--json", timeout=120)
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        data = {}
    return proc.returncode, data, proc.stdout + proc.stderr


def test_cli_check(tmp_path):
    root = write_chexpert(tmp_path / "chexpert")
    code, data, out = _check_json("chexpert", root)
    assert code == 0, out
    assert data == {"dataset": "chexpert", "ok": True, "splits": {"train": 5, "val": 2, "test": 3}, "problems": []}
    full = write_chexpert(tmp_path / "full", train=_five_rows(200))
    code, data, out = _check_json("chexpert5x200", full)
    assert code == 0 and data["splits"] == {"test": 1000}, out
    (root / "CheXpert-v1.0-small" / "valid.csv").write_text(HEADER.replace("AP/PA", "View") + "\n" + VALID_ROWS[0])
    code, data, out = _check_json("chexpert", root)
    assert code == 2 and "Traceback" not in out, out
    assert data["splits"] == {"train": 5, "test": 3}
    assert data["problems"] == [p for p in data["problems"] if "valid.csv: missing column(s) AP/PA" in p]


# --------------------------------------------------------------------------- fuzz variants


def malformed_variants(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(dataset, root, substring the error must contain) for the shared malformed-data fuzz test."""
    out: list[tuple[str, Path, str]] = []
    r = write_chexpert(tmp_path / "missing_column")
    _write(r / "CheXpert-v1.0-small" / "train.csv", HEADER.replace(",Sex", ""), [])
    out.append(("chexpert", r, "train.csv"))
    r = write_chexpert(tmp_path / "bad_label", valid=[VALID_ROWS[0].replace("1.0,1.0", "1.0,yes")])
    out.append(("chexpert", r, "valid.csv"))
    r = write_chexpert(tmp_path / "gt_missing_column", gt_header=GT_HEADER.replace(",Lung Lesion", ""))
    out.append(("chexpert", r, "groundtruth.csv"))
    r = write_chexpert(tmp_path / "study_without_images")
    for p in (r / "CheXpert-v1.0" / "test" / "patient64742" / "study1").glob("*.jpg"):
        p.unlink()
    out.append(("chexpert", r, "groundtruth.csv"))
    r = write_chexpert(tmp_path / "no_train_image")
    (r / "CheXpert-v1.0-small" / "train" / "patient00002" / "study2" / "view1_frontal.jpg").unlink()
    out.append(("chexpert", r, "patient00002"))
    r = write_chexpert(tmp_path / "corrupt_image")
    (r / "CheXpert-v1.0-small" / "valid" / "patient64541" / "study1" / "view1_frontal.jpg").write_bytes(b"junk")
    out.append(("chexpert", r, "patient64541"))
    r = write_chexpert(tmp_path / "bad_view", train=[TRAIN_ROWS[0].replace(",Frontal,", ",frontal,")])
    out.append(("chexpert", r, "train.csv"))
    r = write_chexpert(tmp_path / "empty_train")
    (r / "CheXpert-v1.0-small" / "train.csv").write_text("")
    out.append(("chexpert", r, "train.csv"))
    r = write_chexpert(tmp_path / "no_groundtruth")
    (r / "groundtruth.csv").unlink()
    out.append(("chexpert", r, "groundtruth.csv"))
    r = write_chexpert(tmp_path / "few_eligible", train=_five_rows(3))
    out.append(("chexpert5x200", r, "train.csv"))
    r = write_chexpert(tmp_path / "no_train_5x200")
    (r / "CheXpert-v1.0-small" / "train.csv").unlink()
    out.append(("chexpert5x200", r, "train.csv"))
    return out


def test_malformed_variants_are_reported_by_check(tmp_path):
    from bench import api

    variants = malformed_variants(tmp_path)
    assert len(variants) >= 10
    for name, root, needle in variants:
        report = api.data_check(name, root)
        assert not report["ok"], (name, root)
        assert any(needle in p for p in report["problems"]), (name, needle, report["problems"])
