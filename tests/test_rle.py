"""RLE masks (SIIM-ACR): relative and absolute conventions, column-major order, boxes, detection."""

from __future__ import annotations

import csv
import gzip
import io
import zipfile

import numpy as np
import pytest

from bench.data import rle

# A 4-row x 3-column mask. Column-major pixel numbering (down each column, then the next):
#   col 0: pixels 0-3, col 1: pixels 4-7, col 2: pixels 8-11
# mask (rows top to bottom):
#   . # .
#   # # .
#   # . .
#   . . #
HAND = np.array(
    [
        [0, 1, 0],
        [1, 1, 0],
        [1, 0, 0],
        [0, 0, 1],
    ],
    dtype=bool,
)
# set pixels in column-major order: 1, 2 (col 0), 4, 5 (col 1), 11 (col 2)
# runs: [1, 2] length 2 -> first 1; then 4..5 (length 2); then 11 (length 1)
# merged: pixels 1,2 then 4,5 are separate runs (pixel 3 is empty)
HAND_RELATIVE = "1 2 1 2 5 1"  # 1 from 0; after run ends at 3 -> +1 = 4; after 6 -> +5 = 11
HAND_ABSOLUTE = "2 2 5 2 12 1"  # 1-based starts


def test_decode_relative_matches_a_hand_computed_mask() -> None:
    mask = rle.decode(HAND_RELATIVE, height=4, width=3, convention="relative")
    assert mask.shape == (4, 3)
    np.testing.assert_array_equal(mask, HAND)


def test_decode_absolute_matches_the_same_mask() -> None:
    mask = rle.decode(HAND_ABSOLUTE, height=4, width=3, convention="absolute")
    np.testing.assert_array_equal(mask, HAND)


def test_encode_gives_the_hand_strings() -> None:
    assert rle.encode(HAND, "relative") == HAND_RELATIVE
    assert rle.encode(HAND, "absolute") == HAND_ABSOLUTE
    assert rle.encode(np.zeros((4, 3), dtype=bool)) == "-1"


def test_non_square_is_column_major_not_row_major() -> None:
    # a single run of 4 pixels from pixel 0 fills the first COLUMN of a 4x3 mask, not the first row
    mask = rle.decode("0 4", height=4, width=3)
    assert mask[:, 0].all() and mask.sum() == 4


@pytest.mark.parametrize("convention", ["relative", "absolute"])
def test_round_trip_random_masks(convention: str) -> None:
    rng = np.random.default_rng(7)
    for h, w in [(8, 8), (5, 9), (16, 3), (1, 1)]:
        for density in (0.0, 0.1, 0.5, 1.0):
            mask = rng.random((h, w)) < density
            text = rle.encode(mask, convention)
            np.testing.assert_array_equal(rle.decode(text, h, w, convention), mask)


def test_empty_markers() -> None:
    for text in ("-1", " -1", " -1 ", ""):
        assert rle.is_empty(text)
        assert not rle.decode(text, 4, 3).any()
    assert rle.bbox([rle.runs("-1", "relative", 12)], 4) is None


def test_union_of_several_masks() -> None:
    a = "0 1"  # pixel 0 -> (row 0, col 0)
    b = "11 1"  # pixel 11 -> (row 3, col 2)
    union = rle.decode_union([a, b], 4, 3)
    assert union[0, 0] and union[3, 2] and union.sum() == 2


def test_bbox_from_runs_matches_the_mask() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        mask = np.zeros((12, 10), dtype=bool)
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, 12), rng.integers(0, 10)
            mask[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = True
        ys, xs = np.nonzero(mask)
        expected = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        got = rle.bbox([rle.runs(rle.encode(mask), "relative", 120)], 12)
        assert got == tuple(int(v) for v in expected)
    # a run wrapping from the bottom of column 0 into column 1 spans every row
    assert rle.bbox([rle.runs("3 2", "relative", 12)], 4) == (0, 0, 2, 4)


@pytest.mark.parametrize(
    ("text", "convention", "message"),
    [
        ("1 2 3", "relative", "odd number"),
        ("1 x", "relative", "'x' is not an integer"),
        ("10 5", "relative", "beyond the 12 pixels"),
        ("1 0", "relative", "not positive"),
        ("-3 2", "relative", "negative"),
        ("0 2", "absolute", "below 1"),
        ("5 2 3 1", "absolute", "increasing order"),
        ("1 2", "sideways", "unknown RLE convention"),
    ],
)
def test_malformed_strings(text: str, convention: str, message: str) -> None:
    with pytest.raises(rle.RLEError, match=message):
        rle.decode(text, 4, 3, convention)


def test_detect_convention() -> None:
    rng = np.random.default_rng(11)
    masks = []
    for _ in range(10):
        m = np.zeros((64, 64), dtype=bool)
        y, x = rng.integers(5, 40, size=2)
        m[y : y + 12, x : x + 15] = True
        masks.append(m)
    relative = [rle.encode(m, "relative") for m in masks]
    absolute = [rle.encode(m, "absolute") for m in masks]
    assert rle.detect_convention(relative, 64 * 64)[0] == "relative"
    assert rle.detect_convention(absolute, 64 * 64)[0] == "absolute"
    assert rle.detect_convention(["-1", "5 3"], 64 * 64)[0] is None  # single runs decode either way
    assert rle.detect_convention(["1 2 1 2", "x y 3 4"], 64 * 64)[0] is None  # fits neither


def _real_siim_rows() -> list[list[str]]:
    from tests.real_reports import _wheel

    try:
        wheel = _wheel()
    except RuntimeError as exc:
        pytest.skip(f"torchxrayvision wheel not available: {exc}")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("torchxrayvision/data/siim-pneumothorax-train-rle.csv.gz")
    return list(csv.reader(io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(data)), encoding="utf-8")))


def test_real_siim_strings_round_trip_and_are_relative() -> None:
    rows = _real_siim_rows()
    assert [c.strip() for c in rows[0]] == ["ImageId", "EncodedPixels"]
    masks = [r[1] for r in rows[1:] if not rle.is_empty(r[1])]
    assert len(rows) - 1 == 12954 and len(masks) == 3576
    convention, _ = rle.detect_convention(masks)
    assert convention == "relative"
    for text in masks[::60]:  # 60 strings, each decoded on 1024x1024 and re-encoded
        mask = rle.decode(text)
        assert rle.encode(mask, "relative") == " ".join(text.split())
        ys, xs = np.nonzero(mask)
        box = rle.bbox([rle.runs(text, "relative", 1024 * 1024)])
        assert box == (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        # the same mask as absolute RLE decodes to the same pixels
        np.testing.assert_array_equal(rle.decode(rle.encode(mask, "absolute"), convention="absolute"), mask)
