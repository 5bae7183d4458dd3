"""``synthcxr``: a deterministic synthetic chest-radiograph dataset, generated from a seed.

Every protocol of the harness can run offline on it. It behaves like a real dataset: PNG files
on disk (read back lazily through ``ImageRef(path=...)``), report-derived labels (1 stated,
0 absent, -1 hedged), free-text reports, finding boxes and question-answer pairs.

Layout of one generated dataset (``<parent>/v{VERSION}-s{seed}-n{n}-{size}px/``)::

    images/00000.png ...    grayscale (mode "L") radiographs, size x size
    manifest.json           every record (split, labels, report, boxes, meta); written last

A dataset folder is complete when its manifest exists: generation writes into a temporary
sibling folder and renames it into place, so a crash or two concurrent processes never leave a
half-written dataset that looks complete.

Everything about image ``index`` (pixels, findings, report, questions) comes from the seed
sequence ``[seed, index]`` alone (``numpy.random.SeedSequence([seed, index])``, one child stream
each for the case, the text and the pixels), so it does not depend on ``n``, on the number of
worker processes or on generation order; the split assignment (a seeded permutation of
``range(n)``) is the only thing that depends on ``n``. Sides in labels and text are the
patient's: the patient's right lung is on the image's left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import synthcxr_draw as draw
from bench.data import synthcxr_text as text
from bench.data.synthcxr_draw import FindingSpec
from bench.interfaces import NEGATIVE, POSITIVE, UNCERTAIN, BenchError, Box, ImageRef, Sample, stable_hash

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
    "Pneumothorax",
    "Nodule",
)
NO_FINDING = "No Finding"
LABELS: tuple[str, ...] = (*FINDINGS, NO_FINDING)
VERSION = "1"  # bump when the generator changes (part of the cache folder name and image keys)

DATASET = "synthcxr"
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
VIEWS = ("image", "vqa")
MANIFEST = "manifest.json"
_FORMAT = 1  # manifest layout

# share of images with 0, 1, 2, 3 findings
_N_FINDINGS_P = (0.25, 0.45, 0.20, 0.10)
# relative frequency of each finding when choosing which ones an image has
_WEIGHT = {
    "Atelectasis": 1.0,
    "Cardiomegaly": 1.0,
    "Consolidation": 0.9,
    "Edema": 0.85,
    "Pleural Effusion": 1.1,
    "Pneumothorax": 0.75,
    "Nodule": 0.75,
}
HEDGE_P = 0.065  # chance that a present finding is subtle and reported with a hedge (label -1)
_MIN_SIZE = 64
_PARALLEL_MIN = 300  # below this many images generation runs in-process
_CHUNK = 50  # images per worker task


# ----------------------------------------------------------------------------- public API


def fingerprint(seed: int = 0, n: int = 2000, size: int = 224) -> str:
    """Identifies the generated dataset (generator version + parameters), for cache keys."""
    return stable_hash({"dataset": DATASET, "version": VERSION, "seed": seed, "n": n, "size": size})


def folder_name(seed: int, n: int, size: int) -> str:
    return f"v{VERSION}-s{seed}-n{n}-{size}px"


def default_parent() -> Path:
    """``$BENCH_CACHE_DIR/synthcxr`` (``~/.cache/medvlbench/synthcxr`` by default)."""
    base = os.environ.get("BENCH_CACHE_DIR") or "~/.cache/medvlbench"
    return Path(base).expanduser() / DATASET


def load(
    root: str | Path | None,
    split: str,
    *,
    seed: int = 0,
    n: int = 2000,
    size: int = 224,
    view: str = "image",
) -> list[Sample]:
    """Samples of one split, generating the dataset first when it is not on disk yet.

    ``root=None`` uses the cache folder ``$BENCH_CACHE_DIR/synthcxr``; a given ``root`` holds the
    versioned dataset folder. ``view="image"`` gives one sample per image, ``view="vqa"`` one per
    question-answer pair (ids ``{image_id}-q{k}``).
    """
    if split not in SPLITS:
        raise BenchError(f"synthcxr has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    if view not in VIEWS:
        raise BenchError(f"synthcxr has no view {view!r}; valid views: {', '.join(VIEWS)}")
    seed, n, size = _check_params(seed, n, size)
    parent = default_parent() if root is None else Path(root).expanduser()
    folder = generate(parent, seed=seed, n=n, size=size)
    manifest = _read_manifest(folder)
    samples = [_image_sample(rec, folder, seed, size) for rec in manifest["records"] if rec["split"] == split]
    if view == "image":
        return samples
    return [q for s in samples for q in _vqa_samples(s)]


def generate(directory: Path, *, seed: int, n: int, size: int) -> Path:
    """Write the dataset into ``directory/v{VERSION}-s{seed}-n{n}-{size}px`` and return that folder.

    Idempotent: a complete folder (its manifest exists) is left untouched.
    """
    seed, n, size = _check_params(seed, n, size)
    parent = Path(directory).expanduser()
    final = parent / folder_name(seed, n, size)
    if _is_complete(final, n):
        return final
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create the synthcxr folder {parent}: {exc}") from None
    _remove_stale_temps(parent, final.name)
    tmp = parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_dataset(tmp, seed, n, size)
        _publish(tmp, final, n)
    except OSError as exc:
        raise BenchError(f"cannot write the synthcxr dataset under {parent}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- generation


def _write_dataset(tmp: Path, seed: int, n: int, size: int) -> None:
    """Images and manifest (last) into the temporary folder ``tmp``."""
    (tmp / "images").mkdir(parents=True)
    records = _generate_records(tmp, seed, n, size)
    manifest = {
        "format": _FORMAT,
        "dataset": DATASET,
        "version": VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "fingerprint": fingerprint(seed, n, size),
        "splits": {s: sum(r["split"] == s for r in records) for s in SPLITS},
        "records": records,
    }
    _write_json_atomic(tmp / MANIFEST, manifest)


def _as_int(name: str, value: Any) -> int:
    """An integer option; digit strings (e.g. from the command line) are accepted."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise BenchError(f"synthcxr option {name} must be an integer, got {value!r}")
    return int(value)


