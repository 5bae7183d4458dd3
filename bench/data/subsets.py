"""Training subsets (1 % / 10 % / 100 % of the training labels, LLaVA-RadZ / MedKLIP / MAVL).

Any reader gets them through the loader option ``train_fraction``::

    load(root, "train", train_fraction=0.01)              # seeded 1 % of the train split
    load(root, "test", train_fraction=0.01)               # unchanged: only "train" is subset

The rule (:func:`training_subset`):

- **seeded and order-free**: the selection depends only on the set of sample ids, the fraction and
  ``train_fraction_seed`` (default 0), never on file order;
- **nested**: with the same seed the 1 % subset is inside the 10 % subset, which is inside the full
  split (each stratum takes a prefix of one seeded permutation of its ids);
- **stratified by label** (default ``train_fraction_stratify=True``): samples are grouped by the
  reader's target label(s) — e.g. Pneumonia positive / negative — and each group keeps
  ``max(1, round(fraction * group size))`` samples, so a 1 % subset keeps the class balance of the
  split and never loses a class (AUC needs both). Papers sample rows with ``DataFrame.sample`` and
  no stratification; stratifying only removes the chance of a class-free 1 % subset. Pass
  ``train_fraction_stratify=False`` for plain ``max(1, round(fraction * n))`` sampling;
- **recorded**: every kept sample gets ``meta["train_fraction"]``, ``meta["train_fraction_seed"]``,
  ``meta["subset_ids_hash"]`` (hash of the kept ids), ``meta["subset_size"]`` and
  ``meta["subset_of"]`` (size of the full split). The run's dataset fingerprint hashes sample ids,
  so it changes whenever the selection does.

Subsets are drawn at the sample level (one sample = one image in these datasets), like the papers.

Multi-label targets (the fine-tuning tasks, :mod:`tasks.finetune`) stratify with
:func:`rarest_positive` — each sample falls in the stratum of its rarest positive label, or in the
stratum of samples with none — instead of one stratum per label combination, which with many labels
would keep one sample of each of dozens of combinations and make a 1 % subset several times larger
than 1 %. With ``cover=labels``, a label for which the first id of every stratum (kept by every
fraction) holds no positive, or no non-positive, also keeps the first of its own positives or
non-positives (in a seeded order, independent of the fraction): no label of the split loses its
positive or negative examples and subsets stay nested. For one label this adds nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.data.common import ids_hash, seeded_first, seeded_fraction
from bench.interfaces import BenchError, Sample

OPTION = "train_fraction"
SEED_OPTION = "train_fraction_seed"
STRATIFY_OPTION = "train_fraction_stratify"
OPTIONS = (OPTION, SEED_OPTION, STRATIFY_OPTION)
FULL = 1.0


def check_fraction(fraction: Any) -> float:
    """A fraction in (0, 1] (also accepts the strings "1%", "10%", "100%")."""
    value = fraction
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            raise BenchError(f"train_fraction {fraction!r} is not a number (expected e.g. 0.01 or '1%')") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BenchError(f"train_fraction {fraction!r} is not a number (expected e.g. 0.01 or '1%')")
    if not 0.0 < float(value) <= 1.0:
        raise BenchError(f"train_fraction must be in (0, 1], got {fraction!r}")
    return float(value)


def stratum_of(labels: Sequence[str]) -> Callable[[Sample], tuple[Any, ...]]:
    """A stratum key: the values of ``labels`` (1 positive, anything else not) of a sample."""
    names = tuple(labels)

    def key(sample: Sample) -> tuple[Any, ...]:
        return tuple(int(sample.labels.get(name) == 1) for name in names)

    return key


def rarest_positive(samples: Sequence[Sample], labels: Sequence[str]) -> Callable[[Sample], str]:
    """A stratum key for multi-label targets: a sample's positive label that has the fewest positives in
    ``samples`` (ties broken by the order of ``labels``), or ``""`` when it has none."""
    names = tuple(labels)
    counts = {name: sum(s.labels.get(name) == 1 for s in samples) for name in names}
    rank = {name: (counts[name], i) for i, name in enumerate(names)}

    def key(sample: Sample) -> str:
        positives = [name for name in names if sample.labels.get(name) == 1]
        return min(positives, key=rank.__getitem__) if positives else ""

    return key


def subset_ids(
    samples: Sequence[Sample],
    fraction: float,
    *,
    seed: int = 0,
    stratify: Callable[[Sample], Any] | None = None,
    cover: Sequence[str] = (),
) -> set[str]:
    """The ids of the seeded, nested, optionally stratified subset of ``samples`` (nothing recorded).

    ``cover``: labels whose first positive and first non-positive sample (in a seeded order of those ids)
    are always kept, so that the subset keeps both kinds of every label the full set has."""
    fraction = check_fraction(fraction)
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise BenchError(f"cannot draw a training subset: sample id {s.id!r} occurs twice")
        seen.add(s.id)
    if fraction >= FULL:
        return seen
    groups: dict[Any, list[str]] = defaultdict(list)
    for s in samples:
        groups[stratify(s) if stratify is not None else ()].append(s.id)
    keep: set[str] = set()
    for ids in groups.values():
        keep.update(seeded_fraction(ids, fraction, seed))
    # every fraction keeps the first id of each stratum; a label that those lack a positive or a
    # non-positive of gets the first of its own (independent of the fraction, so still nested)
    firsts = {seeded_first(ids, seed) for ids in groups.values()}
    by_id = {s.id: s for s in samples}
    for name in cover:
        for wanted in (True, False):
            if any((by_id[i].labels.get(name) == 1) == wanted for i in firsts):
                continue
            ids = [s.id for s in samples if (s.labels.get(name) == 1) == wanted]
            if ids:
                keep.add(seeded_first(ids, seed))
    return keep


def training_subset(
    samples: Sequence[Sample],
    fraction: float,
    *,
    seed: int = 0,
    stratify: Callable[[Sample], Any] | None = None,
    cover: Sequence[str] = (),
) -> list[Sample]:
    """The seeded, nested, optionally stratified subset of ``samples`` (order kept), with the
    selection recorded in each kept sample's ``meta``."""
    fraction = check_fraction(fraction)
    keep = subset_ids(samples, fraction, seed=seed, stratify=stratify, cover=cover)
    chosen = [s for s in samples if s.id in keep]
    digest = ids_hash(keep)
    for s in chosen:
        s.meta.update(
            {
                "train_fraction": fraction,
                "train_fraction_seed": int(seed),
                "train_fraction_stratified": stratify is not None,
                "subset_ids_hash": digest,
                "subset_size": len(chosen),
                "subset_of": len(samples),
            }
        )
    return chosen


