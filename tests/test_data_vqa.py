"""The VQA readers (VQA-RAD, SLAKE, PathVQA, PMC-VQA) on fixture trees in their official formats,
their Hugging Face Parquet exports, and malformed copies."""

from __future__ import annotations

import functools
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest

from bench.data import pathvqa, pmc_vqa, slake, vqa_rad
from bench.data.hf_parquet import load_parquet_image, parquet_files
from bench.interfaces import BenchError, ImageRef
from tests.conftest import run_bench

# --------------------------------------------------------------------------- fixture writers


def write_image(path: Path, value: int = 128, mode: str = "L", fmt: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else tuple([value] * len(mode))
    Image.new(mode, (16, 16), color).save(path, format=fmt)
    return path


def image_bytes(value: int, fmt: str = "PNG", mode: str = "L") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    color = value if mode == "L" else tuple([value] * len(mode))
    Image.new(mode, (16, 16), color).save(buf, format=fmt)
    return buf.getvalue()


def vqa_rad_item(qid: object, phrase_type: str, image: str, question: str, answer: object, answer_type: str) -> dict:
    return {
        "qid": qid,
        "phrase_type": phrase_type,
        "qid_linked_id": f"link{qid}",
        "image_case_url": "https://medpix.nlm.nih.gov/case?id=x",
        "image_name": image,
        "image_organ": "CHEST",
        "evaluation": "not evaluated",
        "question": question,
        "question_rephrase": "NULL",
        "question_relation": "NULL",
        "question_frame": "NULL",
        "question_type": "PRES",
        "answer": answer,
        "answer_type": answer_type,
    }


VQA_RAD_ITEMS = [
    vqa_rad_item(0, "freeform", "synpic100.jpg", "Is there a pneumothorax?", "No", "CLOSED"),
    vqa_rad_item(1, "para", "synpic100.jpg", "How many ribs are fractured?", 2, "OPEN"),
    vqa_rad_item(2, "frame", "synpic200.jpg", "Where is the mass?", "left upper lobe", "OPEN"),
    vqa_rad_item(3, "test_freeform", "synpic200.jpg", "Is the heart enlarged?", "yes", "CLOSED"),
    vqa_rad_item(4, "test_para", "synpic300.jpg", "What organ is shown?", "Lung", " OPEN"),
]


def make_vqa_rad(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(VQA_RAD_ITEMS))
    for k, name in enumerate(("synpic100.jpg", "synpic200.jpg", "synpic300.jpg")):
        write_image(root / "VQA_RAD Image Folder" / name, 60 + 40 * k, "RGB")
    return root


def slake_item(qid: int, img_id: int, question: str, answer: str, lang: str, answer_type: str) -> dict:
    return {
        "img_id": img_id,
        "img_name": f"xmlab{img_id}/source.jpg",
        "question": question,
        "answer": answer,
        "q_lang": lang,
        "location": "Lung",
        "modality": "CT",
        "answer_type": answer_type,
        "base_type": "vqa",
        "content_type": "Organ",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }


SLAKE_FILES = {
    "train.json": [
        slake_item(1, 1, "Does the picture contain lung?", "Yes", "en", "CLOSED"),
        slake_item(2, 1, "图片中包含肺吗?", "是", "zh", "CLOSED"),
        slake_item(3, 2, "What modality is used?", "CT", "en", "OPEN"),
    ],
    "validate.json": [slake_item(10, 2, "Which organ is abnormal?", "Lung", "en", "OPEN")],
    "test.json": [
        slake_item(11934, 102, "What modality is used to take this image?", "CT", "en", "OPEN"),
        slake_item(11938, 102, "Does the picture contain liver?", "No", "en", "CLOSED"),
        slake_item(12000, 102, "这张图片的成像方式是什么?", "CT", "zh", "OPEN"),
    ],
}


def make_slake(root: Path, *, zipped: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, items in SLAKE_FILES.items():
        (root / name).write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    if zipped:
        with zipfile.ZipFile(root / "imgs.zip", "w") as zf:
            for n in (1, 2, 102):
                zf.writestr(f"imgs/xmlab{n}/source.jpg", image_bytes(30 * n % 250, "JPEG"))
    else:
        for n in (1, 2, 102):
            write_image(root / "imgs" / f"xmlab{n}" / "source.jpg", 30 * n % 250, fmt="JPEG")
    return root


PATHVQA_QA = {
    "train": [
        {"image": "train_0001", "question": "What is present?", "answer": "granuloma"},
        {"image": "train_0001", "question": "Is this lung?", "answer": "yes"},
        {"image": "train_0002", "question": "does this image show necrosis?", "answer": "No"},
    ],
    "val": [{"image": "val_0261", "question": "What have lost their nuclei?", "answer": "neutrophils"}],
    "test": [
        {"image": "test_0007", "question": "Is there fibrosis?", "answer": "yes"},
        {"image": "test_0008", "question": "where are liver stem cells located?", "answer": "in the canals of hering"},
    ],
}


def make_pathvqa(root: Path) -> Path:
    for split, items in PATHVQA_QA.items():
        qa = root / "qas" / split / f"{split}_qa.pkl"
        qa.parent.mkdir(parents=True, exist_ok=True)
        qa.write_bytes(pickle.dumps(items, protocol=2))
        for item in items:
            write_image(root / "images" / split / f"{item['image']}.jpg", 90, "CMYK", "JPEG")
    return root


V1_HEADER = "Figure_path,Question,Answer,Choice A,Choice B,Choice C,Choice D,Answer_label"
V2_HEADER = "index,Figure_path,Caption,Question,Choice A,Choice B,Choice C,Choice D,Answer,split"
PMC_V1_ROWS = [
    "PMC1064097_F1.jpg,What is the uptake pattern in the breast?,Focal uptake pattern,A:Diffuse uptake pattern,"
    "B:Focal uptake pattern,C:No uptake pattern,D:Cannot determine from the information given,B",
    'PMC2000001_F2.jpg,"Is the lesion enhancing, yes or no?",No,A:Yes,B:No,C:Partially,D:Unclear,B',
]
PMC_V2_ROWS = [
    "35,PMC8253797_Fig4_11.jpg,A slightly altered cell.,What color labels the Golgi complexes?, A: Green , B: Red ,"
    " C: Light blue , D: Yellow,B,test",
    "36,PMC8253797_Fig4_11.jpg,cap,Is the nucleus visible?, A: Yes , B: No , C: Partly , D: Unclear,A,test",
    "37,PMC9000000_F3.jpg,cap,Which modality is shown?, A: CT , B: MRI , C: PET , D: Ultrasound,C,test",
]


def make_pmc_vqa(root: Path, *, zipped_v2: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    v1 = "\n".join([V1_HEADER, *PMC_V1_ROWS]) + "\n"
    for name in ("train.csv", "test.csv", "test_clean.csv"):
        (root / name).write_text(v1)
    v2 = "\n".join([V2_HEADER, *PMC_V2_ROWS]) + "\n"
    (root / "test_2.csv").write_text(v2)
    (root / "train_2.csv").write_text("\n".join([V2_HEADER, PMC_V2_ROWS[0].replace(",test", ",train")]) + "\n")
    for name in ("PMC1064097_F1.jpg", "PMC2000001_F2.jpg"):
        write_image(root / "images" / name, 50, "RGB", "JPEG")
    v2_images = ("PMC8253797_Fig4_11.jpg", "PMC9000000_F3.jpg")
    if zipped_v2:
        with zipfile.ZipFile(root / "images_2.zip", "w") as zf:
            for name in v2_images:
                zf.writestr(f"figures/{name}", image_bytes(70, "JPEG", "RGB"))
    else:
        for name in v2_images:
            write_image(root / "figures" / name, 70, "RGB", "JPEG")
    return root


def write_parquet(path: Path, rows: list[tuple[bytes | None, str, str]], row_group_size: int = 2) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": b, "path": f"img{i}.png"} for i, (b, _, _) in enumerate(rows)], image_type),
            "question": [q for _, q, _ in rows],
            "answer": [a for _, _, a in rows],
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


HF_ROWS = {
    "train": [
        (image_bytes(10), "are regions of the brain infarcted?", "yes"),
        (image_bytes(20, "JPEG", "CMYK"), "what is seen?", "hemorrhage"),
        (image_bytes(30), "is the liver normal?", "no"),
    ],
    "validation": [(image_bytes(40), "what organ is this?", "kidney")],
    "test": [
        (image_bytes(50), "is there a fracture?", "No"),
        (image_bytes(60), "where is the lesion?", "right lower lobe"),
        (image_bytes(70), "how many nodules?", "3"),
    ],
}


def make_hf(root: Path, splits: tuple[str, ...] = ("train", "test")) -> Path:
    for split in splits:
        write_parquet(root / "data" / f"{split}-00000-of-00001-5f2a1c.parquet", HF_ROWS[split])
    (root / "README.md").write_text("---\nlicense: cc0-1.0\n---\n")
    return root


# --------------------------------------------------------------------------- VQA-RAD


def test_vqa_rad_official(tmp_path):
    root = make_vqa_rad(tmp_path / "vqa_rad")
    train = vqa_rad.load(root, "train")
    test = vqa_rad.load(root, "test")
    assert [s.id for s in train] == ["vqa_rad-0", "vqa_rad-1", "vqa_rad-2"]
    assert [s.id for s in test] == ["vqa_rad-3", "vqa_rad-4"]
    assert [s.answer for s in train] == ["No", "2", "left upper lobe"]  # the number became text
    assert [s.answer_type for s in train + test] == ["closed", "open", "open", "closed", "open"]
    assert test[0].question == "Is the heart enlarged?" and test[1].meta["phrase_type"] == "test_para"
    assert train[0].meta["organ"] == "CHEST" and train[0].meta["question_type"] == "PRES"
    assert test[0].images[0].key == "vqa_rad/synpic200.jpg"
    im = test[0].image.load()
    assert im.size == (16, 16) and im.mode == "RGB"
    with pytest.raises(BenchError, match="no split 'val'"):
        vqa_rad.load(root, "val")


def test_vqa_rad_hf_export_and_auto_detection(tmp_path):
    root = make_hf(tmp_path / "vqa_rad")
    test = vqa_rad.load(root, "test")  # auto: no official JSON, Parquet present
    assert [s.id for s in test] == ["vqa_rad-hf-test-00000", "vqa_rad-hf-test-00001", "vqa_rad-hf-test-00002"]
    assert [s.answer_type for s in test] == ["closed", "open", "open"]
    assert [s.answer for s in test] == ["No", "right lower lobe", "3"]
    # third row sits in the second row group (row_group_size=2)
    im = test[2].image.load()
    assert im.mode == "L" and im.getpixel((0, 0)) == 70
    # the loader survives pickling (worker processes)
    ref = pickle.loads(pickle.dumps(test[1].image))
    assert isinstance(ref, ImageRef) and ref.load().getpixel((3, 3)) == 60
    assert len(vqa_rad.load(root, "train")) == 3
    with pytest.raises(BenchError, match="format must be one of"):
        vqa_rad.load(root, "test", format="arrow")


def test_vqa_rad_malformed(tmp_path):
    root = make_vqa_rad(tmp_path / "a")
    (root / "VQA_RAD Dataset Public.json").write_text('[{"qid": 1, "question": "x"')
    with pytest.raises(BenchError, match=r"VQA_RAD Dataset Public\.json: malformed JSON"):
        vqa_rad.load(root, "train")
    root = make_vqa_rad(tmp_path / "b")
    items = json.loads(json.dumps(VQA_RAD_ITEMS))
    items[3]["answer_type"] = "MAYBE"
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(items))
    with pytest.raises(BenchError, match=r"qid 3: answer_type 'MAYBE' is not OPEN or CLOSED"):
        vqa_rad.load(root, "test")
    root = make_vqa_rad(tmp_path / "c")
    del items[3]["answer_type"]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(items))
    with pytest.raises(BenchError, match="missing field 'answer_type'"):
        vqa_rad.load(root, "test")
    items = json.loads(json.dumps(VQA_RAD_ITEMS))
    items[4]["qid"] = 3  # a repeated qid keeps both questions under distinct ids
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(items))
    assert [s.id for s in vqa_rad.load(root, "test")] == ["vqa_rad-3", "vqa_rad-3~4"]
    root = make_vqa_rad(tmp_path / "d")
    (root / "VQA_RAD Image Folder" / "synpic300.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BenchError, match=r"synpic300\.jpg"):
        vqa_rad.load(root, "test")[1].image.load()


# --------------------------------------------------------------------------- SLAKE


def test_slake_official_english(tmp_path):
    root = make_slake(tmp_path / "slake")
    test = slake.load(root, "test")
    assert [s.id for s in test] == ["slake-11934", "slake-11938"]
    assert [(s.answer, s.answer_type) for s in test] == [("CT", "open"), ("No", "closed")]
    assert test[0].meta["modality"] == "CT" and test[0].meta["q_lang"] == "en" and test[0].meta["img_id"] == "102"
    assert test[0].images[0].key == "slake/xmlab102/source.jpg"
    assert [s.id for s in slake.load(root, "val")] == ["slake-10"]  # validate.json -> val
    assert [s.id for s in slake.load(root, "train")] == ["slake-1", "slake-3"]
    assert [s.answer for s in slake.load(root, "train", language="zh")] == ["是"]
    assert len(slake.load(root, "test", language="all")) == 3
    assert test[1].image.load().size == (16, 16)


def test_slake_hub_copy_validation_json_and_zip(tmp_path):
    root = make_slake(tmp_path / "slake", zipped=True)
    (root / "validate.json").rename(root / "validation.json")
    val = slake.load(root, "val")
    assert [s.id for s in val] == ["slake-10"]
    ref = val[0].image
    assert ref.path is None and ref.key == "slake/xmlab2/source.jpg"
    assert pickle.loads(pickle.dumps(ref)).load().size == (16, 16)  # read from imgs.zip, not unpacked
    report = slake.check(root)
    assert report.ok, report.problems
    assert report.splits == {"train": 2, "val": 1, "test": 2}


def test_slake_malformed(tmp_path):
    root = make_slake(tmp_path / "a")
    items = json.loads((root / "test.json").read_text())
    items[1]["q_lang"] = "fr"
    (root / "test.json").write_text(json.dumps(items))
    with pytest.raises(BenchError, match=r"test\.json qid 11938: q_lang 'fr'"):
        slake.load(root, "test")
    root = make_slake(tmp_path / "b")
    (root / "validate.json").unlink()
    (root / "test.json").write_text("")
    report = slake.check(root)
    assert not report.ok and report.splits == {"train": 2}
    assert any("validate.json or validation.json" in p for p in report.problems)
    assert any("test.json: the file is empty" in p for p in report.problems)


# --------------------------------------------------------------------------- PathVQA


def test_pathvqa_official(tmp_path):
    root = make_pathvqa(tmp_path / "pathvqa")
    train = pathvqa.load(root, "train")
    assert [s.id for s in train] == ["pathvqa-train-00000", "pathvqa-train-00001", "pathvqa-train-00002"]
    assert [s.answer_type for s in train] == ["open", "closed", "closed"]  # "No" counts as closed
    assert train[0].images[0].key == "pathvqa/train_0001.jpg" and train[0].meta["image_id"] == "train_0001"
    assert train[0].image.load().mode == "RGB"  # a CMYK JPEG comes back as RGB
    assert [s.answer for s in pathvqa.load(root, "test")] == ["yes", "in the canals of hering"]
    assert pathvqa.check(root).to_json() == {
        "dataset": "pathvqa",
        "ok": True,
        "splits": {"train": 3, "val": 1, "test": 2},
        "problems": [],
    }


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pathvqa_refuses_malicious_pickle_without_running_it(tmp_path):
    root = make_pathvqa(tmp_path / "pathvqa")
    marker = tmp_path / "pwned"
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps([_Evil(str(marker))]))
    with pytest.raises(BenchError, match=r"test_qa\.pkl: unsafe pickle refused \(refused global (posix|nt)\.system\)"):
        pathvqa.load(root, "test")
    assert not marker.exists()
    # other harmful globals are refused too, even harmless-looking builtins like eval or getattr
    payload = pickle.dumps([functools.partial(print, "hi")])
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(payload)
    with pytest.raises(BenchError, match=r"refused global functools\.partial"):
        pathvqa.load(root, "test")
    res = run_bench("data", "check", "pathvqa", "--root", str(root), "--json")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "test_qa.pkl: unsafe pickle refused" in res.stdout


