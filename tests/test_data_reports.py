"""The report readers (IU X-ray in the R2Gen layout, raw Open-I XML, ReXVal) on fixture trees in their
official formats, on the real 3,955 Open-I report XMLs, and on malformed copies."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from bench.data import iu_xray, openi, rexval
from bench.data.common import ids_hash
from bench.interfaces import BenchError
from tests.conftest import run_bench
from tests.real_reports import MEMBER, _wheel, require_iu_reports

# --------------------------------------------------------------------------- fixture writers


def write_png(path: Path, value: int = 100) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (16, 16), value).save(path)
    return path


IU_ANNOTATION = {
    "train": [
        {
            "id": "CXR2384_IM-0942",
            "report": "The heart size and pulmonary vascularity appear within normal limits. A large hiatal hernia "
            "is noted.",
            "image_path": ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"],
            "split": "train",
        },
        {
            "id": "CXR2926_IM-1328",
            "report": "Cardiac and mediastinal contours are within normal limits. The lungs are clear.",
            "image_path": ["CXR2926_IM-1328/0.png", "CXR2926_IM-1328/1.png"],
            "split": "train",
        },
    ],
    "val": [
        {
            "id": "CXR2056_IM-0694-1001",
            "report": "The heart size is upper limits of normal.",
            "image_path": ["CXR2056_IM-0694-1001/0.png", "CXR2056_IM-0694-1001/1.png"],
            "split": "val",
        }
    ],
    "test": [
        {
            "id": "CXR1000_IM-0003",
            "report": "Increased opacity in the right upper lobe with XXXX associated atelectasis.",
            "image_path": ["CXR1000_IM-0003/0.png", "CXR1000_IM-0003/1.png"],
            "split": "test",
        },
        {
            "id": "CXR1001_IM-0004",
            "report": "",
            "image_path": ["CXR1001_IM-0004/0.png"],
            "split": "test",
        },
    ],
}


def make_iu_xray(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotation.json").write_text(json.dumps(IU_ANNOTATION))
    for items in IU_ANNOTATION.values():
        for k, item in enumerate(items):
            for j, p in enumerate(item["image_path"]):
                write_png(root / "images" / p, 40 + 20 * k + 5 * j)
    return root


def openi_xml(n: int, sections: dict[str, str], major: list[str], auto: list[str], images: list[str]) -> str:
    """An Open-I report XML with the structure of the real release (see ecgen-radiology/1.xml)."""
    abstract = "\n".join(f'            <AbstractText Label="{k}">{v}</AbstractText>' for k, v in sections.items())
    mesh = "\n".join([f"      <major>{m}</major>" for m in major] + [f"      <automatic>{a}</automatic>" for a in auto])
    parents = "\n".join(
        f"""   <parentImage id="{i}">
      <figureId>F{k + 1}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{i}.jpg</url>
         <imgModality>7</imgModality>
      </panel>
   </parentImage>"""
        for k, i in enumerate(images)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
{abstract}
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{parents}
</eCitation>
"""


OPENI_REPORTS = {
    1: (
        {
            "COMPARISON": "None.",
            "INDICATION": "Positive TB test",
            "FINDINGS": "The cardiac silhouette and mediastinum size are within normal limits. There is no "
            "pulmonary edema.",
            "IMPRESSION": "Normal chest x-XXXX.",
        },
        ["normal"],
        [],
        ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
    ),
    2: (
        {
            "COMPARISON": "None.",
            "INDICATION": "XXXX-year-old male, chest pain.",
            "FINDINGS": "",
            "IMPRESSION": "No active disease.",
        },
        ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"],
        ["Atherosclerosis"],
        ["CXR2_IM-0652-1001"],
    ),
    3: (
        {"COMPARISON": "", "INDICATION": "dyspnea", "FINDINGS": "Left  basilar\n atelectasis.", "IMPRESSION": ""},
        ["Pulmonary Atelectasis/base/left"],
        [],
        [],
    ),
    4: (
        {"COMPARISON": "", "INDICATION": "", "FINDINGS": "Clear lungs.", "IMPRESSION": "Negative."},
        ["normal"],
        [],
        ["CXR4_IM-2050-1001"],
    ),
    5: (
        {"COMPARISON": "", "INDICATION": "", "FINDINGS": "Stable cardiomegaly.", "IMPRESSION": "Cardiomegaly."},
        ["Cardiomegaly"],
        [],
        ["CXR5_IM-2117-1003002", "CXR5_IM-2117-1004003"],
    ),
}


