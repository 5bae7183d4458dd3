"""Phrase-grounding metrics: contrast-to-noise ratio (CNR) of similarity maps (MS-CXR protocol).

Default (``CNR``), per phrase::

    CNR = |μ_in − μ_out| / sqrt(σ²_in + σ²_out)

over the similarity map resized to the original image, where "in" is the union of the phrase's
boxes and "out" the rest of the image; NaN pixels are ignored; variances are population
variances (ddof = 0). Published re-implementations differ, so the variants have their own names:

- ``CNR-signed``: (μ_in − μ_out) / sqrt(σ²_in + σ²_out) — a map that is *lower* inside the box
  scores negative instead of being rewarded;
- ``CNR-per-box``: the CNR of each box on its own ("in" = that box, "out" = the pixels outside
  every box of the phrase), averaged over the phrase's boxes;
- ``CNR-unbiased``: the default with unbiased variances (ddof = 1).

Resizing: the map [h, w] is resized to the image's (height, width) with bilinear interpolation,
``align_corners=False``, no antialiasing — the rule of ``torch.nn.functional.interpolate(...,
mode="bilinear", align_corners=False)``, implemented here in numpy (float64), so no torch import
is needed. A NaN in the map spreads to the output pixels interpolated from it, as in torch.

Boxes are in original-image pixels (``Box``: x, y top-left, w, h). A pixel (row i, column j) is
inside a box when its centre (j + 0.5, i + 0.5) lies in [x, x + w) × [y, y + h); for integer boxes
that is ``mask[y:y+h, x:x+w]``. Parts of a box outside the image are clipped.

CNR is undefined — the value is NaN and the reason is recorded and counted, never replaced by a
number — when: the boxes contain no pixel (``empty_box``); the boxes cover the whole image
(``no_outside``); no non-NaN pixel is left inside or outside (``all_nan_inside`` /
``all_nan_outside``); ddof = 1 with a single valid pixel on a side (``single_pixel``); or
σ²_in + σ²_out = 0 (``zero_variance``). The corpus value is the mean over phrases with a defined
CNR, reported with the number of undefined phrases and their reasons, overall and per category.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.interfaces import BenchError, Box

VARIANTS: dict[str, dict[str, Any]] = {
    "CNR": {"signed": False, "per_box": False, "ddof": 0},
    "CNR-signed": {"signed": True, "per_box": False, "ddof": 0},
    "CNR-per-box": {"signed": False, "per_box": True, "ddof": 0},
    "CNR-unbiased": {"signed": False, "per_box": False, "ddof": 1},
}

# --------------------------------------------------------------------------- resizing


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights along one axis (torch's bilinear rule, align_corners=False)."""
    if n_in == n_out:  # torch copies the input unchanged
        idx = np.arange(n_out)
        return idx, idx, np.ones(n_out), np.zeros(n_out)
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam1 = np.clip(src - i0, 0.0, 1.0)
    return i0, i1, 1.0 - lam1, lam1