def test_pathvqa_hf_export(tmp_path):
    root = make_hf(tmp_path / "pathvqa", ("train", "validation", "test"))
    assert [p.name for p in parquet_files(root, "val")] == ["validation-00000-of-00001-5f2a1c.parquet"]
    val = pathvqa.load(root, "val")
    assert [(s.id, s.answer) for s in val] == [("pathvqa-hf-val-00000", "kidney")]
    train = pathvqa.load(root, "train")
    assert train[1].image.load().mode == "RGB"  # CMYK bytes decoded to RGB
    assert [s.answer_type for s in train] == ["closed", "open", "closed"]


def test_parquet_errors_name_the_file(tmp_path):
    root = tmp_path / "vqa_rad"
    shard = write_parquet(root / "data" / "test-00000-of-00001.parquet", [(None, "q?", "yes")])
    with pytest.raises(BenchError, match=r"test-00000-of-00001\.parquet row 0: the image is not embedded"):
        vqa_rad.load(root, "test")[0].image.load()
    shard.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BenchError, match=r"test-00000-of-00001\.parquet: not a readable Parquet file"):
        vqa_rad.load(root, "test")
    with pytest.raises(BenchError, match="rows"):
        load_parquet_image(str(write_parquet(tmp_path / "x.parquet", [(image_bytes(1), "q", "a")])), 5)


