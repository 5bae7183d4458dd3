"""RSNA Pneumonia and SIIM-ACR readers: DICOM fixtures, RLE masks, seeded splits, training subsets,
malformed copies and the real label files shipped in torchxrayvision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bench.data import rle, subsets
from bench.data import rsna_pneumonia as rsna
from bench.data import siim_acr as siim
from bench.data.common import seeded_split
from bench.interfaces import BenchError
from bench.runner import dataset_fingerprint
from tests.conftest import run_bench
from tests.test_data_nih import real_file

# --------------------------------------------------------------------------- DICOM fixtures


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
) -> Path:
    """A real (tiny) DICOM: explicit VR little endian, 16-bit unsigned pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = path.stem
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient(seed: int) -> np.ndarray:
    """16x16 pixels increasing left to right (so inversion is visible)."""
    return (np.tile(np.arange(16) * 200, (16, 1)) + seed).astype(np.uint16)


# --------------------------------------------------------------------------- RSNA fixture

RSNA_HEADER = "patientId,x,y,width,height,Target"
# real-looking ids; two boxes for the first positive patient
RSNA_ROWS = [
    ("0004cfab-14fd-4e49-80ba-63a80b6bddd6", "", "", "", "", 0),
    ("00313ee0-9eaa-42f4-b0ab-c148ed3241cd", "", "", "", "", 0),
    ("00436515-870c-4b36-a041-de91049b9ab4", 264.0, 152.0, 213.0, 379.0, 1),
    ("00436515-870c-4b36-a041-de91049b9ab4", 562.0, 152.0, 256.0, 453.0, 1),
    ("00569f44-917d-4c86-a842-81832af98c30", "", "", "", "", 0),
    ("00704310-78a8-4b38-8475-49f4573b2dbb", 323.0, 577.0, 160.0, 104.0, 1),
    ("00aecb01-a116-45a2-956c-08d2fa55433f", "", "", "", "", 0),
]
RSNA_CLASS = {
    "0004cfab-14fd-4e49-80ba-63a80b6bddd6": "No Lung Opacity / Not Normal",
    "00313ee0-9eaa-42f4-b0ab-c148ed3241cd": "No Lung Opacity / Not Normal",
    "00436515-870c-4b36-a041-de91049b9ab4": "Lung Opacity",
    "00569f44-917d-4c86-a842-81832af98c30": "Normal",
    "00704310-78a8-4b38-8475-49f4573b2dbb": "Lung Opacity",
    "00aecb01-a116-45a2-956c-08d2fa55433f": "Normal",
}
RSNA_PATIENTS = list(RSNA_CLASS)


def rsna_labels(rows: list[tuple] = RSNA_ROWS) -> str:
    return "\n".join([RSNA_HEADER, *(",".join(str(v) for v in r) for r in rows)]) + "\n"


