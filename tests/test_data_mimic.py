"""MIMIC-CXR-JPG (+ reports), MS-CXR and MIMIC-5x200 readers on small trees in the official layout.

The fixture trees are written the way the PhysioNet downloads unpack: gzip-compressed CSVs with
the real header strings, ``files/pXX/p<subject>/s<study>/<dicom>.jpg`` images (tiny JPGs) and
``files/pXX/p<subject>/s<study>.txt`` reports.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.data import five_by_200, mimic_cxr, ms_cxr
from bench.interfaces import BenchError, Box
from tests.conftest import run_bench

METADATA_HEADER = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,"
    "ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning"
)
LABEL_HEADER = "subject_id,study_id," + ",".join(mimic_cxr.LABELS)
SPLIT_HEADER = "dicom_id,study_id,subject_id,split"
MSCXR_HEADER = "dicom_id,category_name,label_text,path,x,y,w,h,image_width,image_height,split"

D1 = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"
D2 = "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962"
D3 = "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"
D4 = "4d0b1b8c-4f3a4c2e-a1b2c3d4-e5f60718-29304a5b"
D5 = "5e1c2c9d-5a4b5d3f-b2c3d4e5-f6071829-3a4b5c6d"
D6 = "6f2d3dae-6b5c6e40-c3d4e5f6-0718293a-4b5c6d7e"
D7 = "7a3e4ebf-7c6d7f51-d4e5f607-18293a4b-5c6d7e8f"
D8 = "8b4f5fc0-8d7e8062-e5f60718-293a4b5c-6d7e8f90"

REPORT_S1 = "".join(
    line + "\n"
    for line in (
        "                                 FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        " ",
        " INDICATION:  ___F with cough",
        " ",
        " FINDINGS: ",
        " ",
        " Bibasilar atelectasis.  Possible mild edema.",
        " ",
        " IMPRESSION: ",
        " ",
        " Atelectasis.",
    )
)
REPORT_S2 = "                                 FINAL REPORT\n HISTORY:  Fever.\n \n IMPRESSION:  Normal chest.\n"
REPORT_S3 = (
    "                                 FINAL REPORT\n FINDINGS:  The heart is enlarged.  Possible small right\n"
    " effusion.\n \n CONCLUSION:  Cardiomegaly.\n"
)
REPORT_S4 = "                                 FINAL REPORT\n IMPRESSION:  No acute process.\n"


def _jpg(size: tuple[int, int] = (16, 16), value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="JPEG")
    return buf.getvalue()


def _write_csv(path: Path, header: str, rows: list[str], *, gz: bool = True) -> None:
    text = header + "\n" + "".join(r + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def _label_row(subject: str, study: str, labels: dict[str, str]) -> str:
    return ",".join([subject, study, *(labels.get(name, "") for name in mimic_cxr.LABELS)])


def write_mimic(root: Path, studies: list[dict[str, Any]], *, image_size: tuple[int, int] = (16, 16)) -> Path:
    """A MIMIC-CXR-JPG tree. Each study: subject, study, split, dicoms [(dicom, view)], chexpert / negbio
    label dicts (None: no label row), report text (None: no report file)."""
    meta, chex, neg, split = [], [], [], []
    jpg = _jpg(image_size)
    for st in studies:
        subject, study = st["subject"], st["study"]
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        for dicom, view in st["dicoms"]:
            meta.append(
                f"{dicom},{subject},{study},CHEST (PA AND LAT),{view},{image_size[1]},{image_size[0]},21800506,"
                f"213014.531,CHEST (PA AND LAT),postero-anterior,Erect"
            )
            split.append(f"{dicom},{study},{subject},{st['split']}")
            (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
            (folder / f"s{study}" / f"{dicom}.jpg").write_bytes(jpg)
        if st.get("chexpert") is not None:
            chex.append(_label_row(subject, study, st["chexpert"]))
        if st.get("negbio", st.get("chexpert")) is not None:
            neg.append(_label_row(subject, study, st.get("negbio", st.get("chexpert"))))
        if st.get("report") is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"s{study}.txt").write_text(st["report"])
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_HEADER, meta)
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", LABEL_HEADER, chex)
    _write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", LABEL_HEADER, neg)
    _write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_HEADER, split)
    return root


STUDIES: list[dict[str, Any]] = [
    {
        "subject": "10000032",
        "study": "50414267",
        "split": "train",
        "dicoms": [(D1, "PA"), (D2, "LATERAL")],
        "chexpert": {"Atelectasis": "1.0", "Edema": "-1.0", "Pleural Effusion": "0.0"},
        "report": REPORT_S1,
    },
    {
        "subject": "10000032",
        "study": "53189527",
        "split": "validate",
        "dicoms": [(D3, "AP")],
        "chexpert": {"No Finding": "1.0"},
        "report": REPORT_S2,
    },
    {
        "subject": "11000011",
        "study": "55555555",
        "split": "test",
        "dicoms": [(D5, "AP"), (D4, "PA"), (D6, "LL")],
        "chexpert": {"Cardiomegaly": "1.0", "Pleural Effusion": "-1.0", "Support Devices": "0.0"},
        "negbio": {"Cardiomegaly": "0.0", "Pleural Effusion": "1.0"},
        "report": REPORT_S3,
    },
    {
        "subject": "12000022",
        "study": "56666666",
        "split": "test",
        "dicoms": [(D7, "PA"), (D8, "")],
        "chexpert": None,  # a study the labeler skipped
        "negbio": None,
        "report": REPORT_S4,
    },
]


@pytest.fixture
def mimic_root(tmp_path: Path) -> Path:
    return write_mimic(tmp_path / "mimic_cxr", STUDIES)


# --------------------------------------------------------------------------- mimic_cxr


def test_mimic_test_split_ids_labels_and_sections(mimic_root):
    samples = mimic_cxr.load(mimic_root, "test")
    assert [s.id for s in samples] == [D4, D5, D7]  # frontal only, sorted; LL and blank view dropped
    s4, s5, s7 = samples
    assert s4.labels["Cardiomegaly"] == 1
    assert s4.labels["Pleural Effusion"] == -1  # uncertain kept
    assert s4.labels["Support Devices"] == 0
    assert s4.labels["Edema"] is None  # blank = not mentioned
    assert set(s4.labels) == set(mimic_cxr.LABELS)
    assert s5.labels == s4.labels  # study labels on every image of the study
    assert s7.labels == {} and s7.meta["labelled"] is False
    assert s4.meta["view"] == "PA" and s5.meta["view"] == "AP"
    assert s4.meta["subject_id"] == "11000011" and s4.meta["study_id"] == "55555555"
    assert s4.sections == {
        "findings": "The heart is enlarged. Possible small right effusion.",
        "impression": "Cardiomegaly.",
    }
    assert s7.sections == {"impression": "No acute process."}
    expected = mimic_root / "files" / "p11" / "p11000011" / "s55555555" / f"{D4}.jpg"
    assert s4.image.path == str(expected) and s4.image.key == f"mimic_cxr/{D4}"
    assert s4.image.load().size == (16, 16)


def test_mimic_splits_views_and_labeler(mimic_root):
    train = mimic_cxr.load(mimic_root, "train")
    assert [s.id for s in train] == [D1]
    assert train[0].labels["Atelectasis"] == 1 and train[0].labels["Edema"] == -1
    assert train[0].sections["indication"] == "___F with cough"
    val = mimic_cxr.load(mimic_root, "val")  # "validate" in the split file
    assert [s.id for s in val] == [D3] and val[0].split == "val" and val[0].meta["official_split"] == "validate"
    assert val[0].sections == {"indication": "Fever.", "impression": "Normal chest."}
    every = mimic_cxr.load(mimic_root, "test", views="all")
    assert [s.id for s in every] == [D4, D5, D6, D7, D8]
    lateral = mimic_cxr.load(mimic_root, "train", views=["lateral"])
    assert [s.id for s in lateral] == [D2]
    neg = mimic_cxr.load(mimic_root, "test", labeler="negbio")
    assert neg[0].labels["Cardiomegaly"] == 0 and neg[0].labels["Pleural Effusion"] == 1
    assert neg[0].meta["labeler"] == "negbio"


def test_mimic_require_findings_keeps_llava_rad_test_set(mimic_root):
    kept = mimic_cxr.load(mimic_root, "test", require_findings=True)
    assert [s.id for s in kept] == [D4, D5]  # the study of D7 has an impression only


def test_mimic_reports_elsewhere_and_missing(tmp_path, mimic_root):
    # move the reports to a separate download folder
    other = tmp_path / "reports" / "files" / "p11" / "p11000011"
    other.mkdir(parents=True)
    (mimic_root / "files" / "p11" / "p11000011" / "s55555555.txt").rename(other / "s55555555.txt")
    for txt in (mimic_root / "files").rglob("*.txt"):
        txt.unlink()
    assert all(not s.sections for s in mimic_cxr.load(mimic_root, "test"))  # reports are optional
    with pytest.raises(BenchError, match="no MIMIC-CXR reports found"):
        mimic_cxr.load(mimic_root, "test", require_findings=True)
    got = mimic_cxr.load(mimic_root, "test", reports_root=tmp_path / "reports")
    assert got[0].sections["impression"] == "Cardiomegaly."
    with pytest.raises(BenchError, match=r"report file not found: .*s56666666\.txt"):
        mimic_cxr.load(mimic_root, "test", reports_root=tmp_path / "reports", require_reports=True)
    with pytest.raises(BenchError, match="no MIMIC-CXR report found"):
        mimic_cxr.load(mimic_root, "test", reports_root=tmp_path)


def test_mimic_columns_read_by_header_name_and_plain_csv(tmp_path):
    root = write_mimic(tmp_path / "m", STUDIES)
    # the split file with its columns in another order, uncompressed
    rows = [f"{st['split']},{st['subject']},{d},{st['study']}" for st in STUDIES for d, _ in st["dicoms"]]
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    _write_csv(root / "mimic-cxr-2.0.0-split.csv", "split,subject_id,dicom_id,study_id", rows, gz=False)
    assert [s.id for s in mimic_cxr.load(root, "test")] == [D4, D5, D7]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: (r / "mimic-cxr-2.0.0-split.csv.gz").unlink(), "missing mimic-cxr-2.0.0-split.csv.gz"),
        (
            lambda r: _write_csv(
                r / "mimic-cxr-2.0.0-chexpert.csv.gz",
                LABEL_HEADER,
                [_label_row("10000032", "50414267", {"Edema": "2.0"})],
            ),
            r"chexpert\.csv\.gz: row 2, column 'Edema': label '2\.0'",
        ),
        (
            lambda r: _write_csv(r / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_HEADER, [f"{D1},50414267,10000032,valid"]),
            r"split\.csv\.gz: unknown split value\(s\) 'valid'",
        ),
        (
            lambda r: _write_csv(r / "mimic-cxr-2.0.0-metadata.csv.gz", "dicom_id,subject_id,study_id", [f"{D1},1,2"]),
            r"metadata\.csv\.gz: missing column\(s\) ViewPosition",
        ),
        (
            lambda r: (r / "mimic-cxr-2.0.0-chexpert.csv.gz").write_bytes(gzip.compress(b"")),
            r"chexpert\.csv\.gz: the file is empty",
        ),
        (
            lambda r: _write_csv(r / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_HEADER, [f"{D1},50414267,10000032,train"]),
            r"image\(s\) of the metadata table have no split",
        ),
    ],
)
def test_mimic_malformed_tables(mimic_root, mutate, message):
    mutate(mimic_root)
    with pytest.raises(BenchError, match=message):
        mimic_cxr.load(mimic_root, "test")


def test_mimic_bad_options(mimic_root):
    with pytest.raises(BenchError, match="no split 'validate'"):
        mimic_cxr.load(mimic_root, "validate")
    with pytest.raises(BenchError, match="labeler must be one of chexpert, negbio"):
        mimic_cxr.load(mimic_root, "test", labeler="chexbert")
    with pytest.raises(BenchError, match="unknown option"):
        mimic_cxr.load(mimic_root, "test", view="PA")
    with pytest.raises(BenchError, match="no such folder"):
        mimic_cxr.load(mimic_root / "nope", "test")


def test_mimic_check_counts_and_collects_all_problems(mimic_root):
    report = mimic_cxr.check(mimic_root)
    assert report.ok, report.problems
    assert report.splits == {"train": 1, "val": 1, "test": 3}
    # two broken files at once: both named
    (mimic_root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    _write_csv(mimic_root / "mimic-cxr-2.0.0-chexpert.csv.gz", "subject_id,study", ["1,2"])
    problems = mimic_cxr.check(mimic_root).problems
    assert len(problems) == 2
    assert any("chexpert.csv.gz: missing column(s) study_id" in p for p in problems)
    assert any("missing mimic-cxr-2.0.0-split.csv.gz" in p for p in problems)


def test_mimic_check_finds_missing_and_corrupt_images(mimic_root):
    (mimic_root / "files" / "p11" / "p11000011" / "s55555555" / f"{D4}.jpg").unlink()
    (mimic_root / "files" / "p10" / "p10000032" / "s50414267" / f"{D1}.jpg").write_bytes(b"not a jpeg")
    report = mimic_cxr.check(mimic_root)
    assert report.splits == {"train": 1, "val": 1, "test": 3}
    assert len(report.problems) == 2
    assert any("image file not found: " in p and D4 in p for p in report.problems)
    assert any("cannot read image" in p and D1 in p for p in report.problems)


# --------------------------------------------------------------------------- ms_cxr

MSCXR_ROWS = [
    f"{D4},Atelectasis,Left basilar atelectasis,files/p11/p11000011/s55555555/{D4}.jpg,2,3,10,8,32,24,test",
    f"{D4},Atelectasis,Left basilar atelectasis,files/p11/p11000011/s55555555/{D4}.jpg,15,5,6,6,32,24,test",
    f"{D4},Cardiomegaly,Enlarged heart,files/p11/p11000011/s55555555/{D4}.jpg,8,6,16,12,32,24,train",
    f'{D7},Pleural Effusion,"Small right effusion, unchanged",files/p12/p12000022/s56666666/{D7}.jpg,'
    "0,12,12,12,32,24,val",
]


def write_mscxr(data_root: Path, rows: list[str] | None = None, *, header: str = MSCXR_HEADER) -> Path:
    write_mimic(data_root / "mimic_cxr", STUDIES, image_size=(32, 24))
    folder = data_root / "ms_cxr"
    _write_csv(folder / "MS_CXR_Local_Alignment_v1.1.0.csv", header, MSCXR_ROWS if rows is None else rows, gz=False)
    return folder


def test_mscxr_phrases_boxes_and_images(tmp_path):
    root = write_mscxr(tmp_path)
    samples = ms_cxr.load(root, "test")
    assert len(samples) == 3
    atel, cardio, eff = samples
    assert atel.meta["phrase"] == "Left basilar atelectasis" and atel.meta["category"] == "Atelectasis"
    assert atel.boxes == [Box("Atelectasis", 2.0, 3.0, 10.0, 8.0), Box("Atelectasis", 15.0, 5.0, 6.0, 6.0)]
    assert cardio.boxes == [Box("Cardiomegaly", 8.0, 6.0, 16.0, 12.0)] and cardio.labels == {"Cardiomegaly": 1}
    assert eff.meta["phrase"] == "Small right effusion, unchanged"  # quoted comma
    assert (eff.meta["image_width"], eff.meta["image_height"]) == (32, 24)
    assert atel.id != cardio.id and atel.id.startswith(D4)
    assert atel.image.path == str(tmp_path / "mimic_cxr" / "files" / "p11" / "p11000011" / "s55555555" / f"{D4}.jpg")
    assert atel.image.load().size == (32, 24)
    official = {s: [x.meta["phrase"] for x in ms_cxr.load(root, s, official_split=True)] for s in ("train", "val")}
    assert official == {"train": ["Enlarged heart"], "val": ["Small right effusion, unchanged"]}
    with pytest.raises(BenchError, match="no split 'train'"):
        ms_cxr.load(root, "train")


def test_mscxr_v1_0_without_split_and_mimic_root_option(tmp_path):
    rows = [r.rsplit(",", 1)[0] for r in MSCXR_ROWS]
    root = write_mscxr(tmp_path, rows, header=MSCXR_HEADER.rsplit(",", 1)[0])
    (root / "MS_CXR_Local_Alignment_v1.1.0.csv").rename(root / "MS_CXR_Local_Alignment_v1.0.0.csv")
    assert len(ms_cxr.load(root, "test")) == 3
    with pytest.raises(BenchError, match="no split column"):
        ms_cxr.load(root, "val", official_split=True)
    moved = tmp_path / "elsewhere"
    (tmp_path / "mimic_cxr").rename(moved)
    with pytest.raises(BenchError, match="MS-CXR images not found"):
        ms_cxr.load(root, "test")
    assert ms_cxr.load(root, "test", mimic_root=moved)[0].image.path.startswith(str(moved))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (f"{D4},Atelectasis,x,files/p11/p11000011/s55555555/{D4}.jpg,25,3,10,8,32,24,test", "lies outside the image"),
        (f"{D4},Atelectasis,x,files/p11/p11000011/s55555555/{D4}.jpg,-5,3,10,8,32,24,test", "lies outside the image"),
        (f"{D4},Atelectasis,x,files/p11/p11000011/s55555555/{D4}.jpg,2,3,0,8,32,24,test", "non-positive width"),
        (f"{D4},Nodule,x,files/p11/p11000011/s55555555/{D4}.jpg,2,3,4,8,32,24,test", "not one of the 8 MS-CXR"),
        (f"{D4},Atelectasis,x,files/p11/p11000011/s55555555/{D7}.jpg,2,3,4,8,32,24,test", "should be files/pXX"),
        (
            f"{D4},Atelectasis,x,files/p11/p11000011/s55555555/{D4}.jpg,2,three,4,8,32,24,test",
            "'three' is not a number",
        ),
    ],
)
def test_mscxr_malformed_rows(tmp_path, row, message):
    root = write_mscxr(tmp_path, [MSCXR_ROWS[0], row])
    with pytest.raises(BenchError, match=message) as info:
        ms_cxr.load(root, "test")
    assert "MS_CXR_Local_Alignment_v1.1.0.csv: row 3" in str(info.value)


def test_mscxr_check_compares_image_size(tmp_path):
    root = write_mscxr(tmp_path)
    report = ms_cxr.check(root)
    assert report.ok and report.splits == {"test": 3}, report.problems
    (tmp_path / "mimic_cxr" / "files" / "p12" / "p12000022" / "s56666666" / f"{D7}.jpg").write_bytes(_jpg((16, 16)))
    problems = ms_cxr.check(root).problems
    assert len(problems) == 1 and "is 16 x 16 pixels but the MS-CXR table says 32 x 24" in problems[0]


# --------------------------------------------------------------------------- mimic5x200

CLASSES = five_by_200.CLASSES


def _five_studies(n_per_class: int, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """n_per_class eligible one-finding studies per class, plus distractors that the rule rejects."""
    studies = []
    k = 0

    def add(labels: dict[str, str], split: str = "train", view: str = "PA") -> None:
        nonlocal k
        k += 1
        subject, study = f"{13000000 + k}", f"{57000000 + k}"
        studies.append(
            {
                "subject": subject,
                "study": study,
                "split": split,
                "dicoms": [(f"{k:08x}-0000aaaa-bbbbcccc-ddddeeee-ffff0000", view)],
                "negbio": labels,
                "chexpert": {},
                "report": f"FINAL REPORT\n FINDINGS:  Finding {k}.\n IMPRESSION:  Impression {k}.\n",
            }
        )

    splits = ("train", "validate", "test")
    for ci, cls in enumerate(CLASSES):
        for j in range(n_per_class):
            labels = {cls: "1.0"}
            if j % 3 == 1:  # uncertain elsewhere counts as negative in MedCLIP's rule
                labels[CLASSES[(ci + 1) % 5]] = "-1.0"
            if j % 3 == 2:
                labels["No Finding"] = "1.0"  # No Finding is not checked
                labels["Support Devices"] = "0.0"
            add(labels, split=splits[j % 3], view="LATERAL" if j % 4 == 3 else "PA")
    add({"Atelectasis": "1.0", "Edema": "1.0"})  # two classes
    add({"Cardiomegaly": "1.0", "Lung Opacity": "1.0"})  # another observation positive
    add({"Edema": "-1.0"})  # uncertain only: not positive
    add({"Pneumothorax": "1.0"})  # none of the five
    return studies + (extra or [])


def test_mimic5x200_rule_seed_and_one_hot(tmp_path):
    root = write_mimic(tmp_path / "m", _five_studies(6))
    a = five_by_200.load_mimic5x200(root, "test", per_class=4, seed=42)
    b = five_by_200.load_mimic5x200(root, "test", per_class=4, seed=42)
    c = five_by_200.load_mimic5x200(root, "test", per_class=4, seed=7)
    assert len(a) == 20 and [s.id for s in a] == [s.id for s in b]
    assert {s.id for s in a} != {s.id for s in c}
    for cls in CLASSES:
        members = [s for s in a if s.meta["class"] == cls]
        assert len(members) == 4
        assert all(s.labels == {c2: int(c2 == cls) for c2 in CLASSES} for s in members)
        assert all(s.meta["source_labels"][cls] == 1 for s in members)
    assert {s.meta["subset_ids_hash"] for s in a} == {a[0].meta["subset_ids_hash"]}
    assert a[0].meta["subset_ids_hash"] != c[0].meta["subset_ids_hash"]
    assert a[0].meta["seed"] == 42 and a[0].meta["per_class"] == 4 and a[0].split == "test"
    assert a[0].dataset == "mimic5x200"
    # MedCLIP text: findings followed by impression
    k = a[0].sections["findings"].split()[-1].rstrip(".")
    assert a[0].sections["report"] == f"Finding {k}. Impression {k}."
    # every eligible image is used when per_class equals the eligible count; distractors never are
    full = five_by_200.load_mimic5x200(root, "test", per_class=6)
    assert len(full) == 30
    assert all(s.meta["source_labels"].get("Edema") != 1 or s.meta["class"] == "Edema" for s in full)
    with pytest.raises(BenchError, match=r"only 6 image\(s\) are eligible for class 'Atelectasis', 7 are needed"):
        five_by_200.load_mimic5x200(root, "test", per_class=7)
    only_frontal_test = five_by_200.load_mimic5x200(root, "test", per_class=1, views=["PA"], source_splits=["test"])
    assert all(s.meta["official_split"] == "test" and s.meta["view"] == "PA" for s in only_frontal_test)
    with pytest.raises(BenchError, match="has one split, 'test'"):
        five_by_200.load_mimic5x200(root, "train")


def test_mimic5x200_default_needs_200_per_class(tmp_path):
    root = write_mimic(tmp_path / "m", _five_studies(2))
    with pytest.raises(BenchError, match=r"negbio\.csv\.gz .*only 2 image\(s\) are eligible .* 200 are needed"):
        five_by_200.load_mimic5x200(root)


# --------------------------------------------------------------------------- CLI


def _check_json(name: str, root: Path) -> tuple[int, dict[str, Any], str]:
    proc = run_bench("data", "check", name, "--root", str(root), "--json", timeout=120)
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        data = {}
    return proc.returncode, data, proc.stdout + proc.stderr


def test_cli_check_ok_and_malformed(tmp_path):
    root = write_mimic(tmp_path / "mimic_cxr", STUDIES)
    code, data, out = _check_json("mimic_cxr", root)
    assert code == 0, out
    assert data == {"dataset": "mimic_cxr", "ok": True, "splits": {"train": 1, "val": 1, "test": 3}, "problems": []}
    mscxr = write_mscxr(tmp_path / "data")
    code, data, out = _check_json("ms_cxr", mscxr)
    assert code == 0 and data["splits"] == {"test": 3}, out
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    code, data, out = _check_json("mimic_cxr", root)
    assert code == 2 and data["ok"] is False, out
    assert "Traceback" not in out and "mimic-cxr-2.0.0-split.csv" in data["problems"][0]


def _task(name: str) -> Any:
    from bench.interfaces import resolve
    from tasks.catalog import all_tasks

    spec = next(t for t in all_tasks() if t.name == name)
    return spec, (resolve(spec.factory)(spec) if spec.factory else None)


def test_cli_check_mimic5x200_full_size_and_tasks(tmp_path):
    root = write_mimic(tmp_path / "mimic_cxr", _five_studies(200))
    code, data, out = _check_json("mimic5x200", root)
    assert code == 0, out
    assert data["splits"] == {"test": 1000}
    for name in ("mimic5x200_zs", "mimic5x200_retrieval"):
        spec, task = _task(name)
        samples = five_by_200.load_mimic5x200(root, spec.split, **spec.dataset_options)
        assert len(task.prepare(samples)) == 1000, name


def test_mimic_tasks_accept_the_reader_output(mimic_root):
    spec, task = _task("mimic_retrieval")
    samples = mimic_cxr.load(mimic_root, spec.split, **spec.dataset_options)
    assert [s.id for s in task.prepare(samples)] == [D4, D5]
    spec, _ = _task("mimic_rrg")
    assert [s.id for s in mimic_cxr.load(mimic_root, spec.split, **spec.dataset_options)] == [D4, D5]
    spec, _ = _task("mscxr_grounding")
    assert spec.dataset == "ms_cxr" and spec.split == "test"


# --------------------------------------------------------------------------- fuzz variants


def malformed_variants(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(dataset, root, substring the error must contain) for the shared malformed-data fuzz test."""
    out: list[tuple[str, Path, str]] = []

    def mimic(name: str) -> Path:
        return write_mimic(tmp_path / name / "mimic_cxr", STUDIES)

    r = mimic("no_split")
    (r / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    out.append(("mimic_cxr", r, "mimic-cxr-2.0.0-split.csv"))

    r = mimic("bad_label")
    _write_csv(
        r / "mimic-cxr-2.0.0-chexpert.csv.gz", LABEL_HEADER, [_label_row("10000032", "50414267", {"Edema": "2"})]
    )
    out.append(("mimic_cxr", r, "mimic-cxr-2.0.0-chexpert.csv.gz"))

    r = mimic("no_view_column")
    _write_csv(r / "mimic-cxr-2.0.0-metadata.csv.gz", "dicom_id,subject_id,study_id", [f"{D1},10000032,50414267"])
    out.append(("mimic_cxr", r, "mimic-cxr-2.0.0-metadata.csv.gz"))

    r = mimic("bad_split_value")
    rows = [f"{d},{st['study']},{st['subject']},validation" for st in STUDIES for d, _ in st["dicoms"]]
    _write_csv(r / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_HEADER, rows)
    out.append(("mimic_cxr", r, "mimic-cxr-2.0.0-split.csv.gz"))

    r = mimic("empty_labels")
    (r / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    (r / "mimic-cxr-2.0.0-chexpert.csv").write_text("")
    out.append(("mimic_cxr", r, "mimic-cxr-2.0.0-chexpert.csv"))

    r = mimic("missing_image")
    (r / "files" / "p11" / "p11000011" / "s55555555" / f"{D5}.jpg").unlink()
    out.append(("mimic_cxr", r, f"{D5}.jpg"))

    r = mimic("corrupt_image")
    (r / "files" / "p12" / "p12000022" / "s56666666" / f"{D7}.jpg").write_bytes(b"\xff\xd8 truncated")
    out.append(("mimic_cxr", r, f"{D7}.jpg"))

    def mscxr(name: str, rows: list[str]) -> Path:
        return write_mscxr(tmp_path / name, rows)

    bad = f"{D4},Atelectasis,x,files/p11/p11000011/s55555555/{D4}.jpg,30,3,10,8,32,24,test"
    out.append(("ms_cxr", mscxr("box_outside", [*MSCXR_ROWS, bad]), "MS_CXR_Local_Alignment_v1.1.0.csv"))
    bad = f"{D4},Nodule,x,files/p11/p11000011/s55555555/{D4}.jpg,3,3,10,8,32,24,test"
    out.append(("ms_cxr", mscxr("bad_category", [*MSCXR_ROWS, bad]), "MS_CXR_Local_Alignment_v1.1.0.csv"))
    r = mscxr("no_csv", MSCXR_ROWS)
    (r / "MS_CXR_Local_Alignment_v1.1.0.csv").unlink()
    out.append(("ms_cxr", r, "MS_CXR_Local_Alignment"))
    r = mscxr("no_images", MSCXR_ROWS)
    (r.parent / "mimic_cxr").rename(r.parent / "mimic-cxr-jpg")
    out.append(("ms_cxr", r, "mimic_cxr"))
    r = mscxr("small_images", MSCXR_ROWS)
    (r.parent / "mimic_cxr" / "files" / "p11" / "p11000011" / "s55555555" / f"{D4}.jpg").write_bytes(_jpg((8, 8)))
    out.append(("ms_cxr", r, f"{D4}.jpg"))

    r = write_mimic(tmp_path / "few_eligible" / "mimic_cxr", _five_studies(3))
    out.append(("mimic5x200", r, "mimic-cxr-2.0.0-negbio.csv.gz"))
    r = write_mimic(tmp_path / "no_negbio" / "mimic_cxr", _five_studies(3))
    (r / "mimic-cxr-2.0.0-negbio.csv.gz").unlink()
    out.append(("mimic5x200", r, "mimic-cxr-2.0.0-negbio.csv"))
    return out


def test_malformed_variants_are_reported_by_check(tmp_path):
    from bench import api

    variants = malformed_variants(tmp_path)
    assert len(variants) >= 10
    for name, root, needle in variants:
        report = api.data_check(name, root)
        assert not report["ok"], (name, root)
        assert any(needle in p for p in report["problems"]), (name, needle, report["problems"])