def _check_params(seed: Any, n: Any, size: Any) -> tuple[int, int, int]:
    seed, n, size = (_as_int(name, value) for name, value in (("seed", seed), ("n", n), ("size", size)))
    if seed < 0:
        raise BenchError(f"synthcxr seed must be >= 0, got {seed}")
    if n < 1:
        raise BenchError(f"synthcxr n must be >= 1, got {n}")
    if size < _MIN_SIZE:
        raise BenchError(f"synthcxr size must be >= {_MIN_SIZE} pixels, got {size}")
    return seed, n, size


def split_of(seed: int, n: int) -> list[str]:
    """Split name of every index: a seeded permutation, 70/10/20 train/val/test (exact counts)."""
    order = np.random.default_rng([seed, n, 0x5C1]).permutation(n)
    n_train = round(n * SPLIT_FRACTIONS["train"])
    n_val = round(n * SPLIT_FRACTIONS["val"])
    out = ["test"] * n
    for rank, idx in enumerate(order):
        out[int(idx)] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return out


def sample_findings(rng: np.random.Generator) -> list[FindingSpec]:
    """Which findings one image has, with side, zone, severity and hedging."""
    k = int(rng.choice(len(_N_FINDINGS_P), p=_N_FINDINGS_P))
    chosen: list[str] = []
    weights = dict(_WEIGHT)
    for _ in range(k):
        names = [nm for nm in FINDINGS if nm not in chosen]
        w = np.array([weights[nm] for nm in names])
        name = names[int(rng.choice(len(names), p=w / w.sum()))]
        chosen.append(name)
        if name == "Edema":  # edema often comes with a large heart and effusions
            weights["Cardiomegaly"] *= 2.0
            weights["Pleural Effusion"] *= 2.0
    specs = []
    for name in FINDINGS:  # fixed order, so drawing order does not depend on the choice order
        if name not in chosen:
            continue
        hedged = bool(rng.random() < HEDGE_P)
        graded = name in ("Atelectasis", "Cardiomegaly", "Edema")
        levels = ("mild", "moderate", "severe") if graded else ("small", "moderate", "large")
        severity = levels[int(rng.choice(3, p=(0.4, 0.4, 0.2)))]
        side = zone = None
        kind = ""
        if name == "Pleural Effusion":
            side = ("right", "left", "both")[int(rng.choice(3, p=(0.38, 0.32, 0.30)))]
        elif name == "Pneumothorax":
            side = ("right", "left", "both")[int(rng.choice(3, p=(0.5, 0.46, 0.04)))]
        elif name == "Consolidation":
            side = "right" if rng.random() < 0.55 else "left"
            zone = ("upper", "middle", "lower")[int(rng.choice(3, p=(0.2, 0.3, 0.5)))]
        elif name == "Nodule":
            side = "right" if rng.random() < 0.5 else "left"
            zone = ("upper", "middle", "lower")[int(rng.integers(3))]
        elif name == "Atelectasis":
            side = ("right", "left", "both")[int(rng.choice(3, p=(0.4, 0.4, 0.2)))]
            zone = "lower" if (side == "both" or rng.random() < 0.8) else "middle"
            wedge_p = {"mild": 0.0, "moderate": 0.3, "severe": 0.8}[severity]
            kind = "wedge" if rng.random() < wedge_p else "plate"
        elif name == "Edema":
            side = "both"
        if hedged:
            severity = levels[0]
        specs.append(FindingSpec(name=name, side=side, zone=zone, severity=severity, hedged=hedged, kind=kind))
    return specs