def pop_options(options: dict[str, Any]) -> dict[str, Any]:
    """Remove the training-subset options from a reader's ``options`` and return them."""
    return {k: options.pop(k) for k in OPTIONS if k in options}


def apply(
    samples: list[Sample],
    split: str,
    subset_options: Mapping[str, Any],
    *,
    target_labels: Sequence[str] = (),
) -> list[Sample]:
    """Apply ``train_fraction`` (from :func:`pop_options`) to the ``train`` split; other splits and
    a missing option leave ``samples`` untouched. ``target_labels`` are the reader's labels to
    stratify on."""
    unknown = set(subset_options) - set(OPTIONS)
    if unknown:
        raise BenchError(f"unknown training-subset option(s) {sorted(unknown)}; valid: {', '.join(OPTIONS)}")
    fraction = subset_options.get(OPTION)
    if fraction is None:
        return samples
    fraction = check_fraction(fraction)  # validate even when the split is not "train"
    seed = subset_options.get(SEED_OPTION, 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BenchError(f"{SEED_OPTION} must be an integer, got {seed!r}")
    if split != "train":
        return samples
    stratify = bool(subset_options.get(STRATIFY_OPTION, True)) and bool(target_labels)
    return training_subset(samples, fraction, seed=seed, stratify=stratum_of(target_labels) if stratify else None)


def load_subset(
    load: Callable[..., list[Sample]],
    root: Any,
    split: str,
    *,
    target_labels: Sequence[str] = (),
    **options: Any,
) -> list[Sample]:
    """Wrap any reader that does not know ``train_fraction`` itself:
    ``load_subset(mimic.load, root, "train", train_fraction=0.1, target_labels=[...])``."""
    opts = dict(options)
    subset_options = pop_options(opts)
    return apply(load(root, split, **opts), split, subset_options, target_labels=target_labels)