for _n in range(6, 11):  # plain normal studies, so that every split of the 0.7/0.1/0.2 split is non-empty
    OPENI_REPORTS[_n] = (
        {"COMPARISON": "", "INDICATION": "", "FINDINGS": "No acute findings.", "IMPRESSION": "Normal."},
        ["normal"],
        [],
        [f"CXR{_n}_IM-{3000 + _n}-1001"],
    )


def make_openi(root: Path, *, images: bool = True) -> Path:
    folder = root / "ecgen-radiology"
    folder.mkdir(parents=True, exist_ok=True)
    for n, (sections, major, auto, image_ids) in OPENI_REPORTS.items():
        (folder / f"{n}.xml").write_text(openi_xml(n, sections, major, auto, image_ids), encoding="utf-8")
        if images:
            for i in image_ids:
                write_png(root / "NLMCXR_png" / f"{i}.png", 10 * n)
    return root


REXVAL_REPORTS = [
    ("s50000001", "No acute cardiopulmonary process.", "Normal chest.", "No acute process.", "Clear lungs.", "Normal."),
    ("s50000002", "Small left pleural effusion.", "Left effusion.", "No effusion.", "Small effusion.", "Effusion."),
    ("s50000003", "Stable cardiomegaly, compared to prior.", "Cardiomegaly.", "Normal heart.", "Big heart.", "Heart."),
]
# (study_number, candidate_type, rater_index, error_category, clinically_significant, num_errors)
REXVAL_RATINGS = [
    (0, "radgraph", 0, 1, "True", 1),
    (0, "radgraph", 0, 2, "False", 2),
    (0, "radgraph", 3, 1, "True", 3),
    (1, "bertscore", 5, 2, "True", 1),
    (1, "bertscore", 5, 2, "False", 1),
    (1, "bertscore", 1, 6, "False", 4),
    (2, "bleu", 2, 5, "True", 0),
    (2, "bleu", 4, 5, "True", 2),
]