def make_record(seed: int, index: int, size: int) -> tuple[dict[str, Any], np.ndarray]:
    """Everything about one image: its record (without split) and its pixels."""
    ss = np.random.SeedSequence([seed, index])
    case_rng, text_rng, pixel_rng = (np.random.default_rng(s) for s in ss.spawn(3))
    findings = sample_findings(case_rng)
    anatomy = draw.sample_anatomy(case_rng)
    age = int(case_rng.integers(18, 91))
    sex = "M" if case_rng.random() < 0.5 else "F"

    pixels, boxes, measured = draw.render(anatomy, findings, size, pixel_rng)
    sections = text.write_report(findings, text_rng, age, sex)
    qa = text.make_qa(findings, FINDINGS, text_rng)

    present = {f.name: f for f in findings}
    labels: dict[str, int] = {}
    for name in FINDINGS:
        f = present.get(name)
        labels[name] = NEGATIVE if f is None else (UNCERTAIN if f.hedged else POSITIVE)
    labels[NO_FINDING] = POSITIVE if not findings else NEGATIVE
    truth = {name: int(name in present) for name in FINDINGS}
    truth[NO_FINDING] = int(not findings)
    meta = {
        "index": index,
        "seed": seed,
        "version": VERSION,
        "truth": truth,
        "location": {f.name: text.location(f) for f in findings},
        "side": {f.name: text.side_answer(f) for f in findings if f.side},
        "severity": {f.name: f.severity for f in findings},
        "hedged": sorted(f.name for f in findings if f.hedged),
        "findings": [asdict(f) for f in findings],
        "ctr": round(measured["ctr_measured"], 3),  # heart width / thoracic width, measured in pixels
        "age": age,
        "sex": sex,
        "view_position": "PA",
        "qa": qa,
    }
    box_list = [[name, *box] for name in FINDINGS for box in boxes.get(name, [])]
    record = {"index": index, "labels": labels, "sections": sections, "boxes": box_list, "meta": meta}
    return record, pixels


def _image_path(folder: Path, index: int) -> Path:
    return folder / "images" / f"{index:05d}.png"


def _write_chunk(folder: str, seed: int, size: int, indices: list[int]) -> list[dict[str, Any]]:
    from PIL import Image

    out = []
    for index in indices:
        record, pixels = make_record(seed, index, size)
        Image.fromarray(pixels).save(_image_path(Path(folder), index), compress_level=1)
        out.append(record)
    return out


