"""The synthetic chest-radiograph dataset: determinism, splits, labels vs reports vs QA vs pixels,
caching and errors. Small datasets (n=120, 128 px) keep it fast."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.data import synthcxr
from bench.data.synthcxr import FINDINGS, NO_FINDING, VERSION
from bench.interfaces import BenchError, Sample

N, SIZE = 120, 128
LABELS = (*FINDINGS, NO_FINDING)

# A tiny rule-based labeler written independently of the templates: which sentences mention a
# finding, and whether the mention is negated or hedged.
MENTION = {
    "Atelectasis": r"atelecta|collapse",
    "Cardiomegaly": r"cardiomegaly|enlarged (heart|cardiac)|enlargement of the cardiac"
    r"|(heart|cardiac silhouette) (is|may be) \w* ?enlarged",
    "Consolidation": r"consolidat|airspace opacity",
    "Edema": r"edema|fluid overload",
    "Pleural Effusion": r"effusion|pleural fluid",
    "Pneumothorax": r"pneumothora|visceral pleural line",
    "Nodule": r"nodul|rounded density|round well-defined density",
}
HEDGE = r"possibl|cannot be excluded|may represent|may be|questionable"
NEGATION = r"\bno\b|\bnot\b|\bwithout\b"
NORMAL_IMPRESSION = r"^(no acute|normal chest|no radiographic evidence)"


def mention_labels(text: str) -> dict[str, set[int]]:
    """finding -> the set of polarities it is mentioned with (1, 0, -1); absent if not mentioned."""
    out: dict[str, set[int]] = {}
    for sentence in re.split(r"(?<=\.)\s+", text.lower()):
        for finding, pattern in MENTION.items():
            if re.search(pattern, sentence):
                polarity = -1 if re.search(HEDGE, sentence) else (0 if re.search(NEGATION, sentence) else 1)
                out.setdefault(finding, set()).add(polarity)
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthcxr")


@pytest.fixture(scope="module")
def splits(root: Path) -> dict[str, list[Sample]]:
    return {s: synthcxr.load(root, s, n=N, size=SIZE) for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def samples(splits: dict[str, list[Sample]]) -> list[Sample]:
    return sorted((s for xs in splits.values() for s in xs), key=lambda s: s.id)


def _pixels(sample: Sample) -> np.ndarray:
    return np.asarray(sample.image.load(), dtype=np.float64)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((folder / "images").glob("*.png")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- layout and API


def test_sample_fields(root: Path, splits: dict[str, list[Sample]]) -> None:
    s = splits["test"][0]
    index = s.meta["index"]
    folder = root / f"v{VERSION}-s0-n{N}-{SIZE}px"
    assert s.id == f"synthcxr-s0-{index:05d}" and s.dataset == "synthcxr" and s.split == "test"
    assert len(s.images) == 1
    assert s.image.key == f"synthcxr/v{VERSION}/s0/{SIZE}px/{index}"
    assert Path(s.image.path) == folder / "images" / f"{index:05d}.png"
    im = s.image.load()
    assert im.mode == "L" and im.size == (SIZE, SIZE)
    assert list(s.labels) == list(LABELS)
    assert set(s.sections) == {"indication", "findings", "impression"}
    assert all(s.sections[k].strip() for k in s.sections)
    assert s.question is None and s.answer is None
    for key in ("truth", "location", "severity", "qa"):
        assert key in s.meta
    assert set(s.meta["truth"]) >= set(FINDINGS)


def test_fingerprint_depends_on_every_parameter() -> None:
    base = synthcxr.fingerprint(0, 2000, 224)
    assert base == synthcxr.fingerprint()
    others = {
        synthcxr.fingerprint(1, 2000, 224),
        synthcxr.fingerprint(0, 1999, 224),
        synthcxr.fingerprint(0, 2000, 256),
    }
    assert base not in others and len(others) == 3


def test_bad_split_view_and_options_are_refused(root: Path) -> None:
    with pytest.raises(BenchError, match=r"no split 'testing'.*train, val, test"):
        synthcxr.load(root, "testing", n=N, size=SIZE)
    with pytest.raises(BenchError, match=r"no view 'report'.*image, vqa"):
        synthcxr.load(root, "test", n=N, size=SIZE, view="report")
    with pytest.raises(BenchError, match="n must be >= 1"):
        synthcxr.load(root, "test", n=0, size=SIZE)
    with pytest.raises(BenchError, match="size must be"):
        synthcxr.load(root, "test", n=N, size=16)
    with pytest.raises(BenchError, match="seed must be >= 0"):
        synthcxr.load(root, "test", seed=-1, n=N, size=SIZE)


# ----------------------------------------------------------------------------- determinism and caching


def test_same_seed_gives_identical_bytes_and_reports(root: Path, tmp_path: Path) -> None:
    again = synthcxr.generate(tmp_path, seed=0, n=N, size=SIZE)
    first = root / f"v{VERSION}-s0-n{N}-{SIZE}px"
    assert _digest(again) == _digest(first)
    assert (again / "manifest.json").read_bytes() == (first / "manifest.json").read_bytes()


def test_other_seed_differs(samples: list[Sample], tmp_path: Path) -> None:
    other = synthcxr.load(tmp_path, "test", seed=1, n=N, size=SIZE)
    ref = {s.meta["index"]: s for s in samples}
    assert all(s.id.startswith("synthcxr-s1-") and "/s1/" in s.image.key for s in other)
    same_pixels = sum(np.array_equal(_pixels(s), _pixels(ref[s.meta["index"]])) for s in other[:10])
    assert same_pixels == 0
    same_reports = sum(s.sections == ref[s.meta["index"]].sections for s in other)
    assert same_reports <= len(other) // 10


def test_image_content_does_not_depend_on_n(samples: list[Sample], tmp_path: Path) -> None:
    small = synthcxr.generate(tmp_path, seed=0, n=10, size=SIZE)
    by_index = {s.meta["index"]: s for s in samples}
    for k in range(10):
        assert (small / "images" / f"{k:05d}.png").read_bytes() == Path(by_index[k].image.path).read_bytes()


def test_second_load_reuses_the_folder(root: Path, samples: list[Sample]) -> None:
    folder = root / f"v{VERSION}-s0-n{N}-{SIZE}px"
    manifest = folder / "manifest.json"
    image = Path(samples[0].image.path)
    before = (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns)
    again = synthcxr.load(root, "val", n=N, size=SIZE)
    assert (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns) == before
    assert synthcxr.generate(root, seed=0, n=N, size=SIZE) == folder
    assert (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns) == before
    assert [s.id for s in again] == [s.id for s in samples if s.split == "val"]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_incomplete_folder_is_regenerated(tmp_path: Path) -> None:
    folder = tmp_path / f"v{VERSION}-s3-n8-{SIZE}px"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "00000.png").write_bytes(b"half written")  # a crash, no manifest
    samples = synthcxr.load(tmp_path, "train", seed=3, n=8, size=SIZE)
    assert (folder / "manifest.json").is_file()
    assert len(list((folder / "images").glob("*.png"))) == 8
    assert all(s.image.load().size == (SIZE, SIZE) for s in samples)


def test_concurrent_generation_publishes_one_complete_folder(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        folders = list(pool.map(lambda _: synthcxr.generate(tmp_path, seed=4, n=6, size=64), range(3)))
    assert len(set(folders)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"v{VERSION}-s4-n6-64px"]  # no temporary leftovers
    assert len(list((folders[0] / "images").glob("*.png"))) == 6
    assert len(json.loads((folders[0] / "manifest.json").read_text())["records"]) == 6


def test_options_may_be_digit_strings(root: Path, splits: dict[str, list[Sample]]) -> None:
    xs = synthcxr.load(str(root), "val", seed="0", n=str(N), size=str(SIZE))
    assert [s.id for s in xs] == [s.id for s in splits["val"]]
    with pytest.raises(BenchError, match="n must be an integer"):
        synthcxr.load(root, "val", n="many")


def test_default_root_is_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    xs = synthcxr.load(None, "test", seed=5, n=10, size=64)
    expected = tmp_path / "cache" / "synthcxr" / f"v{VERSION}-s5-n10-64px"
    assert (expected / "manifest.json").is_file()
    assert all(Path(s.image.path).parent == expected / "images" for s in xs)


def test_parallel_generation_matches_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_SYNTHCXR_WORKERS", "1")
    serial = synthcxr.generate(tmp_path / "a", seed=2, n=12, size=64)
    monkeypatch.setenv("BENCH_SYNTHCXR_WORKERS", "2")
    monkeypatch.setattr(synthcxr, "_CHUNK", 5)
    parallel = synthcxr.generate(tmp_path / "b", seed=2, n=12, size=64)
    assert _digest(serial) == _digest(parallel)
    assert (serial / "manifest.json").read_bytes() == (parallel / "manifest.json").read_bytes()


# ----------------------------------------------------------------------------- splits and distribution


def test_splits_are_disjoint_and_70_10_20(splits: dict[str, list[Sample]]) -> None:
    ids = {name: {s.id for s in xs} for name, xs in splits.items()}
    assert {name: len(v) for name, v in ids.items()} == {"train": 84, "val": 12, "test": 24}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    indices = sorted(s.meta["index"] for xs in splits.values() for s in xs)
    assert indices == list(range(N))
    assert all(s.split == name for name, xs in splits.items() for s in xs)
    # a seeded permutation, not the first 70 % of the indices
    assert sorted(s.meta["index"] for s in splits["test"]) != list(range(N - 24, N))


def test_finding_distribution() -> None:
    rng_counts = np.zeros(4)
    prevalence = dict.fromkeys(FINDINGS, 0)
    hedged = positives = 0
    n = 3000
    for index in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([0, index]).spawn(3)[0])
        specs = synthcxr.sample_findings(rng)
        rng_counts[len(specs)] += 1
        for f in specs:
            prevalence[f.name] += 1
            positives += 1
            hedged += f.hedged
    share = rng_counts / n
    assert abs(share[0] - 0.25) < 0.03 and abs(share[1] - 0.45) < 0.03 and share[2] + share[3] > 0.25
    assert all(count / n >= 0.08 for count in prevalence.values()), prevalence
    assert 0.05 <= hedged / positives <= 0.08


# ----------------------------------------------------------------------------- labels, boxes, text


def test_labels_follow_truth_and_hedging(samples: list[Sample]) -> None:
    for s in samples:
        truth = s.meta["truth"]
        for f in FINDINGS:
            expected = 0 if not truth[f] else (-1 if f in s.meta["hedged"] else 1)
            assert s.labels[f] == expected, (s.id, f)
        assert s.labels[NO_FINDING] == int(not any(truth[f] for f in FINDINGS))
        assert set(s.meta["severity"]) == set(s.meta["location"]) == {f for f in FINDINGS if truth[f]}
    assert any(s.labels[NO_FINDING] == 1 for s in samples)
    assert any(-1 in s.labels.values() for s in samples)


def test_every_present_finding_has_a_box_inside_the_image(samples: list[Sample]) -> None:
    for s in samples:
        boxed = {b.label for b in s.boxes}
        assert boxed == {f for f in FINDINGS if s.meta["truth"][f]}, s.id
        for b in s.boxes:
            assert b.w >= 1 and b.h >= 1
            assert b.x >= 0 and b.y >= 0 and b.x + b.w <= SIZE and b.y + b.h <= SIZE
        for f in ("Pleural Effusion", "Pneumothorax", "Atelectasis"):
            if s.meta["truth"][f]:
                n_boxes = sum(b.label == f for b in s.boxes)
                assert n_boxes == (2 if s.meta["side"][f] == "both" else 1), (s.id, f)
        if s.meta["truth"]["Edema"]:
            assert sum(b.label == "Edema" for b in s.boxes) == 2


def test_box_side_matches_the_reported_side(samples: list[Sample]) -> None:
    # radiological convention: the patient's right lung is on the image's left
    checked = 0
    for s in samples:
        for b in s.boxes:
            side = s.meta["side"].get(b.label)
            if side in ("right", "left"):
                centre = b.x + b.w / 2
                assert (centre < SIZE / 2) == (side == "right"), (s.id, b)
                checked += 1
    assert checked > 10


def test_cardiothoracic_ratio(samples: list[Sample]) -> None:
    for s in samples:
        if s.labels["Cardiomegaly"] == 1:
            assert s.meta["ctr"] > 0.5
        elif s.labels["Cardiomegaly"] == 0:
            assert s.meta["ctr"] < 0.5


def test_report_agrees_with_labels(samples: list[Sample]) -> None:
    negated = 0
    for s in samples:
        mentions = mention_labels(s.report)
        for f in FINDINGS:
            label = s.labels[f]
            if label == 1:
                assert mentions.get(f) == {1}, (s.id, f, s.report)
            elif label == -1:
                assert mentions.get(f) == {-1}, (s.id, f, s.report)
            else:
                assert mentions.get(f, {0}) == {0}, (s.id, f, s.report)
                negated += f in mentions
        normal = re.search(NORMAL_IMPRESSION, s.sections["impression"].lower()) is not None
        assert normal == (s.labels[NO_FINDING] == 1), (s.id, s.sections["impression"])
    assert negated > len(samples)  # explicit negations are common


def test_reports_name_findings_and_vary(samples: list[Sample]) -> None:
    canonical = positive = 0
    for s in samples:
        for f in FINDINGS:
            if s.labels[f] == 1:
                positive += 1
                canonical += f.lower() in s.report.lower()
    assert canonical / positive >= 0.6
    assert len({s.sections["findings"] for s in samples}) >= 0.95 * len(samples)
    normal_impressions = {s.sections["impression"] for s in samples if s.labels[NO_FINDING] == 1}
    assert len(normal_impressions) >= 3
    assert len({s.sections["indication"] for s in samples}) > len(samples) // 2


def test_location_and_severity_appear_in_the_report(samples: list[Sample]) -> None:
    for s in samples:
        text = s.report.lower()
        for f, side in s.meta["side"].items():
            if side in ("right", "left") and s.labels[f] == 1:
                assert side in text, (s.id, f)
        for f, severity in s.meta["severity"].items():
            words = {"severe": ("severe", "marked"), "large": ("large", "marked")}.get(severity, (severity,))
            grades = {"mild", "moderate", "severe", "small", "large"}
            if s.labels[f] == 1 and f != "Cardiomegaly":
                sentences = [x for x in re.split(r"(?<=\.)\s+", text) if re.search(MENTION[f], x)]
                mentioned = [w for x in sentences for w in grades | {"marked"} if w in x]
                if mentioned:  # some phrasings give no grade; a stated grade must be the right one
                    assert any(w in mentioned for w in words), (s.id, f, sentences)


# ----------------------------------------------------------------------------- questions


def test_qa_agrees_with_labels_and_meta(samples: list[Sample]) -> None:
    parenchyma = ("Consolidation", "Atelectasis", "Edema", "Nodule")
    kinds = set()
    for s in samples:
        qa = s.meta["qa"]
        assert 3 <= len(qa) <= 5
        assert len({q["question"] for q in qa}) == len(qa)
        for q in qa:
            kinds.add(q["kind"])
            f = q["finding"]
            assert q["answer_type"] == ("closed" if q["answer"] in ("yes", "no") else "open")
            if q["kind"] == "presence":
                assert q["answer"] == {1: "yes", 0: "no"}[s.labels[f]]
            elif q["kind"] == "absence":
                assert q["answer"] == {1: "no", 0: "yes"}[s.labels[f]]
            elif q["kind"] == "normal":
                assert q["answer"] == ("yes" if s.labels[NO_FINDING] == 1 else "no")
            elif q["kind"] == "lungs_clear":
                assert q["answer"] == ("yes" if all(s.labels[p] == 0 for p in parenchyma) else "no")
            elif q["kind"] == "location":
                assert q["answer"] == s.meta["location"][f] and f.lower() in q["question"].lower()
            elif q["kind"] == "side":
                assert q["answer"] == s.meta["side"][f] and q["answer"] in ("left", "right", "both")
            elif q["kind"] == "severity":
                assert q["answer"] == s.meta["severity"][f]
            elif q["kind"] == "abnormality":
                present = [x for x in FINDINGS if s.meta["truth"][x]]
                assert q["answer"] == (present[0].lower() if present else "none")
            else:
                raise AssertionError(q)
    assert kinds >= {"presence", "severity", "abnormality", "location", "side"}


def test_closed_answers_are_balanced(samples: list[Sample]) -> None:
    answers = [q["answer"] for s in samples for q in s.meta["qa"] if q["answer_type"] == "closed"]
    assert 0.35 <= answers.count("yes") / len(answers) <= 0.65


def test_vqa_view(root: Path, splits: dict[str, list[Sample]]) -> None:
    vqa = synthcxr.load(root, "test", n=N, size=SIZE, view="vqa")
    images = {s.id: s for s in splits["test"]}
    assert len(vqa) == sum(len(s.meta["qa"]) for s in images.values())
    assert len({q.id for q in vqa}) == len(vqa)
    for q in vqa:
        image_id, _, k = q.id.rpartition("-q")
        src = images[image_id]
        item = src.meta["qa"][int(k)]
        assert (q.question, q.answer, q.answer_type) == (
            item["question"],
            item["answer"],
            item["answer_type"],
        )
        assert q.images == src.images and q.labels == src.labels and q.boxes == src.boxes
        assert q.split == "test" and q.dataset == "synthcxr"
    assert {q.answer_type for q in vqa} == {"open", "closed"}


# ----------------------------------------------------------------------------- pixels


def _box_mean(px: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    return float(px[y : y + h, x : x + w].mean())


@pytest.mark.parametrize(
    ("finding", "sign"),
    [("Pleural Effusion", 1), ("Consolidation", 1), ("Nodule", 1), ("Cardiomegaly", 1), ("Edema", 1),
     ("Atelectasis", 1), ("Pneumothorax", -1)],
)  # fmt: skip
def test_finding_boxes_differ_from_normal_images(samples: list[Sample], finding: str, sign: int) -> None:
    """The box region is brighter (darker for pneumothorax) than the same region of normal images."""
    normals = [_pixels(s) for s in samples if s.labels[NO_FINDING] == 1]
    diffs = []
    for s in samples:
        if s.labels[finding] != 1:
            continue
        px = _pixels(s)
        for b in s.boxes:
            if b.label == finding:
                box = (int(b.x), int(b.y), int(b.w), int(b.h))
                reference = np.mean([_box_mean(n, box) for n in normals])
                diffs.append(_box_mean(px, box) - reference)
    assert len(diffs) >= 3, finding
    assert sign * np.mean(diffs) > 3.0, (finding, np.mean(diffs))


@pytest.mark.parametrize(
    ("finding", "side", "zone"),
    [("Pleural Effusion", "left", None), ("Pneumothorax", "right", None), ("Consolidation", "right", "lower"),
     ("Nodule", "left", "upper"), ("Atelectasis", "right", "lower"), ("Edema", "both", None)],
)  # fmt: skip
def test_hedged_findings_are_drawn_subtler(finding: str, side: str, zone: str | None) -> None:
    from dataclasses import replace

    from bench.data.synthcxr_draw import FindingSpec, render, sample_anatomy

    def draw(findings: list[FindingSpec]) -> tuple[np.ndarray, dict]:
        anatomy = replace(sample_anatomy(np.random.default_rng(7)), noise=0.0)  # only the finding differs
        img, boxes, _ = render(anatomy, findings, 160, np.random.default_rng(8))
        return img.astype(np.float64), boxes

    grade = "mild" if finding in ("Atelectasis", "Edema") else "small"
    normal, _ = draw([])
    changes = {}
    for hedged in (False, True):
        img, boxes = draw([FindingSpec(finding, side=side, zone=zone, severity=grade, hedged=hedged)])
        area = sum(w * h for _, _, w, h in boxes[finding])
        changes[hedged] = (area, float(np.abs(img - normal).sum()))
    assert changes[True][0] <= changes[False][0]  # smaller (or equal) box
    assert 0 < changes[True][1] < changes[False][1]  # visible, but less change to the image


def test_images_have_chest_anatomy(samples: list[Sample]) -> None:
    px = np.mean([_pixels(s) for s in samples if s.labels[NO_FINDING] == 1], axis=0)
    q = SIZE // 4
    lung_r, lung_l = px[q : 2 * q, q - 8 : q + 8].mean(), px[q : 2 * q, 3 * q - 8 : 3 * q + 8].mean()
    spine = px[q : 2 * q, 2 * q - 3 : 2 * q + 3].mean()
    outside = px[:, :4].mean()
    abdomen = px[-q // 2 :, q : 3 * q].mean()
    assert lung_r < spine - 40 and lung_l < spine - 40  # dark lungs, bright mediastinum
    assert outside < lung_r  # air outside the body is darkest
    assert abdomen > lung_r + 40
    # heart shadow mostly on the image's right
    heart_row = px[int(SIZE * 0.55) : int(SIZE * 0.62)]
    assert heart_row[:, SIZE // 2 + 8 : SIZE // 2 + 24].mean() > heart_row[:, SIZE // 2 - 24 : SIZE // 2 - 8].mean()


def test_manifest_is_json_with_all_records(root: Path) -> None:
    manifest = json.loads((root / f"v{VERSION}-s0-n{N}-{SIZE}px" / "manifest.json").read_text())
    assert manifest["version"] == VERSION and manifest["n"] == N and manifest["size"] == SIZE
    assert manifest["fingerprint"] == synthcxr.fingerprint(0, N, SIZE)
    assert len(manifest["records"]) == N
    assert manifest["splits"] == {"train": 84, "val": 12, "test": 24}
