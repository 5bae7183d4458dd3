"""Derived 5-class sets: ``chexpert5x200`` (GLoRIA) and ``mimic5x200`` (MedCLIP).

Both keep images with exactly one of the five CheXpert competition findings — Atelectasis,
Cardiomegaly, Consolidation, Edema, Pleural Effusion — and draw ``per_class`` (200) of them per
class. An image is eligible for class *c* when, after the mapping below, its label for *c* is 1
and **every other observation except No Finding** (the other four classes and Enlarged
Cardiomediastinum, Lung Lesion, Lung Opacity, Pneumonia, Pneumothorax, Pleural Other, Fracture,
Support Devices) is exactly 0.

- ``chexpert5x200`` — GLoRIA's rule (``preprocess_chexpert_5x200_data`` of the GLoRIA code): the
  CheXpert **training** table (``train.csv``), frontal images only, blanks → 0, uncertain (-1)
  kept as -1, so an image with any uncertain observation drops out. GLoRIA sampled without a seed;
  ours is seeded (default 42).
- ``mimic5x200`` — MedCLIP's rule (its MIMIC-5x200 preprocessing script): MIMIC-CXR-JPG metadata
  joined with the **NegBio** labels on the study, blanks → 0 **and uncertain → 0**, the same
  one-hot test. MedCLIP draws from the whole release (every official split and every view, then
  removes the drawn images from its pre-training data) with numpy seed 42 and keeps a random half
  of 400 per class (so not exactly 200 each); ours draws exactly 200 per class with a seeded
  permutation, from every split and view by default (options ``source_splits``, ``views``).

Sampling: for class *k* (in the order above) the eligible ids are sorted and permuted with
``numpy.random.default_rng([seed, k])``; the first ``per_class`` are kept. The result does not
depend on file row order; the same seed gives the same ids, another seed different ones. Fewer
eligible images than ``per_class`` is an error naming the class and the count (``per_class`` can
be lowered for small copies). Every sample records ``meta["seed"]``, ``meta["per_class"]``,
``meta["class"]`` and ``meta["subset_ids_hash"]`` (hash of all chosen ids), and its ``labels`` are
one-hot over the five classes (the source labels are kept in ``meta["source_labels"]``).

One split, ``test``. Reports are attached when present (MIMIC-CXR reports; CheXpert Plus for
CheXpert); ``sections["report"]`` is findings followed by impression — the text MedCLIP retrieves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import chexpert, mimic_cxr
from bench.data.common import CheckReport, ids_hash
from bench.interfaces import BenchError, Sample

CLASSES: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
NO_FINDING = "No Finding"
DEFAULT_SEED = 42
PER_CLASS = 200


# --------------------------------------------------------------------------- the rule


def numeric_labels(frame: Any, columns: Sequence[str], *, uncertain: str) -> np.ndarray:
    """Label cells as numbers: blank (or a study without labels) → 0; -1 → -1 (``uncertain="keep"``)
    or 0 (``uncertain="negative"``)."""
    if uncertain not in ("keep", "negative"):
        raise ValueError(f"uncertain must be 'keep' or 'negative', not {uncertain!r}")
    unc = -1.0 if uncertain == "keep" else 0.0
    mapping = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "": 0.0, "-1.0": unc, "-1": unc}
    out = np.zeros((len(frame), len(columns)))
    for j, col in enumerate(columns):
        out[:, j] = frame[col].map(mapping).fillna(0.0).to_numpy(dtype=float)
    return out


def eligible_masks(
    frame: Any, observations: Sequence[str], *, uncertain: str, classes: Sequence[str] = CLASSES
) -> dict[str, np.ndarray]:
    """Per class, the rows with that class 1 and every other observation except No Finding 0."""
    checked = [c for c in observations if c != NO_FINDING]
    missing = [c for c in classes if c not in checked]
    if missing:
        raise ValueError(f"classes {missing} are not among the observations")
    values = numeric_labels(frame, checked, uncertain=uncertain)
    out = {}
    for cls in classes:
        j = checked.index(cls)
        others = np.delete(values, j, axis=1)
        out[cls] = (values[:, j] == 1.0) & np.all(others == 0.0, axis=1)
    return out


def choose(ids_by_class: dict[str, Sequence[str]], *, per_class: int, seed: int, what: str) -> dict[str, list[str]]:
    """Seeded draw of exactly ``per_class`` ids per class (input order does not matter)."""
    chosen: dict[str, list[str]] = {}
    for k, (cls, ids) in enumerate(ids_by_class.items()):
        unique = sorted(set(ids))
        if len(unique) < per_class:
            raise BenchError(
                f"{what}: only {len(unique)} image(s) are eligible for class {cls!r}, {per_class} are needed "
                "(one-hot rule: that class positive, every other observation except No Finding negative); "
                "is the label file complete? (option per_class lowers the number for small copies)"
            )
        order = np.random.default_rng([seed, k]).permutation(len(unique))
        chosen[cls] = sorted(unique[i] for i in order[:per_class])
    return chosen


def _int_option(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise BenchError(f"option {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _finish(
    samples: list[Sample], chosen: dict[str, list[str]], dataset: str, seed: int, per_class: int
) -> list[Sample]:
    """One-hot labels, derived-set metadata and the MedCLIP retrieval text, ordered by class then id."""
    class_of = {i: cls for cls, ids in chosen.items() for i in ids}
    subset_hash = ids_hash(class_of)
    order = {cls: k for k, cls in enumerate(CLASSES)}
    for s in samples:
        cls = class_of[s.id]
        s.meta = {
            **s.meta,
            "source_labels": dict(s.labels),
            "class": cls,
            "seed": seed,
            "per_class": per_class,
            "subset_ids_hash": subset_hash,
        }
        s.labels = {c: int(c == cls) for c in CLASSES}
        s.dataset = dataset
        s.split = "test"
        text = " ".join(s.sections[k] for k in ("findings", "impression") if s.sections.get(k))
        if text:
            s.sections = {**s.sections, "report": text}
    samples.sort(key=lambda s: (order[class_of[s.id]], s.id))
    return samples


def _split_arg(dataset: str, split: str) -> None:
    if split != "test":
        raise BenchError(f"{dataset} has one split, 'test' (a derived evaluation set), not {split!r}")


# --------------------------------------------------------------------------- CheXpert-5x200


def load_chexpert5x200(root: str | Path | None, split: str = "test", **options: Any) -> list[Sample]:
    """GLoRIA's CheXpert-5x200 drawn from ``train.csv`` (option ``source_split="val"`` for valid.csv)."""
    dataset = "chexpert5x200"
    valid = {"seed", "per_class", "source_split", "reports_file"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise BenchError(f"{dataset}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    _split_arg(dataset, split)
    seed = _int_option("seed", options.get("seed", DEFAULT_SEED), 0)
    per_class = _int_option("per_class", options.get("per_class", PER_CLASS), 1)
    source = str(options.get("source_split", "train"))
    if source not in chexpert.SPLIT_FILES:
        raise BenchError(f"{dataset}: source_split must be train or val, not {source!r}")
    base = chexpert._root(root)
    folder, frame = chexpert.read_split_table(base, source)
    frame = frame[frame["Frontal/Lateral"] == "Frontal"]
    masks = eligible_masks(frame, chexpert.LABELS, uncertain="keep")
    keys = np.array([chexpert.relative_key(p) for p in frame["Path"].tolist()], dtype=object)
    what = f"{folder / chexpert.SPLIT_FILES[source]} (CheXpert-5x200, frontal images)"
    chosen = choose({c: keys[m].tolist() for c, m in masks.items()}, per_class=per_class, seed=seed, what=what)
    wanted = {i for ids in chosen.values() for i in ids}
    subset = frame[[k in wanted for k in keys]]
    samples = chexpert.table_samples(folder, subset, split, dataset=dataset)
    reports_path = chexpert.find_reports_file(base, options.get("reports_file"))
    if reports_path is not None:
        reports = chexpert.read_reports(reports_path)
        for s in samples:
            s.sections = dict(reports.get(s.id) or {})
    return _finish(samples, chosen, dataset, seed, per_class)


def _check(dataset: str, load: Any, root: str | Path, sample_images: int, options: dict[str, Any]) -> CheckReport:
    """Draw the subset (every table parsed, the rule applied) and open a spread sample of its images."""
    report = CheckReport(dataset)
    try:
        samples = load(Path(root), "test", **options)
    except BenchError as exc:
        report.problems.append(str(exc))
        return report
    report.splits["test"] = len(samples)
    report.problems.extend(mimic_cxr.sampled_image_problems(samples, sample_images, dataset))
    return report


def check_chexpert5x200(root: str | Path, *, sample_images: int = 20, **options: Any) -> CheckReport:
    return _check("chexpert5x200", load_chexpert5x200, root, sample_images, options)


# --------------------------------------------------------------------------- MIMIC-5x200


def load_mimic5x200(root: str | Path | None, split: str = "test", **options: Any) -> list[Sample]:
    """MedCLIP's MIMIC-5x200 (NegBio labels, uncertain and blank as negative), seeded."""
    dataset = "mimic5x200"
    valid = {"seed", "per_class", "labeler", "views", "source_splits", "reports_root"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise BenchError(f"{dataset}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    _split_arg(dataset, split)
    seed = _int_option("seed", options.get("seed", DEFAULT_SEED), 0)
    per_class = _int_option("per_class", options.get("per_class", PER_CLASS), 1)
    labeler = str(options.get("labeler", "negbio"))
    views = mimic_cxr.normalise_views(options.get("views", "all"))
    sources = options.get("source_splits", mimic_cxr.SPLITS)
    sources = [sources] if isinstance(sources, str) else list(sources)
    bad = [s for s in sources if s not in mimic_cxr.SPLITS]
    if bad or not sources:
        raise BenchError(f"{dataset}: source_splits must be among {', '.join(mimic_cxr.SPLITS)}, got {sources!r}")
    base = mimic_cxr._root(root)
    frame = mimic_cxr.read_images_table(base, labeler)
    frame = mimic_cxr.filter_views(frame[frame["our_split"].isin(sources)], views)
    masks = eligible_masks(frame, mimic_cxr.LABELS, uncertain="negative")
    ids = frame["dicom_id"].to_numpy(dtype=object)
    what = (
        f"{mimic_cxr.table_file(base, labeler)} joined with the metadata (MIMIC-5x200; splits {', '.join(sources)}, "
        f"views {'all' if views is None else ', '.join(views)})"
    )
    chosen = choose({c: ids[m].tolist() for c, m in masks.items()}, per_class=per_class, seed=seed, what=what)
    wanted = {i for v in chosen.values() for i in v}
    subset = frame[frame["dicom_id"].isin(wanted)]
    probes = list(zip(subset["subject_id"], subset["study_id"], strict=True))
    reports = mimic_cxr.locate_reports(base, options.get("reports_root"), probes) if probes else None
    samples = mimic_cxr.rows_to_samples(
        subset, base, dataset=dataset, splits=["test"] * len(subset), reports=reports, labeler=labeler
    )
    return _finish(samples, chosen, dataset, seed, per_class)


def check_mimic5x200(root: str | Path, *, sample_images: int = 20, **options: Any) -> CheckReport:
    return _check("mimic5x200", load_mimic5x200, root, sample_images, options)