# --------------------------------------------------------------------------- PMC-VQA


def test_pmc_vqa_version_2_and_1(tmp_path):
    root = make_pmc_vqa(tmp_path / "pmc_vqa")
    test = pmc_vqa.load(root, "test")  # auto: version 2 files present
    assert [s.id for s in test] == ["pmc_vqa-v2-35", "pmc_vqa-v2-36", "pmc_vqa-v2-37"]
    assert [s.answer for s in test] == ["Red", "Yes", "PET"]
    assert test[0].meta["choices"] == {"A": "Green", "B": "Red", "C": "Light blue", "D": "Yellow"}
    assert test[0].meta["answer_label"] == "B" and test[0].meta["source_split"] == "test"
    assert all(s.answer_type == "closed" for s in test)
    assert test[0].images[0].key == "pmc_vqa/PMC8253797_Fig4_11.jpg" and test[0].image.load().size == (16, 16)
    clean = pmc_vqa.load(root, "test", version=1, test_set="clean")
    assert [s.id for s in clean] == ["pmc_vqa-v1-test_clean-000000", "pmc_vqa-v1-test_clean-000001"]
    assert [s.answer for s in clean] == ["Focal uptake pattern", "No"]
    assert clean[0].meta["choices"]["D"] == "Cannot determine from the information given"
    assert clean[1].question == "Is the lesion enhancing, yes or no?"
    assert clean[0].meta["answer_text_csv"] == "Focal uptake pattern"
    assert len(pmc_vqa.load(root, "train", version=1)) == 2
    with pytest.raises(BenchError, match="version 1 only"):
        pmc_vqa.load(root, "test", version=2, test_set="clean")


