"""Run-length encoded masks (SIIM-ACR Pneumothorax).

Both conventions number pixels in **column-major** order (down the first column, then the next
column: flat index ``x * height + y``), so a decoded flat array is reshaped to ``(width, height)``
and transposed into the usual ``(height, width)`` row-major mask.

- ``relative`` (SIIM stage 1 ``train-rle.csv``, the organisers' ``mask_functions.py``): pairs
  ``offset length``; the first offset is a 0-based pixel index, every later offset counts from the
  end of the previous run. ``"-1"`` (often ``" -1"``) means an empty mask.
- ``absolute`` (the usual Kaggle RLE): pairs ``start length`` with 1-based starts in increasing
  order. Which of the two SIIM stage 2 ``stage_2_train.csv`` uses is not documented anywhere we
  could find, so :func:`detect_convention` decides from the strings themselves.

A run is kept internally as ``(first_pixel, length)`` with a 0-based column-major index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

RELATIVE = "relative"
ABSOLUTE = "absolute"
CONVENTIONS = (RELATIVE, ABSOLUTE)
EMPTY = "-1"


class RLEError(ValueError):
    """A malformed RLE string (the readers add the file and row to the message)."""


def is_empty(rle: str) -> bool:
    """``-1`` (with or without surrounding spaces) or a blank string: no mask."""
    return rle.strip() in (EMPTY, "")


def _numbers(rle: str) -> np.ndarray:
    tokens = rle.split()
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise RLEError(f"{bad!r} is not an integer") from None
    if len(values) % 2:
        raise RLEError(f"an odd number of values ({len(values)}); expected start/length pairs")
    return values


def runs(rle: str, convention: str, size: int) -> np.ndarray:
    """The runs of ``rle`` as an ``[n, 2]`` array of (0-based first pixel, length), checked to lie
    inside ``size`` pixels and not to overlap."""
    if convention not in CONVENTIONS:
        raise RLEError(f"unknown RLE convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    if is_empty(rle):
        return np.zeros((0, 2), dtype=np.int64)
    values = _numbers(rle)
    starts, lengths = values[0::2], values[1::2]
    if (lengths <= 0).any():
        raise RLEError(f"run length {int(lengths[lengths <= 0][0])} is not positive")
    if convention == RELATIVE:
        if (starts < 0).any():
            raise RLEError(f"offset {int(starts[starts < 0][0])} is negative")
        # first pixel of run i = sum of offsets 0..i + sum of lengths 0..i-1
        firsts = np.cumsum(starts) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    else:
        if (starts < 1).any():
            raise RLEError(f"start {int(starts[starts < 1][0])} is below 1 (absolute RLE starts are 1-based)")
        firsts = starts - 1
        ends = firsts + lengths
        if (firsts[1:] < ends[:-1]).any():
            raise RLEError("runs are not in increasing order or overlap (not an absolute RLE)")
    end = int(firsts[-1] + lengths[-1])
    if end > size:
        raise RLEError(f"the runs end at pixel {end}, beyond the {size} pixels of the mask")
    return np.stack([firsts, lengths], axis=1)


def decode(rle: str, height: int = 1024, width: int = 1024, convention: str = RELATIVE) -> np.ndarray:
    """A boolean ``(height, width)`` mask."""
    flat = np.zeros(height * width, dtype=bool)
    for first, length in runs(rle, convention, height * width):
        flat[first : first + length] = True
    return flat.reshape(width, height).T


def decode_union(rles: Iterable[str], height: int = 1024, width: int = 1024, convention: str = RELATIVE) -> np.ndarray:
    """The union of several masks of one image (SIIM lists one row per annotated region)."""
    mask = np.zeros((height, width), dtype=bool)
    for rle in rles:
        mask |= decode(rle, height, width, convention)
    return mask


def encode(mask: np.ndarray, convention: str = RELATIVE) -> str:
    """The RLE string of a 2-D mask (``"-1"`` for an empty one)."""
    if convention not in CONVENTIONS:
        raise RLEError(f"unknown RLE convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise RLEError(f"expected a 2-D mask, got shape {arr.shape}")
    flat = arr.astype(bool).T.reshape(-1)  # column-major
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    firsts, stops = edges[0::2], edges[1::2]
    if len(firsts) == 0:
        return EMPTY
    lengths = stops - firsts
    # absolute: 1-based starts; relative: offsets from the end of the previous run
    starts = firsts + 1 if convention == ABSOLUTE else firsts - np.concatenate([[0], stops[:-1]])
    return " ".join(f"{s} {n}" for s, n in zip(starts.tolist(), lengths.tolist(), strict=True))


def bbox(run_arrays: Sequence[np.ndarray], height: int = 1024) -> tuple[int, int, int, int] | None:
    """The union bounding box ``(x, y, w, h)`` in pixels of several run arrays (from :func:`runs`),
    computed without drawing the mask; ``None`` when there is no run."""
    arrays = [np.asarray(r, dtype=np.int64).reshape(-1, 2) for r in run_arrays]
    all_runs = np.concatenate(arrays) if arrays else np.zeros((0, 2), dtype=np.int64)
    if len(all_runs) == 0:
        return None
    firsts = all_runs[:, 0]
    lasts = firsts + all_runs[:, 1] - 1
    col0, col1 = firsts // height, lasts // height
    row0, row1 = firsts % height, lasts % height
    one_col = col0 == col1
    # a run spanning two or more columns touches row 0 and row height-1
    y_min = int(np.where(one_col, row0, 0).min())
    y_max = int(np.where(one_col, row1, height - 1).max())
    x_min, x_max = int(col0.min()), int(col1.max())
    return x_min, y_min, x_max - x_min + 1, y_max - y_min + 1


def _valid(rle: str, convention: str, size: int) -> bool:
    try:
        runs(rle, convention, size)
    except RLEError:
        return False
    return True


def detect_convention(rles: Iterable[str], size: int = 1024 * 1024) -> tuple[str | None, str]:
    """Decide from the strings whether a file uses relative or absolute RLE.

    Returns ``(convention, reason)``; ``convention`` is None when the strings fit neither, or both
    equally (e.g. only single-run strings, which decode either way). Absolute strings have
    increasing starts; relative ones restart near each column (small offsets), which as absolute
    starts go backwards, and absolute starts summed as relative offsets overflow the mask.
    """
    fits = {RELATIVE: 0, ABSOLUTE: 0}
    informative = 0
    for rle in rles:
        if is_empty(rle) or len(rle.split()) <= 2:
            continue
        informative += 1
        ok = {c: _valid(rle, c, size) for c in CONVENTIONS}
        for c in CONVENTIONS:
            fits[c] += ok[c]
        if not ok[RELATIVE] and not ok[ABSOLUTE]:
            return None, "a multi-run string decodes under neither convention"
    if informative == 0:
        return None, "no multi-run string to decide from"
    if fits[RELATIVE] == informative and fits[ABSOLUTE] < informative:
        return RELATIVE, f"{informative - fits[ABSOLUTE]} of {informative} multi-run strings are not absolute"
    if fits[ABSOLUTE] == informative and fits[RELATIVE] < informative:
        return ABSOLUTE, f"{informative - fits[RELATIVE]} of {informative} multi-run strings are not relative"
    if fits[RELATIVE] == informative:
        return None, "every multi-run string decodes under both conventions"
    return None, "some strings fit only the relative and others only the absolute convention"