def make_rexval(root: Path) -> Path:
    import csv

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "50_samples_gt_and_candidates.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "gt_report", "radgraph", "bertscore", "s_emb", "bleu"])
        w.writerows(REXVAL_REPORTS)
    with open(root / "6_valid_raters_per_rater_error_categories.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        # middle columns in another order than documented, plus a pandas index column: read by name
        header = ["", "study_number", "rater_index", "candidate_type", "clinically_significant"]
        w.writerow([*header, "error_category", "num_errors"])
        for k, (s, c, r, cat, sig, n) in enumerate(REXVAL_RATINGS):
            w.writerow([k, s, r, c, sig, cat, n])
    return root


# --------------------------------------------------------------------------- IU X-ray (R2Gen)


def test_iu_xray_r2gen(tmp_path):
    root = make_iu_xray(tmp_path / "iu_xray")
    train, val, test = (iu_xray.load(root, s) for s in ("train", "val", "test"))
    assert [s.id for s in train] == ["CXR2384_IM-0942", "CXR2926_IM-1328"]
    assert [s.id for s in val] == ["CXR2056_IM-0694-1001"]
    assert [s.id for s in test] == ["CXR1000_IM-0003", "CXR1001_IM-0004"]
    assert test[0].sections == {"findings": IU_ANNOTATION["test"][0]["report"]}
    assert test[0].report == IU_ANNOTATION["test"][0]["report"]
    assert test[1].sections == {} and test[1].meta["n_images"] == 1  # empty report: no findings section
    assert [im.key for im in test[0].images] == ["iu_xray/CXR1000_IM-0003/0.png", "iu_xray/CXR1000_IM-0003/1.png"]
    assert test[0].images[1].load().getpixel((0, 0)) == 45


def test_iu_xray_malformed(tmp_path):
    root = make_iu_xray(tmp_path / "a")
    data = json.loads(json.dumps(IU_ANNOTATION))
    data["val"].append(dict(data["train"][0], split="val"))
    (root / "annotation.json").write_text(json.dumps(data))
    with pytest.raises(BenchError, match=r"annotation\.json: study id 'CXR2384_IM-0942' appears twice"):
        iu_xray.load(root, "test")
    data = json.loads(json.dumps(IU_ANNOTATION))
    data["test"][0]["image_path"] = []
    (root / "annotation.json").write_text(json.dumps(data))
    with pytest.raises(BenchError, match=r"test id CXR1000_IM-0003: image_path must be a non-empty list"):
        iu_xray.load(root, "test")
    del data["val"]
    (root / "annotation.json").write_text(json.dumps(data))
    with pytest.raises(BenchError, match=r"annotation\.json: missing key\(s\) val"):
        iu_xray.load(root, "train")


# --------------------------------------------------------------------------- Open-I


def test_openi_parse_and_split(tmp_path):
    root = make_openi(tmp_path / "openi")
    samples = {s.id: s for split in ("train", "val", "test") for s in openi.load(root, split)}
    assert sorted(samples, key=lambda i: int(i[3:])) == [f"CXR{n}" for n in range(1, 11)]
    one = samples["CXR1"]
    assert one.sections == {
        "comparison": "None.",
        "indication": "Positive TB test",
        "findings": OPENI_REPORTS[1][0]["FINDINGS"],
        "impression": "Normal chest x-XXXX.",
    }
    assert [im.key for im in one.images] == ["openi/CXR1_1_IM-0001-3001.png", "openi/CXR1_1_IM-0001-4001.png"]
    assert one.images[0].load().getpixel((1, 1)) == 10
    assert one.meta["mesh_major"] == ["normal"] and one.meta["normal"] is True
    two = samples["CXR2"]
    assert "findings" not in two.sections and two.sections["impression"] == "No active disease."  # empty dropped
    assert two.meta["mesh_major"] == ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"]
    assert two.meta["mesh_automatic"] == ["Atherosclerosis"]
    three = samples["CXR3"]
    assert three.sections == {"indication": "dyspnea", "findings": "Left basilar atelectasis."}  # spaces squeezed
    assert three.images == [] and three.meta["image_ids"] == []
    # seeded split: the same seed gives the same split, whatever the file order; recorded in meta
    ids = {s: [x.id for x in openi.load(root, s)] for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in ids.items()} == {"train": 7, "val": 1, "test": 2}
    for split, members in ids.items():
        for s in openi.load(root, split):
            assert s.meta["split_seed"] == 0 and s.meta["split_ids_hash"] == ids_hash(members)
    other = {s: [x.id for x in openi.load(root, s, seed=1, fractions=(0.2, 0.2, 0.6))] for s in ids}
    assert len(other["test"]) == 6 and other != ids
    filtered = [s.id for split in ids for s in openi.load(root, split, require_findings=True, require_images=True)]
    assert sorted(filtered) == ["CXR1", "CXR10", "CXR4", "CXR5", "CXR6", "CXR7", "CXR8", "CXR9"]


def test_openi_refuses_entities_and_bad_xml(tmp_path):
    root = make_openi(tmp_path / "a")
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>\n'
        "<eCitation><uId id='CXR9'/><Abstract><AbstractText Label='FINDINGS'>&lol2;</AbstractText></Abstract>"
        "</eCitation>"
    )
    (root / "ecgen-radiology" / "9.xml").write_text(bomb)
    with pytest.raises(BenchError, match=r"9\.xml: refused an XML with a DOCTYPE/ENTITY declaration"):
        openi.load(root, "test")
    (root / "ecgen-radiology" / "9.xml").write_text("<eCitation><uId id='CXR9'/>")
    with pytest.raises(BenchError, match=r"9\.xml: malformed XML"):
        openi.load(root, "test")
    (root / "ecgen-radiology" / "9.xml").write_text(openi_xml(1, {"FINDINGS": "dup"}, [], [], []))
    with pytest.raises(BenchError, match=r"9\.xml: report id CXR1 already used by .*1\.xml"):
        openi.load(root, "test")
    root = make_openi(tmp_path / "b", images=False)
    with pytest.raises(BenchError, match="missing the openi images"):
        openi.load(root, "test")
    assert len(openi.load(root, "train", check_images=False)) + len(openi.load(root, "test", check_images=False)) >= 1