def test_pmc_vqa_misspelt_header_and_zip(tmp_path):
    root = make_pmc_vqa(tmp_path / "pmc_vqa", zipped_v2=True)
    (root / "test.csv").write_text(
        "Figure_path,Question,Anwser,Choice A,Choice B,Choice C,Choice D\n"
        "PMC1064097_F1.jpg,Which view?,B:Lateral,A:Frontal,B:Lateral,C:Oblique,D:None\n"
    )
    v1 = pmc_vqa.load(root, "test", version=1)
    assert (v1[0].answer, v1[0].meta["answer_label"]) == ("Lateral", "B")  # letter taken from "B:Lateral"
    test = pmc_vqa.load(root, "test", version=2)
    assert test[0].images[0].path is None and test[0].image.load().mode == "RGB"  # from images_2.zip


def test_pmc_vqa_malformed(tmp_path):
    root = make_pmc_vqa(tmp_path / "a")
    rows = [*PMC_V2_ROWS[:2], PMC_V2_ROWS[2].replace(",C,test", ",E,test")]
    (root / "test_2.csv").write_text("\n".join([V2_HEADER, *rows]) + "\n")
    with pytest.raises(BenchError, match=r"test_2\.csv line 4: answer 'E' in column Answer is not a letter A-D"):
        pmc_vqa.load(root, "test")
    kept = pmc_vqa.load(root, "test", invalid_rows="skip")
    assert [s.id for s in kept] == ["pmc_vqa-v2-35", "pmc_vqa-v2-36"] and kept[0].meta["skipped_rows"] == 1
    root = make_pmc_vqa(tmp_path / "b")
    (root / "test_2.csv").write_text(V2_HEADER.replace("Choice C,", "") + "\n1,a.jpg,c,q,a,b,d,A,test\n")
    with pytest.raises(BenchError, match=r"test_2\.csv: missing column\(s\) Choice C"):
        pmc_vqa.load(root, "test")


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("name", "make", "splits"),
    [
        ("vqa_rad", make_vqa_rad, {"train": 3, "test": 2}),
        ("slake", make_slake, {"train": 2, "val": 1, "test": 2}),
        ("pathvqa", make_pathvqa, {"train": 3, "val": 1, "test": 2}),
        ("pmc_vqa", make_pmc_vqa, {"train": 1, "test": 3}),
        ("vqa_rad", make_hf, {"train": 3, "test": 3}),  # the Hugging Face Parquet export
    ],
)
def test_cli_check_ok(tmp_path, name, make, splits):
    root = make(tmp_path / name)
    res = run_bench("data", "check", name, "--root", str(root), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout) == {"dataset": name, "ok": True, "splits": splits, "problems": []}


