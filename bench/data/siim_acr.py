"""SIIM-ACR Pneumothorax Segmentation (``siim_acr``): chest radiographs with pneumothorax masks.

Two releases are read as they unpack:

- **Stage 1** (the 2019 competition release, also on academictorrents / Kaggle mirrors)::

      train-rle.csv                      ImageId, EncodedPixels   (note the space in the header)
      dicom-images-train/<Study>/<Series>/<ImageId>.dcm

  12,954 rows for 12,047 images (2,669 with pneumothorax). ``-1`` (written ``" -1"`` in the
  original file) = no pneumothorax; several rows for one image = several masks, united. The RLE is
  *relative* (each start counts from the end of the previous run), column-major on 1024×1024.
- **Stage 2** (Kaggle ``siim-acr-pneumothorax-segmentation``)::

      stage_2_train.csv                  ImageId,EncodedPixels
      stage_2_images/ID_*.dcm  and/or the stage 1 image folders

  Whether ``stage_2_train.csv`` keeps the relative RLE or uses the common absolute (1-based) RLE is
  not documented in any source we found, so ``rle="auto"`` (default) decides from the strings
  (:func:`bench.data.rle.detect_convention`: absolute starts increase, relative offsets restart at
  each column) and records the result in ``meta["rle_convention"]``; ``rle="relative"`` or
  ``"absolute"`` forces one.

Every ``.dcm`` under the root is indexed once by walking the folders (the stage 1 tree nests
Study/Series folders), so images may sit in any of the folders above.

One sample per image: label ``Pneumothorax`` (1/0), ``meta["rle"]`` the image's RLE strings (empty
for negatives), and one box ``Pneumothorax`` = the bounding box of the union of its masks, in the
pixels of the 1024×1024 image. There is no labelled test split: images (the CSV has no patient id)
are split with ``seed`` by ``split_scheme`` — ``"llava_radz"`` (default) 0.6/0.2/0.2, ``"gloria"``
0.7/0.15/0.15 (GLoRIA / MGCA). LLaVA-RadZ quotes 12,954 "images": that is the row count of
``train-rle.csv``; the unique images are 12,047.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from bench.data import rle as rlelib
from bench.data import subsets
from bench.data.common import CheckReport, count_splits, dicom_ref, read_table, seeded_split
from bench.interfaces import BenchError, Box, Sample

DATASET = "siim_acr"
SPLITS = ("train", "val", "test")
LABEL = "Pneumothorax"
STAGE1_FILES = ("train-rle.csv", "train-rle.csv.gz")
STAGE2_FILES = ("stage_2_train.csv", "stage_2_train.csv.gz")
COLUMNS = ("ImageId", "EncodedPixels")
STAGE1_IMAGES = "dicom-images-train"
STAGE2_IMAGES = "stage_2_images"
MASK_SIZE = 1024
SPLIT_SCHEMES: dict[str, dict[str, float]] = {
    "llava_radz": {"train": 0.6, "val": 0.2, "test": 0.2},
    "gloria": {"train": 0.7, "val": 0.15, "test": 0.15},
}
RLE_OPTIONS = ("auto", rlelib.RELATIVE, rlelib.ABSOLUTE)


def find_label_file(root: Path, stage: str = "auto") -> tuple[Path, str]:
    """The RLE file and its stage ("1" or "2")."""
    candidates = {"1": STAGE1_FILES, "2": STAGE2_FILES}
    if stage not in ("auto", "1", "2"):
        raise BenchError(f"siim_acr: stage must be 'auto', '1' or '2', not {stage!r}")
    for st in ("1", "2") if stage == "auto" else (stage,):
        for name in candidates[st]:
            if (root / name).is_file():
                return root / name, st
    wanted = " or ".join(STAGE1_FILES[:1] + STAGE2_FILES[:1]) if stage == "auto" else candidates[stage][0]
    raise BenchError(f"{root}: missing {wanted} (the SIIM-ACR mask file)")


def read_masks(root: Path, stage: str = "auto", rle: str = "auto") -> dict[str, Any]:
    """Parse the RLE file: {"path", "stage", "convention", "images": {ImageId: [rle, ...]}}."""
    if rle not in RLE_OPTIONS:
        raise BenchError(f"siim_acr: rle must be one of {', '.join(RLE_OPTIONS)}, not {rle!r}")
    path, st = find_label_file(root, stage)
    frame = read_table(path, COLUMNS)  # strips the header's " EncodedPixels" and the cells' " -1"
    images: OrderedDict[str, list[str]] = OrderedDict()
    negative: set[str] = set()
    for i, (image_id, encoded) in enumerate(
        zip(frame["ImageId"].tolist(), frame["EncodedPixels"].tolist(), strict=True), start=2
    ):
        where = f"{path}, line {i}"
        if not image_id:
            raise BenchError(f"{where}: empty ImageId")
        if not encoded:
            raise BenchError(f"{where}: empty EncodedPixels; expected -1 (no pneumothorax) or an RLE mask")
        masks = images.setdefault(image_id, [])
        if rlelib.is_empty(encoded):
            if masks:
                raise BenchError(
                    f"{where}: image {image_id} is marked -1 (no pneumothorax) but has a mask on another row"
                )
            negative.add(image_id)
        else:
            if image_id in negative:
                raise BenchError(f"{where}: image {image_id} has a mask but is marked -1 on another row")
            masks.append(encoded)
    if st == "1" and rle == "auto":
        convention = rlelib.RELATIVE  # documented by the organisers' mask_functions.py
        reason = "stage 1 train-rle.csv: relative RLE"
    elif rle == "auto":
        detected, why = rlelib.detect_convention(m for ms in images.values() for m in ms)
        convention = detected or rlelib.RELATIVE
        reason = f"detected: {why}" if detected else f"undecided ({why}); using relative"
    else:
        convention, reason = rle, "given by the rle option"
    size = MASK_SIZE * MASK_SIZE
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for image_id, masks in images.items():
        if not masks:
            continue
        try:
            run_arrays = [rlelib.runs(m, convention, size) for m in masks]
        except rlelib.RLEError as exc:
            raise BenchError(
                f"{path}: image {image_id}: the EncodedPixels mask is not a valid {convention} RLE on "
                f"{MASK_SIZE}x{MASK_SIZE} ({exc})"
            ) from None
        box = rlelib.bbox(run_arrays, MASK_SIZE)
        assert box is not None  # non-empty masks have runs
        boxes[image_id] = box
    return {"path": path, "stage": st, "convention": convention, "reason": reason, "images": images, "boxes": boxes}


def index_dicoms(root: Path) -> dict[str, Path]:
    """{ImageId: path} for every ``*.dcm`` under ``root`` (one walk)."""
    out: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            if name.lower().endswith(".dcm"):
                out.setdefault(name[:-4], Path(folder) / name)
    return out


def load(
    root: str | Path,
    split: str,
    *,
    split_scheme: str = "llava_radz",
    seed: int = 0,
    stage: str = "auto",
    rle: str = "auto",
    check_images: bool = True,
    **options: Any,
) -> list[Sample]:
    """Samples of one seeded split; ``train_fraction`` subsets the train split (stratified on
    Pneumothorax). ``check_images=False`` skips indexing the DICOM files (paths then point to
    ``dicom-images-train/<ImageId>.dcm`` or ``stage_2_images/<ImageId>.dcm``)."""
    sub = subsets.pop_options(options)
    if options:
        raise BenchError(f"siim_acr: unknown option(s) {sorted(options)}")
    if split not in SPLITS:
        raise BenchError(f"siim_acr has no split {split!r}; valid splits: {', '.join(SPLITS)}")
    if split_scheme not in SPLIT_SCHEMES:
        raise BenchError(f"siim_acr: unknown split_scheme {split_scheme!r}; valid: {', '.join(SPLIT_SCHEMES)}")
    root = Path(root)
    parsed = read_masks(root, stage, rle)
    images: dict[str, list[str]] = parsed["images"]
    assign = seeded_split(list(images), SPLIT_SCHEMES[split_scheme], seed)
    chosen = [i for i in images if assign[i] == split]
    paths = _resolve_images(root, parsed, chosen, check_images)
    samples = []
    for image_id in chosen:
        masks = images[image_id]
        box = parsed["boxes"].get(image_id)
        samples.append(
            Sample(
                id=image_id,
                dataset=DATASET,
                split=split,
                images=[dicom_ref(paths[image_id], key=f"{DATASET}/{image_id}")],
                labels={LABEL: int(bool(masks))},
                boxes=[Box(LABEL, *map(float, box))] if box else [],
                meta={
                    "rle": list(masks),
                    "rle_convention": parsed["convention"],
                    "mask_size": [MASK_SIZE, MASK_SIZE],
                    "stage": parsed["stage"],
                    "split_scheme": split_scheme,
                    "split_fractions": dict(SPLIT_SCHEMES[split_scheme]),
                    "split_seed": seed,
                },
            )
        )
    return subsets.apply(samples, split, sub, target_labels=(LABEL,))


def _resolve_images(root: Path, parsed: dict[str, Any], ids: list[str], check: bool) -> dict[str, Path]:
    folder = STAGE1_IMAGES if parsed["stage"] == "1" else STAGE2_IMAGES
    if not check:
        return {i: root / folder / f"{i}.dcm" for i in ids}
    index = index_dicoms(root)
    if not index:
        raise BenchError(f"{root}: no .dcm images found; expected {folder}/ (see `bench data info siim_acr`)")
    missing = [i for i in ids if i not in index]
    if missing:
        raise BenchError(
            f"{root}: {len(missing)} of {len(ids)} images listed in {parsed['path'].name} have no .dcm file "
            f"under the folder (e.g. {missing[0]}.dcm); expected {folder}/..."
        )
    return {i: index[i] for i in ids}


def check(root: str | Path, **options: Any) -> CheckReport:
    root = Path(root)
    report = CheckReport(DATASET)
    try:
        read_masks(root, options.get("stage", "auto"), options.get("rle", "auto"))
    except BenchError as exc:
        report.problems.append(str(exc))
        return report
    return count_splits(report, root, load, SPLITS, sample_images=5, stop_at_error=True, **options)