def _real_xml_folder(tmp_path: Path) -> Path:
    require_iu_reports()  # skips with the reason when the wheel cannot be fetched
    with zipfile.ZipFile(_wheel()) as whl:
        blob = whl.read(MEMBER)
    root = tmp_path / "openi-real"
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".xml"):
                target = root / "ecgen-radiology" / Path(member.name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = tar.extractfile(member)
                assert handle is not None
                target.write_bytes(handle.read())
    return root


def test_openi_reads_the_real_3955_reports(tmp_path):
    root = _real_xml_folder(tmp_path)
    splits = {s: openi.load(root, s, check_images=False) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 2768, "val": 396, "test": 791}
    every = [x for v in splits.values() for x in v]
    assert len({x.id for x in every}) == 3955
    assert sum(1 for x in every if x.sections.get("findings")) == 3425
    assert sum(len(x.images) for x in every) == 7470
    assert sum(1 for x in every if not x.images) == 104
    first = next(x for x in every if x.id == "CXR1")
    assert first.sections["findings"].startswith("The cardiac silhouette and mediastinum size are within normal")
    assert first.meta["mesh_major"] == ["normal"]
    assert first.images[0].key == "openi/CXR1_1_IM-0001-3001.png"
    with_findings = sum(
        len(openi.load(root, s, check_images=False, require_findings=True)) for s in ("train", "val", "test")
    )
    assert with_findings == 3425
    # tests/real_reports.py parses through the same reader
    reports = {r.id: r for r in require_iu_reports()}
    assert reports["CXR1"].findings == first.sections["findings"]


# --------------------------------------------------------------------------- ReXVal


def test_rexval(tmp_path):
    root = make_rexval(tmp_path / "rexval")
    samples = rexval.load(root, "test")
    assert len(samples) == 12  # 3 studies x 4 candidates
    assert [s.id for s in samples[:4]] == [
        "rexval-00-radgraph",
        "rexval-00-bertscore",
        "rexval-00-s_emb",
        "rexval-00-bleu",
    ]
    raters = ["0", "1", "2", "3", "4", "5"]
    by_id = {s.id: s for s in samples}
    a = by_id["rexval-00-radgraph"]
    assert a.sections == {"findings": "No acute cardiopulmonary process."}
    assert a.meta["candidate_report"] == "Normal chest." and a.meta["study_id"] == "s50000001"
    assert a.meta["raters"] == raters
    assert a.meta["errors"]["0"] == {"significant": [1, 0, 0, 0, 0, 0], "insignificant": [0, 2, 0, 0, 0, 0]}
    assert a.meta["significant_errors"] == {"0": 1, "1": 0, "2": 0, "3": 3, "4": 0, "5": 0}
    assert a.meta["total_errors"] == {"0": 3, "1": 0, "2": 0, "3": 3, "4": 0, "5": 0}
    assert a.meta["mean_significant_errors"] == pytest.approx(4 / 6)
    assert a.meta["mean_total_errors"] == pytest.approx(6 / 6)
    assert a.meta["mean_significant_by_category"]["1"] == pytest.approx(4 / 6)
    b = by_id["rexval-01-bertscore"]
    assert b.meta["mean_significant_errors"] == pytest.approx(1 / 6)
    assert b.meta["mean_total_errors"] == pytest.approx(6 / 6)
    assert b.meta["mean_total_by_category"]["6"] == pytest.approx(4 / 6)
    assert by_id["rexval-02-bleu"].meta["mean_significant_errors"] == pytest.approx(2 / 6)
    assert by_id["rexval-02-s_emb"].meta["mean_total_errors"] == 0.0  # no rows: no error found
    with pytest.raises(BenchError, match="no split 'train'"):
        rexval.load(root, "train")


def test_rexval_malformed(tmp_path):
    root = make_rexval(tmp_path / "a")
    path = root / "6_valid_raters_per_rater_error_categories.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, "8,3,0,radgraph,True,1,1"]) + "\n")  # study 3 of 3 (0-based)
    with pytest.raises(BenchError, match=r"error_categories\.csv line 10: study_number '3' is outside 0\.\.2"):
        rexval.load(root)
    path.write_text("\n".join([*lines, "8,0,0,radgraph,maybe,1,1"]) + "\n")
    with pytest.raises(BenchError, match=r"line 10: clinically_significant 'maybe' is not True/False"):
        rexval.load(root)
    path.write_text("\n".join([*lines, "8,0,0,gpt4,True,1,1"]) + "\n")
    with pytest.raises(BenchError, match=r"line 10: candidate_type 'gpt4' is not a column of"):
        rexval.load(root)
    path.write_text("\n".join([*lines, "8,0,0,radgraph,True,7,1"]) + "\n")
    with pytest.raises(BenchError, match=r"line 10: error_category '7' is outside 1\.\.6"):
        rexval.load(root)


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("name", "make", "splits"),
    [
        ("iu_xray", make_iu_xray, {"train": 2, "val": 1, "test": 2}),
        ("openi", make_openi, {"train": 7, "val": 1, "test": 2}),
        ("rexval", make_rexval, {"test": 12}),
    ],
)
def test_cli_check_ok(tmp_path, name, make, splits):
    root = make(tmp_path / name)
    res = run_bench("data", "check", name, "--root", str(root), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout) == {"dataset": name, "ok": True, "splits": splits, "problems": []}