def resize_bilinear(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D array to ``shape`` = (height, width), bilinear, align_corners=False (float64)."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2:
        raise BenchError(f"similarity map has shape {a.shape}; expected a 2-D array [h, w]")
    h_out, w_out = (int(shape[0]), int(shape[1]))
    if h_out <= 0 or w_out <= 0:
        raise BenchError(f"image shape {tuple(shape)} is not a positive (height, width)")
    r0, r1, rl0, rl1 = _axis_weights(a.shape[0], h_out)
    c0, c1, cl0, cl1 = _axis_weights(a.shape[1], w_out)
    rows = a[r0] * rl0[:, None] + a[r1] * rl1[:, None]
    return rows[:, c0] * cl0[None, :] + rows[:, c1] * cl1[None, :]


# --------------------------------------------------------------------------- boxes


def _as_box(box: Any) -> tuple[float, float, float, float]:
    if isinstance(box, Box):
        values = (box.x, box.y, box.w, box.h)
    elif isinstance(box, Mapping):
        try:
            values = (box["x"], box["y"], box["w"], box["h"])
        except KeyError as exc:
            raise BenchError(f"box {dict(box)!r} lacks {exc}; expected keys x, y, w, h") from None
    elif isinstance(box, (Sequence, np.ndarray)) and not isinstance(box, str) and len(box) == 4:
        values = tuple(box)
    else:
        raise BenchError(f"box {box!r} is not a Box, a {{x, y, w, h}} mapping or an [x, y, w, h] list")
    try:
        x, y, w, h = (float(v) for v in values)
    except (TypeError, ValueError):
        raise BenchError(f"box {box!r} has a non-numeric coordinate; expected numbers x, y, w, h") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise BenchError(f"box {box!r} has a non-finite coordinate")
    if w < 0 or h < 0:
        raise BenchError(f"box {box!r} has a negative width or height; expected x, y, w >= 0, h >= 0")
    return x, y, w, h


def _span(start: float, length: float, size: int) -> tuple[int, int]:
    """Pixel indices [lo, hi) whose centres lie in [start, start + length), clipped to [0, size)."""
    lo = math.ceil(start - 0.5)
    hi = math.ceil(start + length - 0.5)
    return max(lo, 0), min(max(hi, 0), size)


def box_mask(boxes: Sequence[Any], shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask [height, width] of the union of the boxes (original-image pixels)."""
    mask = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    for box in boxes:
        x, y, w, h = _as_box(box)
        r0, r1 = _span(y, h, mask.shape[0])
        c0, c1 = _span(x, w, mask.shape[1])
        if r1 > r0 and c1 > c0:
            mask[r0:r1, c0:c1] = True
    return mask


# --------------------------------------------------------------------------- CNR


@dataclass(frozen=True)
class CNRResult:
    """One phrase's CNR; ``value`` is NaN and ``reason`` says why when it is undefined."""

    value: float
    reason: str | None = None
    mu_in: float = float("nan")
    mu_out: float = float("nan")
    var_in: float = float("nan")
    var_out: float = float("nan")
    n_in: int = 0
    n_out: int = 0

    @property
    def defined(self) -> bool:
        return self.reason is None

    def to_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "cnr": num(self.value),
            "undefined_reason": self.reason,
            "mu_in": num(self.mu_in),
            "mu_out": num(self.mu_out),
            "var_in": num(self.var_in),
            "var_out": num(self.var_out),
            "n_in": self.n_in,
            "n_out": self.n_out,
        }


def cnr_from_mask(smap: np.ndarray, inside: np.ndarray, outside: np.ndarray, signed: bool, ddof: int) -> CNRResult:
    """CNR of ``smap`` between two pixel masks (NaN pixels ignored)."""
    if not inside.any():
        return CNRResult(float("nan"), "empty_box")
    if not outside.any():
        return CNRResult(float("nan"), "no_outside")
    valid = ~np.isnan(smap)
    vin = smap[inside & valid]
    vout = smap[outside & valid]
    if vin.size == 0:
        return CNRResult(float("nan"), "all_nan_inside", n_out=int(vout.size))
    if vout.size == 0:
        return CNRResult(float("nan"), "all_nan_outside", n_in=int(vin.size))
    mu_in, mu_out = float(vin.mean()), float(vout.mean())
    stats = {"mu_in": mu_in, "mu_out": mu_out, "n_in": int(vin.size), "n_out": int(vout.size)}
    if min(vin.size, vout.size) <= ddof:
        return CNRResult(float("nan"), "single_pixel", **stats)
    var_in, var_out = float(vin.var(ddof=ddof)), float(vout.var(ddof=ddof))
    stats.update(var_in=var_in, var_out=var_out)
    denom = math.sqrt(var_in + var_out)
    if denom == 0.0:
        return CNRResult(float("nan"), "zero_variance", **stats)
    diff = mu_in - mu_out
    return CNRResult(diff / denom if signed else abs(diff) / denom, None, **stats)


def cnr(
    similarity_map: Any,
    boxes: Sequence[Any],
    image_shape: tuple[int, int] | None = None,
    *,
    signed: bool = False,
    per_box: bool = False,
    ddof: int = 0,
) -> CNRResult:
    """CNR of one phrase.

    ``similarity_map`` [h, w] (NaN = no value); ``boxes`` in original-image pixels;
    ``image_shape`` = (height, width) of the original image — the map is resized to it
    (None: the map already has the image's size). For ``per_box`` the value is the mean of the
    per-box CNRs; if any box is undefined the phrase is undefined (reason ``box <k>: <reason>``).
    """
    smap = np.asarray(similarity_map, dtype=np.float64)
    if smap.ndim != 2 or smap.size == 0:
        raise BenchError(f"similarity map has shape {smap.shape}; expected a non-empty 2-D array [h, w]")
    if np.isinf(smap).any():
        raise BenchError("similarity map contains infinite values; expected finite numbers (NaN marks no value)")
    if ddof not in (0, 1):
        raise BenchError(f"ddof={ddof}; expected 0 (population) or 1 (unbiased)")
    if image_shape is not None and tuple(int(v) for v in image_shape) != smap.shape:
        smap = resize_bilinear(smap, (int(image_shape[0]), int(image_shape[1])))
    if not boxes:
        return CNRResult(float("nan"), "empty_box")
    union = box_mask(boxes, smap.shape)
    if not per_box:
        return cnr_from_mask(smap, union, ~union, signed, ddof)
    results = [cnr_from_mask(smap, box_mask([b], smap.shape), ~union, signed, ddof) for b in boxes]
    for k, r in enumerate(results):
        if not r.defined:
            return CNRResult(float("nan"), f"box {k}: {r.reason}")
    return CNRResult(
        float(np.mean([r.value for r in results])),
        None,
        n_in=int(sum(r.n_in for r in results)),
        n_out=results[0].n_out,
    )


# --------------------------------------------------------------------------- corpus report


def _summary(values: np.ndarray, reasons: Sequence[str | None], resamples: int, seed: int) -> dict[str, Any]:
    from bench.metrics.stats import bootstrap_ci

    ok = np.isfinite(values)
    defined = values[ok]
    low, high = bootstrap_ci(lambda idx: float(defined[idx].mean()), defined.size, resamples, seed)
    undefined = Counter(r.split(":")[-1].strip() for r in reasons if r is not None)
    return {
        "value": float(defined.mean()) if defined.size else None,
        "ci95": [low, high],
        "n": int(defined.size),
        "n_undefined": int((~ok).sum()),
        "undefined_reasons": dict(sorted(undefined.items())),
    }


def grounding_report(
    results: Sequence[CNRResult],
    categories: Sequence[str | None] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    variant: str = "CNR",
) -> dict[str, Any]:
    """Mean CNR over phrases with a defined CNR, with a bootstrap interval, undefined counts and
    the same per category (``categories[i]`` is phrase i's category, e.g. MS-CXR's
    ``category_name``; None → ``"unknown"``)."""
    if categories is not None and len(categories) != len(results):
        raise BenchError(f"{len(results)} CNR values but {len(categories)} categories; expected one each")
    values = np.array([r.value for r in results], dtype=float)
    reasons = [r.reason for r in results]
    out = _summary(values, reasons, resamples, seed)
    out["variant"] = variant
    out["definition"] = VARIANTS.get(variant, {})
    out["resize"] = "bilinear, align_corners=False (torch rule, numpy)"
    if categories is not None:
        cats = ["unknown" if c is None else str(c) for c in categories]
        per: dict[str, Any] = {}
        for cat in sorted(set(cats)):
            idx = [i for i, c in enumerate(cats) if c == cat]
            per[cat] = _summary(values[idx], [reasons[i] for i in idx], resamples, seed)
        out["per_category"] = per
    return out


def sample_category(meta: Mapping[str, Any], boxes: Sequence[Box]) -> str | None:
    """A phrase's category: ``meta["category"]``, else the boxes' common label, else None."""
    if meta.get("category"):
        return str(meta["category"])
    labels = {b.label for b in boxes if isinstance(b, Box) and b.label}
    return labels.pop() if len(labels) == 1 else None


# --------------------------------------------------------------------------- registered callables
# ``fn(predictions, references) -> float`` for ``bench score --metrics``. A prediction is the
# similarity map (nested lists; null = NaN) or a mapping with key ``similarity_map``; a reference
# is a mapping with ``boxes`` ([x, y, w, h] lists or {x, y, w, h} mappings, original pixels) and
# optionally ``image_shape`` = [height, width] (default: the map's shape).


def _map_of(prediction: Any, i: int) -> np.ndarray:
    raw = prediction.get("similarity_map") if isinstance(prediction, Mapping) else prediction
    if raw is None:
        raise BenchError(f"grounding prediction {i} has no similarity map; expected a 2-D list of numbers")
    try:
        arr = np.array(raw, dtype=float)  # JSON null → NaN
    except (TypeError, ValueError):
        raise BenchError(f"grounding prediction {i}: the similarity map is not a 2-D list of numbers") from None
    return arr


def _reference_of(reference: Any, i: int) -> tuple[list[Any], tuple[int, int] | None]:
    if not isinstance(reference, Mapping) or "boxes" not in reference:
        raise BenchError(f"grounding reference {i} is {reference!r:.80}; expected a mapping with 'boxes'")
    shape = reference.get("image_shape")
    if shape is not None:
        if len(shape) != 2:
            raise BenchError(f"grounding reference {i}: image_shape {shape!r} is not [height, width]")
        shape = (int(shape[0]), int(shape[1]))
    return list(reference["boxes"]), shape


def cnr_values(predictions: Sequence[Any], references: Sequence[Any], variant: str = "CNR") -> list[CNRResult]:
    """Per-phrase CNR results of one variant from scorer records."""
    if variant not in VARIANTS:
        raise BenchError(f"unknown CNR variant {variant!r}; known: {', '.join(VARIANTS)}")
    if len(predictions) != len(references):
        raise BenchError(f"{len(predictions)} predictions but {len(references)} references; expected one each")
    out = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        boxes, shape = _reference_of(ref, i)
        out.append(cnr(_map_of(pred, i), boxes, shape, **VARIANTS[variant]))
    return out


def _mean_defined(results: Sequence[CNRResult]) -> float:
    values = [r.value for r in results if r.defined]
    return float(np.mean(values)) if values else float("nan")


def mean_cnr(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Mean CNR (abs, union of boxes, population variances) over phrases where it is defined."""
    return _mean_defined(cnr_values(predictions, references, "CNR"))


def mean_cnr_signed(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Mean signed CNR (μ_in − μ_out, union of boxes, population variances)."""
    return _mean_defined(cnr_values(predictions, references, "CNR-signed"))


def mean_cnr_per_box(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Mean over phrases of the mean per-box CNR (abs, population variances)."""
    return _mean_defined(cnr_values(predictions, references, "CNR-per-box"))


def mean_cnr_unbiased(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Mean CNR with unbiased (ddof = 1) variances (abs, union of boxes)."""
    return _mean_defined(cnr_values(predictions, references, "CNR-unbiased"))
