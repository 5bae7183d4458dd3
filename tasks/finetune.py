"""Fine-tuning at 1 % / 10 % / 100 % of the training labels (LLaVA-RadZ Table 3; MedKLIP, MAVL, GLoRIA).

Any model with the ``backbone`` capability (``image_backbone()`` + ``preprocess(images)``) gets a new linear
head, trained on a seeded, stratified subset of the dataset's training split and selected on its
validation split; the test split is scored.

Options (task variants in the catalog; all recorded in the result):

- ``mode``: ``"linear"`` (linear probe: frozen backbone, features computed once per model and image through
  the prediction cache, shared by every fraction, seed and task on the same images) or ``"full"`` (the
  backbone and the head trained end to end; bf16 autocast on CUDA).
- ``init``: ``"pretrained"`` or ``"scratch"`` (the same architecture with every parameter drawn anew from
  the seed, :func:`tasks.finetune_train.reinitialise`: the paper's ``Scratch`` row, for any backbone model).
- ``fraction`` and ``seeds`` (default 3 seeds below 100 %, 1 at 100 %): each seed draws its own subset
  (:func:`bench.data.subsets.subset_ids`: stratified by each sample's rarest positive class, every class
  keeping a positive and a negative; nested across fractions) and initialises its own head; metrics are the
  mean over seeds with their standard deviation and each seed's value (``seeds``).
- ``classes`` and ``uncertain`` (``positive`` | ``negative``): the targets (a class not mentioned counts as
  negative), as zero-shot tasks.
- optimisation (``lr``, ``head_lr``, ``weight_decay``, ``batch_size``, ``max_epochs``, ``min_steps``,
  ``warmup_ratio``, ``patience``): defaults per mode in :data:`MODE_DEFAULTS`; AdamW, warm-up + cosine,
  model selection on the validation macro AUC, early stopping (:mod:`tasks.finetune_train`).

Metrics on the test split: ``AUC`` (macro ROC-AUC), ``F1-val-threshold`` / ``ACC-val-threshold`` (macro, at
each class's max-F1 threshold on the validation split), and ``F1-optimistic`` / ``ACC-optimistic`` (the
threshold chosen on the test set itself, MAVL's protocol; optimistic). Each record keeps every seed's test
probabilities and validation thresholds, so ``bench score --task`` rescores without the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.data.common import ids_hash
from bench.data.subsets import check_fraction, rarest_positive, subset_ids
from bench.distributed import shard_indices, take
from bench.interfaces import BenchError, ImageRef, ModelAdapter, Sample, Task, TaskSpec, batched
from bench.metrics.classification import (
    binary_label_matrix,
    bootstrap_decision_f1_acc,
    bootstrap_macro_auc,
    bootstrap_optimistic_f1_acc,
    multilabel_report,
    optimistic_report,
    validation_thresholds,
)
from bench.metrics.stats import summarise_seeds

MODES = ("linear", "full")
INITS = ("pretrained", "scratch")
HYPER = ("lr", "head_lr", "weight_decay", "batch_size", "max_epochs", "min_steps", "warmup_ratio", "patience")
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    # measured on synthcxr with the tiny clip-baseline: the linear probe converges in 30-100 epochs at 1e-2
    "linear": {
        "lr": 1e-2,
        "head_lr": 1e-2,
        "weight_decay": 1e-2,
        "batch_size": 64,
        "max_epochs": 100,
        "min_steps": 100,
        "warmup_ratio": 0.1,
        "patience": 10,
    },
    # the encoder at a small learning rate, the new head at the linear probe's (measured on synthcxr 1 %: head 1e-2
    # reached val AUC 0.876 where 1e-3 reached 0.837); MedKLIP/MAVL fine-tune the whole encoder
    "full": {
        "lr": 1e-4,
        "head_lr": 1e-2,
        "weight_decay": 1e-2,
        "batch_size": 32,
        "max_epochs": 30,
        "min_steps": 200,
        "warmup_ratio": 0.1,
        "patience": 5,
    },
}
DEFAULTS: dict[str, Any] = {
    "fraction": 1.0,
    "classes": (),
    "mode": "linear",
    "init": "pretrained",
    "seeds": None,  # None: (0, 1, 2) below 100 %, (0,) at 100 %
    "uncertain": "positive",
    **dict.fromkeys(HYPER),
}
METRICS = ("AUC", "F1-val-threshold", "ACC-val-threshold", "F1-optimistic", "ACC-optimistic")


@dataclass(frozen=True)
class Evaluation:
    """The images a trained head is selected on (val, with its targets) and scored on (test)."""

    val: list[ImageRef]
    test: list[ImageRef]
    y_val: np.ndarray


class FineTuneClassification(Task):
    extra_splits = ("train", "val")

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.opts = self.options_over(DEFAULTS)
        self.classes: list[str] = list(self.opts["classes"])
        if not self.classes:
            raise BenchError(f"task {spec.name}: option 'classes' is empty")
        for key, allowed in (("mode", MODES), ("init", INITS), ("uncertain", ("positive", "negative"))):
            if self.opts[key] not in allowed:
                raise BenchError(f"task {spec.name}: {key} must be one of {', '.join(allowed)}, not {self.opts[key]!r}")
        self.fraction = check_fraction(self.opts["fraction"])
        seeds = self.opts["seeds"]
        if seeds is None:
            seeds = (0, 1, 2) if self.fraction < 1.0 else (0,)
        if (
            not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)
            or len(set(seeds)) < len(seeds)
        ):
            raise BenchError(f"task {spec.name}: seeds must be distinct integers, got {seeds!r}")
        self.seeds: list[int] = list(seeds)
        from tasks.finetune_train import hyper_from  # torch: only when the task is built

        self.hyper = hyper_from(self.opts, MODE_DEFAULTS[self.opts["mode"]], f"task {spec.name}")
        self._splits: dict[str, list[Sample]] | None = None
        self._subsets: dict[int, list[Sample]] = {}
        self._runs: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ data

    def labels(self, samples: Sequence[Sample]) -> np.ndarray:
        """``[N, C]`` 0/1 targets of samples under the task's uncertain policy."""
        return self.targets([s.labels for s in samples])

    def targets(self, references: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``[N, C]`` 0/1 targets of ``{class: 1 | 0 | -1 | None}`` references (not mentioned = negative)."""
        return binary_label_matrix(references, self.classes, self.opts["uncertain"], "negative")

    def use_splits(self, splits: Mapping[str, list[Sample]]) -> None:
        train, val = list(splits.get("train") or []), list(splits.get("val") or [])
        where = f"task {self.name}: dataset {self.spec.dataset}"
        for name, samples in (("train", train), ("val", val)):
            if not samples:
                raise BenchError(f"{where} has no {name} split samples; fine-tuning needs its train and val splits")
            missing = [s.id for s in samples if not s.images]
            if missing:
                raise BenchError(f"{where}: {len(missing)} {name} sample(s) have no image (e.g. {missing[0]!r})")
        self._check_classes(self.labels(train), f"{where}: the full train split ({len(train)} samples)", whole=True)
        y_val = self.labels(val)
        if not any(0 < y_val[:, c].sum() < len(val) for c in range(len(self.classes))):
            raise BenchError(
                f"{where}: no class has both positive and negative examples in the val split ({len(val)} samples); "
                "model selection on the validation AUC is impossible"
            )
        stratify = rarest_positive(train, self.classes)
        self._subsets = {}
        for seed in self.seeds:
            keep = subset_ids(train, self.fraction, seed=seed, stratify=stratify, cover=self.classes)
            subset = [s for s in train if s.id in keep]
            self._check_classes(
                self.labels(subset),
                f"{where}: the {self.fraction:.0%} training subset of seed {seed} ({len(subset)} samples)",
            )
            self._subsets[seed] = subset
        self._splits = {"train": train, "val": val}

    def _check_classes(self, y: np.ndarray, what: str, whole: bool = False) -> None:
        """Every class needs a positive and a negative training example."""
        bad = []
        for c, name in enumerate(self.classes):
            pos = int(y[:, c].sum())
            if pos == 0 or pos == y.shape[0]:
                bad.append(f"{name} ({'no positive' if pos == 0 else 'no negative'} example)")
        if bad:
            problem = "cannot support fine-tuning" if whole else "lacks examples of"
            raise BenchError(
                f"{what} {problem}: {', '.join(bad)}; a classifier cannot be trained for a class with one label value"
            )

    def data_selection(self) -> dict[str, Any]:
        if self._splits is None:
            return {}
        return {
            "train_subsets": {str(seed): ids_hash(s.id for s in subset) for seed, subset in self._subsets.items()},
            "val": ids_hash(s.id for s in self._splits["val"]),
        }

    # ------------------------------------------------------------------ predict

    def _features_name(self, seed: int) -> str:
        if self.opts["init"] == "pretrained":
            return "backbone"
        from tasks.finetune_train import SCRATCH_INIT_VERSION

        return f"backbone-scratch-v{SCRATCH_INIT_VERSION}-seed{seed}"

    def _features(
        self, model: Any, images: Sequence[ImageRef], seed: int, batch_size: int, modules: dict[str, Any]
    ) -> np.ndarray:
        """Frozen-backbone features ``[N, D]``, through the prediction cache when the runner gave one."""
        from tasks.finetune_train import frozen_features, reinitialise

        name = self._features_name(seed)

        def compute(chunk: list[ImageRef]) -> np.ndarray:
            if name not in modules:
                module, _ = model.image_backbone()
                if self.opts["init"] == "scratch":
                    reinitialise(module, seed)
                module.requires_grad_(False)
                modules[name] = module
            return frozen_features(modules[name], model.preprocess, chunk, batch_size)

        cached = None if isinstance(model, ModelAdapter) else getattr(model, "image_features", None)
        parts = [cached(chunk, name, compute) if cached else compute(chunk) for chunk in batched(images, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def _linear_probe(
        self, model: Any, seed: int, subset: list[Sample], ev: Evaluation, batch_size: int, held: dict[Any, Any]
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        """Validation and test probabilities of a linear head on frozen features, and the training outcome.
        ``held`` keeps the built backbones and the val/test features across seeds (one backbone per seed for
        Scratch, dropped after it)."""
        from tasks.finetune_train import train_linear_probe

        name = self._features_name(seed)
        modules = held.setdefault("modules", {})
        for split, split_images in (("val", ev.val), ("test", ev.test)):
            if (name, split) not in held:
                held[(name, split)] = self._features(model, split_images, seed, batch_size, modules)
        x_train = self._features(model, [s.image for s in subset], seed, batch_size, modules)
        x_val, x_test = held[(name, "val")], held[(name, "test")]
        head, outcome = train_linear_probe(x_train, self.labels(subset), x_val, ev.y_val, self.hyper, seed)
        if self.opts["init"] == "scratch":
            for key in (name, (name, "val"), (name, "test")):
                (modules if key == name else held).pop(key, None)
        return head(x_val), head(x_test), outcome

    def _fine_tune(
        self, model: Any, seed: int, subset: list[Sample], ev: Evaluation, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        """Validation and test probabilities of a fresh copy of the backbone (re-drawn for Scratch) trained end
        to end with a new head, and the training outcome."""
        from tasks.finetune_train import reinitialise, train_full

        backbone, dim = model.image_backbone()
        if self.opts["init"] == "scratch":
            reinitialise(backbone, seed)
        predict, outcome = train_full(
            backbone, dim, model.preprocess, [s.image for s in subset], self.labels(subset), ev.val, ev.y_val,
            self.hyper, seed, batch_size,
        )  # fmt: skip
        return predict(ev.val), predict(ev.test), outcome

    # A classifier trained on features needs every sample's: in a distributed run the ranks share out the
    # frozen-backbone features (linear probe) and rank 0 trains; full fine-tuning runs on rank 0 alone.
    distributed = "outputs"

    def prefetch(
        self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int, rank: int, world_size: int
    ) -> None:
        """This rank's batches of the features :meth:`predict` computes (val, test, each seed's subset)."""
        if self._splits is None:
            raise BenchError(f"task {self.name} needs its train and val splits (use_splits) before prefetch")
        if self.opts["mode"] != "linear":
            return
        val = [s.image for s in self._splits["val"]]
        test = [s.image for s in samples]
        for seed in self.seeds:
            modules: dict[str, Any] = {}
            lists = [val, test] if seed == self.seeds[0] or self.opts["init"] == "scratch" else []
            for images in [*lists, [s.image for s in self._subsets[seed]]]:
                mine = take(images, shard_indices(len(images), batch_size, rank, world_size))
                if mine:
                    self._features(model, mine, seed, batch_size, modules)

    def predict(self, model: ModelAdapter, samples: Sequence[Sample], batch_size: int) -> Iterator[dict[str, Any]]:
        if self._splits is None:
            raise BenchError(f"task {self.name} needs its train and val splits (use_splits) before predict")
        val = self._splits["val"]
        y_val = self.labels(val)
        ev = Evaluation([s.image for s in val], [s.image for s in samples], y_val)
        probs: dict[int, np.ndarray] = {}
        thresholds: dict[int, np.ndarray] = {}
        held: dict[Any, Any] = {}
        self._runs = []
        for seed in self.seeds:
            subset = self._subsets[seed]
            if self.opts["mode"] == "linear":
                p_val, p_test, outcome = self._linear_probe(model, seed, subset, ev, batch_size, held)
            else:
                p_val, p_test, outcome = self._fine_tune(model, seed, subset, ev, batch_size)
            probs[seed] = p_test
            thresholds[seed] = validation_thresholds(y_val, p_val)
            positives = self.labels(subset).sum(axis=0)
            self._runs.append(
                {
                    "seed": seed,
                    "train_samples": len(subset),
                    "train_positives": {c: int(v) for c, v in zip(self.classes, positives, strict=True)},
                    "subset_ids_hash": ids_hash(s.id for s in subset),
                    **outcome.to_json(),
                }
            )
        for i, sample in enumerate(samples):
            yield {
                "id": sample.id,
                "inputs": {"image": sample.image.path or sample.image.key},
                "prediction": {
                    str(seed): {c: float(v) for c, v in zip(self.classes, probs[seed][i], strict=True)}
                    for seed in self.seeds
                },
                "threshold": {
                    str(seed): {
                        c: (float(t) if np.isfinite(t) else None) for c, t in zip(self.classes, thr, strict=True)
                    }
                    for seed, thr in thresholds.items()
                },
                "reference": {c: sample.labels.get(c) for c in self.classes},
            }

    # ------------------------------------------------------------------ score

    def _seed_matrices(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
        first = records[0]
        if not isinstance(first.get("prediction"), Mapping) or not isinstance(first.get("threshold"), Mapping):
            raise BenchError(
                f"task {self.name}: records need 'prediction' and 'threshold' keyed by training seed "
                "(as `bench run` writes them)"
            )
        seeds = list(first["prediction"])
        out = {}
        for seed in seeds:
            rows, thr = [], None
            for r in records:
                pred = r["prediction"].get(seed) if isinstance(r.get("prediction"), Mapping) else None
                if not isinstance(pred, Mapping) or any(c not in pred for c in self.classes):
                    raise BenchError(
                        f"task {self.name}: record {r['id']!r} has no prediction of seed {seed} for {self.classes}"
                    )
                rows.append([pred[c] for c in self.classes])
                t = (r.get("threshold") or {}).get(seed)
                if not isinstance(t, Mapping):
                    raise BenchError(f"task {self.name}: record {r['id']!r} has no validation threshold of seed {seed}")
                thr = t if thr is None else thr
            assert thr is not None
            values = [thr.get(c) for c in self.classes]
            out[seed] = (
                np.asarray(rows, dtype=np.float64),
                np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64),
            )
        return seeds, out

    def score(self, records: Sequence[Mapping[str, Any]], bootstrap: int, seed: int) -> dict[str, Any]:
        if not records:
            raise BenchError(f"task {self.name}: no predictions to score")
        y = self.targets([r["reference"] for r in records]).astype(int)
        seeds, matrices = self._seed_matrices(records)
        bundles: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in METRICS}
        resampled: dict[str, dict[str, np.ndarray]] = {m: {} for m in METRICS}
        for key in seeds:
            probs, thr = matrices[key]
            report = multilabel_report(y, probs, self.classes, thr, 0, seed, threshold_policy="validation")
            report.update(optimistic_report(y, probs, self.classes, 0, seed))
            bundles["AUC"][key] = report["AUC"]
            bundles["F1-val-threshold"][key] = report["F1"]
            bundles["ACC-val-threshold"][key] = report["ACC"]
            bundles["F1-optimistic"][key] = report["F1-optimistic"]
            bundles["ACC-optimistic"][key] = report["ACC-optimistic"]
            if bootstrap > 0:
                usable = np.isfinite(thr)
                decisions = probs[:, usable] >= thr[usable][None, :]
                resampled["AUC"][key] = bootstrap_macro_auc(y, probs, bootstrap, seed)
                f1, acc = bootstrap_decision_f1_acc(y[:, usable], decisions, bootstrap, seed)
                resampled["F1-val-threshold"][key], resampled["ACC-val-threshold"][key] = f1, acc
                f1, acc = bootstrap_optimistic_f1_acc(y, probs, bootstrap, seed)
                resampled["F1-optimistic"][key], resampled["ACC-optimistic"][key] = f1, acc
        return {m: summarise_seeds(bundles[m], resampled[m] if bootstrap > 0 else None, bootstrap) for m in METRICS}

    # ------------------------------------------------------------------ record

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.opts.items() if k not in HYPER})
        cfg.update(
            {
                "fraction": self.fraction,
                "seeds": list(self.seeds),
                "optimisation": {
                    **vars(self.hyper),
                    "optimizer": "AdamW",
                    "schedule": "linear warm-up, then cosine decay to 0 (per step)",
                    "loss": "binary cross-entropy per class",
                    "selection": "best epoch by validation macro AUC; early stopping after `patience` epochs",
                    "precision": "bf16 autocast on CUDA, fp32 on CPU" if self.opts["mode"] == "full" else "fp32",
                    "head_device": "the model's device" if self.opts["mode"] == "full" else "cpu",
                },
                "subsets": "one per seed, stratified by rarest positive class, every class kept (bench.data.subsets)",
                "thresholds": "F1/ACC-val-threshold: per-class max-F1 threshold on the val split; "
                "F1/ACC-optimistic: chosen on the test set (MAVL/MedKLIP)",
                "runs": list(self._runs),
            }
        )
        return cfg