def test_cli_check_malformed_names_files(tmp_path):
    variants = malformed_variants(tmp_path)
    for name, root, needle in (variants[0], variants[3], variants[6]):
        res = run_bench("data", "check", name, "--root", str(root), "--json")
        assert res.returncode == 2, (name, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr
        out = json.loads(res.stdout)
        assert out["ok"] is False and any(needle in p for p in out["problems"]), (needle, out)


# --------------------------------------------------------------------------- malformed variants


def malformed_variants(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """(dataset, root, substring the error must contain) for the shared fuzz test."""
    out: list[tuple[str, Path, str]] = []
    base = tmp_path / "reports-malformed"

    root = make_iu_xray(base / "iu-missing-annotation")
    (root / "annotation.json").unlink()
    out.append(("iu_xray", root, "annotation.json"))

    root = make_iu_xray(base / "iu-not-json")
    (root / "annotation.json").write_text("{'train': []}")
    out.append(("iu_xray", root, "annotation.json: malformed JSON"))

    root = make_iu_xray(base / "iu-missing-image")
    (root / "images" / "CXR1000_IM-0003" / "1.png").unlink()
    out.append(("iu_xray", root, "CXR1000_IM-0003/1.png"))

    root = make_openi(base / "openi-entity")
    (root / "ecgen-radiology" / "3.xml").write_text('<!DOCTYPE x [<!ENTITY a "b">]><eCitation/>')
    out.append(("openi", root, "3.xml"))

    root = make_openi(base / "openi-no-xml")
    for p in (root / "ecgen-radiology").glob("*.xml"):
        p.unlink()
    out.append(("openi", root, "ecgen-radiology"))

    root = make_openi(base / "openi-corrupt-png")
    (root / "NLMCXR_png" / "CXR5_IM-2117-1004003.png").write_bytes(b"\x89PNG broken")
    out.append(("openi", root, "CXR5_IM-2117-1004003.png"))

    root = make_rexval(base / "rexval-missing-ratings")
    (root / "6_valid_raters_per_rater_error_categories.csv").unlink()
    out.append(("rexval", root, "6_valid_raters_per_rater_error_categories.csv"))

    root = make_rexval(base / "rexval-bad-header")
    path = root / "50_samples_gt_and_candidates.csv"
    path.write_text(path.read_text().replace("gt_report", "reference", 1))
    out.append(("rexval", root, "50_samples_gt_and_candidates.csv: missing column(s) gt_report"))

    root = make_rexval(base / "rexval-negative-count")
    path = root / "6_valid_raters_per_rater_error_categories.csv"
    path.write_text(path.read_text() + "8,0,0,radgraph,True,1,-2\n")
    out.append(("rexval", root, "6_valid_raters_per_rater_error_categories.csv line 10: num_errors '-2'"))

    root = make_rexval(base / "rexval-empty")
    (root / "50_samples_gt_and_candidates.csv").write_text("")
    out.append(("rexval", root, "50_samples_gt_and_candidates.csv: the file is empty"))
    return out


def test_malformed_variants_fail_with_named_file(tmp_path):
    checks = {"iu_xray": iu_xray.check, "openi": openi.check, "rexval": rexval.check}
    variants = malformed_variants(tmp_path)
    assert len(variants) >= 10
    for name, root, needle in variants:
        report = checks[name](root)
        assert not report.ok, (name, root)
        assert any(needle in p for p in report.problems), (name, needle, report.problems)