def test_cli_check_malformed_names_files(tmp_path):
    for name, root, needle in malformed_variants(tmp_path)[:4]:
        res = run_bench("data", "check", name, "--root", str(root), "--json")
        assert res.returncode == 2, (name, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr
        out = json.loads(res.stdout)
        assert out["ok"] is False and any(needle in p for p in out["problems"]), (needle, out)


# --------------------------------------------------------------------------- malformed variants


def malformed_variants(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(dataset, root, substring the error must contain) for the shared fuzz test."""
    out: list[tuple[str, Path, str]] = []
    base = tmp_path / "vqa-malformed"

    root = make_vqa_rad(base / "vqa_rad-missing-json")
    (root / "VQA_RAD Dataset Public.json").unlink()
    out.append(("vqa_rad", root, "VQA_RAD Dataset Public.json"))

    root = make_vqa_rad(base / "vqa_rad-bad-type")
    items = json.loads(json.dumps(VQA_RAD_ITEMS))
    items[4]["answer_type"] = "FREE"
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(items))
    out.append(("vqa_rad", root, "VQA_RAD Dataset Public.json qid 4"))

    root = make_vqa_rad(base / "vqa_rad-corrupt-image")
    (root / "VQA_RAD Image Folder" / "synpic200.jpg").write_bytes(b"\xff\xd8 truncated")
    out.append(("vqa_rad", root, "synpic200.jpg"))

    root = make_slake(base / "slake-not-a-list")
    (root / "train.json").write_text('{"qid": 1}')
    out.append(("slake", root, "train.json"))

    root = make_slake(base / "slake-missing-image")
    (root / "imgs" / "xmlab102" / "source.jpg").unlink()
    out.append(("slake", root, "xmlab102/source.jpg"))

    root = make_slake(base / "slake-zip-missing-member", zipped=True)
    with zipfile.ZipFile(root / "imgs.zip", "w") as zf:
        zf.writestr("imgs/xmlab1/source.jpg", image_bytes(9, "JPEG"))
    out.append(("slake", root, "xmlab2/source.jpg in "))

    root = make_pathvqa(base / "pathvqa-truncated-pickle")
    qa = root / "qas" / "val" / "val_qa.pkl"
    qa.write_bytes(qa.read_bytes()[:10])
    out.append(("pathvqa", root, "val_qa.pkl"))

    root = make_pathvqa(base / "pathvqa-missing-field")
    (root / "qas" / "train" / "train_qa.pkl").write_bytes(pickle.dumps([{"image": "train_0001", "question": "q"}]))
    out.append(("pathvqa", root, "train_qa.pkl item 0: missing field 'answer'"))

    root = make_pmc_vqa(base / "pmc-empty-csv")
    (root / "test_2.csv").write_text("")
    out.append(("pmc_vqa", root, "test_2.csv"))

    root = make_pmc_vqa(base / "pmc-header-only")
    (root / "train_2.csv").write_text(V2_HEADER + "\n")
    out.append(("pmc_vqa", root, "train_2.csv"))

    root = make_hf(base / "vqa_rad-hf-wrong-columns")
    write_parquet(root / "data" / "test-00000-of-00001-5f2a1c.parquet", HF_ROWS["test"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"img": [b"x"], "text": ["q"]}), root / "data" / "test-00000-of-00001-5f2a1c.parquet")
    out.append(("vqa_rad", root, "test-00000-of-00001-5f2a1c.parquet: missing column(s)"))
    return out


def test_malformed_variants_fail_with_named_file(tmp_path):
    checks = {"vqa_rad": vqa_rad.check, "slake": slake.check, "pathvqa": pathvqa.check, "pmc_vqa": pmc_vqa.check}
    variants = malformed_variants(tmp_path)
    assert len(variants) >= 10
    for name, root, needle in variants:
        report = checks[name](root)
        assert not report.ok, (name, root)
        assert any(needle in p for p in report.problems), (name, needle, report.problems)