def _worker_init() -> None:
    """Keep image-sized temporaries on the heap in worker processes (glibc only).

    Drawing allocates many ~200 KB arrays; above glibc's default mmap threshold each one is a
    fresh mmap, and the page faults cost about a third of the generation time.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 16 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _workers(n: int) -> int:
    env = os.environ.get("BENCH_SYNTHCXR_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise BenchError(f"BENCH_SYNTHCXR_WORKERS must be an integer, got {env!r}") from None
    if n < _PARALLEL_MIN:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _generate_records(folder: Path, seed: int, n: int, size: int) -> list[dict[str, Any]]:
    splits = split_of(seed, n)
    workers = _workers(n)
    if workers == 1:
        records = _write_chunk(str(folder), seed, size, list(range(n)))
    else:
        import multiprocessing as mp

        chunks = [list(range(i, min(n, i + _CHUNK))) for i in range(0, n, _CHUNK)]
        # fork where the platform has it: spawn would re-run an unguarded __main__ script
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = [pool.submit(_write_chunk, str(folder), seed, size, c) for c in chunks]
            records = [rec for fut in futures for rec in fut.result()]
    for rec in records:
        rec["split"] = splits[rec["index"]]
    return records


# ----------------------------------------------------------------------------- folders


def _is_complete(folder: Path, n: int) -> bool:
    if not (folder / MANIFEST).is_file():
        return False
    try:
        with os.scandir(folder / "images") as it:
            count = sum(1 for e in it if e.name.endswith(".png"))
    except OSError:
        return False
    return count == n


def _write_json_atomic(path: Path, obj: Any) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, separators=(",", ":"), sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, path)


def _publish(tmp: Path, final: Path, n: int) -> None:
    """Move a finished temporary folder into place (another process may have won the race)."""
    for _ in range(3):
        try:
            os.rename(tmp, final)
            return
        except OSError:
            if _is_complete(final, n):
                return  # a concurrent process finished first; ours is discarded by the caller
            if final.exists():  # an incomplete leftover (not ours): move it aside, then retry
                trash = final.with_name(f".trash-{final.name}-{uuid.uuid4().hex[:8]}")
                with contextlib.suppress(OSError):
                    os.rename(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                time.sleep(0.05)
    raise BenchError(f"cannot move the generated synthcxr dataset into {final}")


def _remove_stale_temps(parent: Path, name: str, max_age_s: float = 6 * 3600) -> None:
    """Delete temporary folders of crashed runs (older than ``max_age_s``)."""
    now = time.time()
    for entry in parent.glob(f".tmp-{name}-*"):
        try:
            if now - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read the synthcxr manifest {path}: {exc}; delete {folder} to regenerate") from None
    if manifest.get("format") != _FORMAT or manifest.get("version") != VERSION:
        raise BenchError(f"unexpected synthcxr manifest in {folder}; delete the folder to regenerate")
    return manifest


# ----------------------------------------------------------------------------- samples


def image_id(seed: int, index: int) -> str:
    return f"{DATASET}-s{seed}-{index:05d}"


def image_key(seed: int, index: int, size: int) -> str:
    return f"{DATASET}/v{VERSION}/s{seed}/{size}px/{index}"


def _image_sample(rec: dict[str, Any], folder: Path, seed: int, size: int) -> Sample:
    index = rec["index"]
    ref = ImageRef(key=image_key(seed, index, size), path=str(_image_path(folder, index)))
    return Sample(
        id=image_id(seed, index),
        dataset=DATASET,
        split=rec["split"],
        images=[ref],
        labels={k: rec["labels"][k] for k in LABELS},
        sections=dict(rec["sections"]),
        boxes=[Box(label=b[0], x=float(b[1]), y=float(b[2]), w=float(b[3]), h=float(b[4])) for b in rec["boxes"]],
        meta=rec["meta"],
    )


def _vqa_samples(s: Sample) -> list[Sample]:
    out = []
    for k, item in enumerate(s.meta["qa"]):
        meta = dict(s.meta)
        meta.update(image_id=s.id, qa_index=k, qa_kind=item.get("kind"), qa_finding=item.get("finding"))
        out.append(
            Sample(
                id=f"{s.id}-q{k}",
                dataset=s.dataset,
                split=s.split,
                images=list(s.images),
                labels=dict(s.labels),
                sections=dict(s.sections),
                boxes=list(s.boxes),
                question=item["question"],
                answer=item["answer"],
                answer_type=item["answer_type"],
                meta=meta,
            )
        )
    return out