def make_rsna(root: Path, rows: list[tuple] = RSNA_ROWS, *, images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stage_2_train_labels.csv").write_text(rsna_labels(rows))
    classes = ["patientId,class"] + [f"{r[0]},{RSNA_CLASS.get(r[0], 'Normal')}" for r in rows]
    (root / "stage_2_detailed_class_info.csv").write_text("\n".join(classes) + "\n")
    if images:
        for k, pid in enumerate(dict.fromkeys(r[0] for r in rows)):
            mono1 = k % 2 == 1
            write_dicom(
                root / "stage_2_train_images" / f"{pid}.dcm",
                gradient(k),
                photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                slope=2.0 if k == 0 else None,
                intercept=-100.0 if k == 0 else None,
                window=(1500.0, 3000.0) if k == 2 else None,
            )
    return root


def test_rsna_patients_labels_boxes_and_classes(tmp_path: Path) -> None:
    root = make_rsna(tmp_path / "rsna")
    by_id = {s.id: s for split in rsna.SPLITS for s in rsna.load(root, split)}
    assert sorted(by_id) == sorted(RSNA_PATIENTS)  # one sample per patient, none lost
    two = by_id["00436515-870c-4b36-a041-de91049b9ab4"]
    assert two.labels == {"Pneumonia": 1}
    assert [(b.label, b.x, b.y, b.w, b.h) for b in two.boxes] == [
        ("Pneumonia", 264.0, 152.0, 213.0, 379.0),
        ("Pneumonia", 562.0, 152.0, 256.0, 453.0),
    ]
    neg = by_id["00569f44-917d-4c86-a842-81832af98c30"]
    assert neg.labels == {"Pneumonia": 0} and neg.boxes == [] and neg.meta["class"] == "Normal"
    assert by_id["0004cfab-14fd-4e49-80ba-63a80b6bddd6"].meta["class"] == "No Lung Opacity / Not Normal"
    assert two.image.path.endswith("stage_2_train_images/00436515-870c-4b36-a041-de91049b9ab4.dcm")


def test_rsna_seeded_patient_splits(tmp_path: Path) -> None:
    root = make_rsna(tmp_path / "rsna")
    got = {split: [s.id for s in rsna.load(root, split)] for split in rsna.SPLITS}
    expected = seeded_split(RSNA_PATIENTS, {"train": 0.6, "val": 0.2, "test": 0.2}, 0)
    assert {s: sorted(ids) for s, ids in got.items()} == {
        s: sorted(p for p, x in expected.items() if x == s) for s in rsna.SPLITS
    }
    assert [len(got[s]) for s in rsna.SPLITS] == [4, 1, 1]
    gloria = {split: rsna.load(root, split, split_scheme="gloria") for split in rsna.SPLITS}
    assert [len(gloria[s]) for s in rsna.SPLITS] == [4, 1, 1]  # round(0.7*6)=4, round(0.15*6)=1, rest
    assert gloria["test"][0].meta["split_scheme"] == "gloria"
    assert gloria["test"][0].meta["split_fractions"] == {"train": 0.7, "val": 0.15, "test": 0.15}


def test_rsna_dicom_pixels_monochrome_rescale_window(tmp_path: Path) -> None:
    root = make_rsna(tmp_path / "rsna")
    by_id = {s.id: s for split in rsna.SPLITS for s in rsna.load(root, split)}
    order = list(dict.fromkeys(r[0] for r in RSNA_ROWS))
    mono2 = np.asarray(by_id[order[0]].image.load())  # MONOCHROME2 + rescale slope/intercept
    mono1 = np.asarray(by_id[order[1]].image.load())  # MONOCHROME1: inverted
    windowed = np.asarray(by_id[order[2]].image.load())  # window centre/width
    assert mono2.shape == (16, 16) and mono2.dtype == np.uint8
    assert mono2[0, 0] == 0 and mono2[0, -1] == 255  # dark left, bright right
    assert mono1[0, 0] == 255 and mono1[0, -1] == 0  # inverted
    assert windowed[0, 0] < windowed[0, 8] < windowed[0, -1]


# --------------------------------------------------------------------------- training subsets


def big_rsna(root: Path, n: int = 400, positive_every: int = 4) -> Path:
    rows = []
    for i in range(n):
        pid = f"{i:08d}-0000-0000-0000-000000000000"
        rows.append((pid, 10.0, 20.0, 30.0, 40.0, 1) if i % positive_every == 0 else (pid, "", "", "", "", 0))
    root.mkdir(parents=True, exist_ok=True)
    (root / "stage_2_train_labels.csv").write_text(rsna_labels(rows))
    return root


def test_training_subsets_are_seeded_nested_stratified_and_recorded(tmp_path: Path) -> None:
    root = big_rsna(tmp_path / "rsna")
    full = rsna.load(root, "train", check_images=False)
    assert len(full) == 240  # 0.6 * 400
    subs = {f: rsna.load(root, "train", check_images=False, train_fraction=f) for f in (0.01, 0.1, 1.0)}
    ids = {f: {s.id for s in ss} for f, ss in subs.items()}
    assert ids[0.01] < ids[0.1] < ids[1.0] == {s.id for s in full}  # nested
    pos = sum(s.labels["Pneumonia"] for s in full)
    for f, ss in subs.items():
        n_pos = sum(s.labels["Pneumonia"] for s in ss)
        assert n_pos == max(1, round(f * pos)) and len(ss) - n_pos == max(1, round(f * (len(full) - pos)))
        assert ss[0].meta["train_fraction"] == f and ss[0].meta["subset_of"] == 240
        assert ss[0].meta["subset_ids_hash"] == subsets.ids_hash(ids[f])
    assert [s.id for s in rsna.load(root, "train", check_images=False, train_fraction=0.1)] == [
        s.id for s in subs[0.1]
    ]  # reproducible
    other_seed = rsna.load(root, "train", check_images=False, train_fraction=0.1, train_fraction_seed=1)
    assert {s.id for s in other_seed} != ids[0.1]
    assert dataset_fingerprint("rsna_pneumonia", other_seed) != dataset_fingerprint("rsna_pneumonia", subs[0.1])
    plain = rsna.load(root, "train", check_images=False, train_fraction="10%", train_fraction_stratify=False)
    assert len(plain) == 24 and not plain[0].meta["train_fraction_stratified"]
    test = rsna.load(root, "test", check_images=False, train_fraction=0.01)
    assert len(test) == 80 and "train_fraction" not in test[0].meta  # only train is subset
    with pytest.raises(BenchError, match=r"train_fraction must be in \(0, 1\]"):
        rsna.load(root, "test", check_images=False, train_fraction=0)


# --------------------------------------------------------------------------- SIIM fixtures

SIIM_IDS = [
    "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819",
    "1.2.276.0.7230010.3.1.4.8323329.13666.1517875247.117800",
    "1.2.276.0.7230010.3.1.4.8323329.11028.1517875229.983789",
    "1.2.276.0.7230010.3.1.4.8323329.10366.1517875223.393986",
    "1.2.276.0.7230010.3.1.4.8323329.5597.1517875188.959090",
    "1.2.276.0.7230010.3.1.4.8323329.12515.1517875239.501137",
]


def siim_masks() -> dict[str, list[np.ndarray]]:
    """Image 1 has two separate regions (two rows); image 3 one region; the rest none."""
    a = np.zeros((1024, 1024), dtype=bool)
    a[100:180, 200:260] = True
    b = np.zeros((1024, 1024), dtype=bool)
    b[600:700, 700:720] = True
    c = np.zeros((1024, 1024), dtype=bool)
    c[50:60, 900:1000] = True
    return {SIIM_IDS[1]: [a, b], SIIM_IDS[3]: [c]}


def siim_csv(convention: str, *, stage1: bool) -> str:
    masks = siim_masks()
    lines = ["ImageId, EncodedPixels" if stage1 else "ImageId,EncodedPixels"]
    for image_id in SIIM_IDS:
        if image_id in masks:
            lines += [f"{image_id}, {rle.encode(m, convention)}" for m in masks[image_id]]
        else:
            lines.append(f"{image_id}, -1" if stage1 else f"{image_id},-1")
    return "\n".join(lines) + "\n"


def make_siim(root: Path, *, stage: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if stage == 1:
        (root / "train-rle.csv").write_text(siim_csv("relative", stage1=True))
        for k, image_id in enumerate(SIIM_IDS):
            study, series = f"1.2.276.0.7230010.3.1.2.{k}", f"1.2.276.0.7230010.3.1.3.{k}"
            write_dicom(root / "dicom-images-train" / study / series / f"{image_id}.dcm", gradient(k))
    else:
        (root / "stage_2_train.csv").write_text(siim_csv("absolute", stage1=False))
        for k, image_id in enumerate(SIIM_IDS):
            write_dicom(root / "stage_2_images" / f"{image_id}.dcm", gradient(k), photometric="MONOCHROME1")
    return root


@pytest.mark.parametrize("stage", [1, 2])
def test_siim_masks_labels_boxes(tmp_path: Path, stage: int) -> None:
    root = make_siim(tmp_path / "siim", stage=stage)
    samples = {s.id: s for split in siim.SPLITS for s in siim.load(root, split)}
    assert sorted(samples) == sorted(SIIM_IDS)  # one sample per image (image 1 has two rows)
    two = samples[SIIM_IDS[1]]
    assert two.labels == {"Pneumothorax": 1}
    assert len(two.meta["rle"]) == 2
    assert two.meta["rle_convention"] == ("relative" if stage == 1 else "absolute")
    # the box is the union of both regions: x 200..719, y 100..699
    assert [(b.label, b.x, b.y, b.w, b.h) for b in two.boxes] == [("Pneumothorax", 200.0, 100.0, 520.0, 600.0)]
    one = samples[SIIM_IDS[3]]
    assert [(b.x, b.y, b.w, b.h) for b in one.boxes] == [(900.0, 50.0, 100.0, 10.0)]
    union = rle.decode_union(two.meta["rle"], convention=two.meta["rle_convention"])
    expected = siim_masks()[SIIM_IDS[1]]
    np.testing.assert_array_equal(union, expected[0] | expected[1])
    neg = samples[SIIM_IDS[0]]
    assert neg.labels == {"Pneumothorax": 0} and neg.boxes == [] and neg.meta["rle"] == []
    assert neg.image.load().size == (16, 16)


def test_siim_seeded_image_split(tmp_path: Path) -> None:
    root = make_siim(tmp_path / "siim")
    got = {split: sorted(s.id for s in siim.load(root, split)) for split in siim.SPLITS}
    expected = seeded_split(SIIM_IDS, {"train": 0.6, "val": 0.2, "test": 0.2}, 0)
    assert got == {s: sorted(i for i, x in expected.items() if x == s) for s in siim.SPLITS}


def test_siim_rle_option_forces_a_convention(tmp_path: Path) -> None:
    root = make_siim(tmp_path / "siim", stage=2)
    with pytest.raises(BenchError, match="not a valid relative RLE"):
        siim.load(root, "train", rle="relative")


# --------------------------------------------------------------------------- malformed copies


def malformed_variants(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(dataset, root, substring the error must contain) for the shared fuzz test."""
    out: list[tuple[str, Path, str]] = []

    def rsna_variant(name: str, expect: str, edit) -> None:
        root = make_rsna(tmp_path / f"rsna-{name}")
        edit(root)
        out.append(("rsna_pneumonia", root, expect))

    def siim_variant(name: str, expect: str, edit) -> None:
        root = make_siim(tmp_path / f"siim-{name}")
        edit(root)
        out.append(("siim_acr", root, expect))

    labels = "stage_2_train_labels.csv"
    rsna_variant("no-labels", labels, lambda r: (r / labels).unlink())
    rsna_variant(
        "bad-header",
        "missing column(s) Target",
        lambda r: (r / labels).write_text("patientId,x,y,width,height,label\nabc,,,,,0\n"),
    )
    rsna_variant(
        "box-outside",
        "lies outside the 1024x1024 image",
        lambda r: (r / labels).write_text(rsna_labels([*RSNA_ROWS, ("zz", 900.0, 10.0, 200.0, 20.0, 1)])),
    )
    rsna_variant(
        "target-mismatch",
        "has Target 0 here and 1",
        lambda r: (r / labels).write_text(rsna_labels([*RSNA_ROWS, (RSNA_ROWS[2][0], "", "", "", "", 0)])),
    )
    rsna_variant(
        "negative-with-box",
        "must have blank x,y,width,height",
        lambda r: (r / labels).write_text(rsna_labels([*RSNA_ROWS, ("zz", 1.0, 2.0, 3.0, 4.0, 0)])),
    )
    rsna_variant(
        "missing-dicom",
        "00704310-78a8-4b38-8475-49f4573b2dbb.dcm",
        lambda r: (r / "stage_2_train_images" / "00704310-78a8-4b38-8475-49f4573b2dbb.dcm").unlink(),
    )
    rsna_variant(
        "corrupt-dicom",
        "cannot read DICOM",
        lambda r: [p.write_bytes(b"not a dicom") for p in (r / "stage_2_train_images").glob("*.dcm")],
    )
    rsna_variant(
        "class-mismatch",
        "stage_2_detailed_class_info.csv, line 4: patient 00436515-870c-4b36-a041-de91049b9ab4 has class 'Normal'",
        lambda r: (r / "stage_2_detailed_class_info.csv").write_text(
            "patientId,class\n"
            + "".join(f"{p},{RSNA_CLASS[p] if p != RSNA_ROWS[2][0] else 'Normal'}\n" for p in RSNA_PATIENTS)
        ),
    )
    rsna_variant("empty-labels", "stage_2_train_labels.csv: the file is empty", lambda r: (r / labels).write_text(""))

    rles = "train-rle.csv"
    siim_variant("no-csv", "train-rle.csv", lambda r: (r / rles).unlink())
    siim_variant(
        "odd-rle",
        "odd number of values",
        lambda r: (r / rles).write_text(f"ImageId, EncodedPixels\n{SIIM_IDS[0]}, 5 3 1\n"),
    )
    siim_variant(
        "overflow-rle",
        "beyond the 1048576 pixels",
        lambda r: (r / rles).write_text(f"ImageId, EncodedPixels\n{SIIM_IDS[0]}, 1048570 10\n"),
    )
    siim_variant(
        "conflict",
        "marked -1",
        lambda r: (r / rles).write_text(f"ImageId, EncodedPixels\n{SIIM_IDS[0]}, 10 5\n{SIIM_IDS[0]}, -1\n"),
    )
    siim_variant(
        "missing-dicom",
        "have no .dcm file",
        lambda r: next((r / "dicom-images-train").rglob(f"{SIIM_IDS[2]}.dcm")).unlink(),
    )
    siim_variant(
        "bad-header",
        "missing column(s) EncodedPixels",
        lambda r: (r / rles).write_text(f"ImageId,Mask\n{SIIM_IDS[0]},-1\n"),
    )
    siim_variant(
        "empty-cell",
        "empty EncodedPixels",
        lambda r: (r / rles).write_text(f"ImageId, EncodedPixels\n{SIIM_IDS[0]},\n"),
    )
    return out


def test_malformed_variants_raise_clear_errors(tmp_path: Path) -> None:
    readers = {"rsna_pneumonia": rsna, "siim_acr": siim}
    for dataset, root, expect in malformed_variants(tmp_path):
        report = readers[dataset].check(root)
        assert not report.ok, root.name
        assert any(expect in p for p in report.problems), (root.name, report.problems)


def test_rsna_check_collects_problems_of_every_file(tmp_path: Path) -> None:
    root = make_rsna(tmp_path / "rsna", images=False)
    (root / "stage_2_train_labels.csv").write_text("patientId,x,y\n")
    (root / "stage_2_detailed_class_info.csv").write_text("patientId,class\nabc,Sick\n")
    problems = rsna.check(root).problems
    assert len(problems) == 3
    assert "stage_2_train_labels.csv: missing column(s) width, height, Target" in problems[0]
    assert "stage_2_detailed_class_info.csv, line 2: class 'Sick'" in problems[1]
    assert "missing folder stage_2_train_images/" in problems[2]


# --------------------------------------------------------------------------- CLI


def test_cli_check(tmp_path: Path) -> None:
    root = make_rsna(tmp_path / "rsna")
    proc = run_bench("data", "check", "rsna_pneumonia", "--root", str(root), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == {
        "dataset": "rsna_pneumonia",
        "ok": True,
        "splits": {"train": 4, "val": 1, "test": 1},
        "problems": [],
    }
    root = make_siim(tmp_path / "siim")
    proc = run_bench("data", "check", "siim_acr", "--root", str(root), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["splits"] == {"train": 4, "val": 1, "test": 1}
    (root / "train-rle.csv").write_text(f"ImageId, EncodedPixels\n{SIIM_IDS[0]}, 5 3 1\n")
    proc = run_bench("data", "check", "siim_acr", "--root", str(root))
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "train-rle.csv: image" in proc.stdout and "odd number of values" in proc.stdout


# --------------------------------------------------------------------------- real label files


def test_real_rsna_labels(tmp_path: Path) -> None:
    root = tmp_path / "rsna"
    real_file("kaggle_stage_2_train_labels.csv.zip", root / "stage_2_train_labels.csv.zip")
    patients, _ = rsna.read_labels(root)
    assert len(patients) == 26684 and sum(p["rows"] for p in patients.values()) == 30227
    assert sum(p["target"] for p in patients.values()) == 6012
    assert sum(len(p["boxes"]) for p in patients.values()) == 9555
    box = patients["00436515-870c-4b36-a041-de91049b9ab4"]["boxes"][1]
    assert (box.x, box.y, box.w, box.h) == (562.0, 152.0, 256.0, 453.0)
    splits = {s: rsna.load(root, s, check_images=False) for s in rsna.SPLITS}
    assert [len(splits[s]) for s in rsna.SPLITS] == [16010, 5337, 5337]
    assert len({s.id for ss in splits.values() for s in ss}) == 26684
    one = rsna.load(root, "train", check_images=False, train_fraction=0.01)
    assert len(one) == 160 and {s.labels["Pneumonia"] for s in one} == {0, 1}


def test_real_siim_rle_file(tmp_path: Path) -> None:
    root = tmp_path / "siim"
    real_file("siim-pneumothorax-train-rle.csv.gz", root / "train-rle.csv.gz")
    parsed = siim.read_masks(root)
    images = parsed["images"]
    assert parsed["convention"] == "relative" and parsed["stage"] == "1"
    assert len(images) == 12047 and sum(max(1, len(m)) for m in images.values()) == 12954
    assert sum(bool(m) for m in images.values()) == 2669
    assert max(len(m) for m in images.values()) > 1  # some images have several masks
    for image_id in [i for i, m in images.items() if len(m) > 1][:5]:
        union = rle.decode_union(images[image_id])
        ys, xs = np.nonzero(union)
        x, y, w, h = parsed["boxes"][image_id]
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
    test = siim.load(root, "test", check_images=False)
    assert len(test) == 12047 - round(0.6 * 12047) - round(0.2 * 12047)
    assert all(s.boxes for s in test if s.labels["Pneumothorax"] == 1)
    train = siim.load(root, "train", check_images=False)
    one, ten = (siim.load(root, "train", check_images=False, train_fraction=f) for f in (0.01, 0.1))
    assert {s.id for s in one} < {s.id for s in ten} < {s.id for s in train}
    pos = sum(s.labels["Pneumothorax"] for s in train)
    assert sum(s.labels["Pneumothorax"] for s in one) == round(0.01 * pos)  # class balance kept
    assert len(one) == round(0.01 * pos) + round(0.01 * (len(train) - pos))


def test_pydicom_is_the_real_thing(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "x.dcm", gradient(0), photometric="MONOCHROME1", slope=2.0, intercept=-5.0)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and ds.PhotometricInterpretation == "MONOCHROME1"
