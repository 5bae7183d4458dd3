"""Phrase-grounding CNR against hand-computed values, torch's bilinear resize and degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.interfaces import BenchError, Box, resolve
from bench.metrics import grounding as G

# in = top-left 2×2 = {2, 4, 2, 4}: μ_in = 3, σ²_in = 1.
# out = 8 zeros + 4 ones: μ_out = 4/12 = 1/3, σ²_out = 4/12 − 1/9 = 2/9.
# CNR = (3 − 1/3) / sqrt(1 + 2/9) = (8/3) / (sqrt(11)/3) = 8/sqrt(11).
MAP = np.array(
    [
        [2.0, 4.0, 0.0, 0.0],
        [2.0, 4.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0],
    ]
)
TOP_LEFT = Box("x", 0, 0, 2, 2)


def test_default_cnr_hand_value():
    r = G.cnr(MAP, [TOP_LEFT])
    assert r.defined
    assert (r.mu_in, r.var_in, r.n_in, r.n_out) == (3.0, 1.0, 4, 12)
    assert r.mu_out == pytest.approx(1 / 3) and r.var_out == pytest.approx(2 / 9)
    assert r.value == pytest.approx(8 / math.sqrt(11))


def test_signed_and_abs_differ_only_in_sign():
    # −MAP: μ_in − μ_out = −8/3, variances unchanged → signed −8/sqrt(11), default +8/sqrt(11).
    assert G.cnr(-MAP, [TOP_LEFT], signed=True).value == pytest.approx(-8 / math.sqrt(11))
    assert G.cnr(-MAP, [TOP_LEFT]).value == pytest.approx(8 / math.sqrt(11))


def test_unbiased_variance_variant():
    # ddof=1: σ²_in = 4·1²/3 = 4/3; σ²_out = 12·(2/9)/11 = 8/33 → CNR = (8/3)/sqrt(4/3 + 8/33) = (8/3)/sqrt(52/33).
    r = G.cnr(MAP, [TOP_LEFT], ddof=1)
    assert r.value == pytest.approx((8 / 3) / math.sqrt(52 / 33))


def test_nan_pixels_are_ignored():
    # map[3,3] = NaN → out = 8 zeros + 3 ones: μ_out = 3/11, σ²_out = 3/11 − 9/121 = 24/121.
    # CNR = (3 − 3/11)/sqrt(1 + 24/121) = (30/11)/(sqrt(145)/11) = 30/sqrt(145).
    m = MAP.copy()
    m[3, 3] = np.nan
    r = G.cnr(m, [TOP_LEFT])
    assert r.n_out == 11
    assert r.value == pytest.approx(30 / math.sqrt(145))


MAP2 = np.array(
    [
        [2.0, 4.0, 0.0, 0.0],
        [2.0, 4.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 3.0],
        [0.0, 0.0, 1.0, 3.0],
    ]
)
BOTTOM_RIGHT = Box("x", 2, 2, 2, 2)


def test_union_versus_per_box():
    # union in = {2,4,2,4,1,3,1,3}: μ = 2.5, E[x²] = 60/8 = 7.5 → σ² = 1.25; out = 8 zeros (μ 0, σ² 0).
    # union CNR = 2.5/sqrt(1.25) = sqrt(5).
    assert G.cnr(MAP2, [TOP_LEFT, BOTTOM_RIGHT]).value == pytest.approx(math.sqrt(5))
    # per box, out = pixels outside both boxes (8 zeros): A: 3/sqrt(1) = 3; B: {1,3,1,3} μ 2, σ² 1 → 2.
    # mean = 2.5.
    assert G.cnr(MAP2, [TOP_LEFT, BOTTOM_RIGHT], per_box=True).value == pytest.approx(2.5)
    # a repeated box changes neither the union nor the per-box mean
    assert G.cnr(MAP, [TOP_LEFT, TOP_LEFT]).value == pytest.approx(8 / math.sqrt(11))
    assert G.cnr(MAP, [TOP_LEFT, TOP_LEFT], per_box=True).value == pytest.approx(8 / math.sqrt(11))


def test_cnr_is_invariant_to_positive_affine_maps():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(30, 40))
    boxes = [Box("x", 3, 4, 10, 7), Box("x", 20, 15, 8, 9)]
    base = G.cnr(m, boxes).value
    assert G.cnr(5.0 * m - 2.0, boxes).value == pytest.approx(base)
    assert G.cnr(-m, boxes).value == pytest.approx(base)


def test_box_pixels_use_pixel_centres():
    # integer box = mask[y:y+h, x:x+w]
    mask = G.box_mask([Box("x", 1, 2, 3, 1)], (5, 6))
    expected = np.zeros((5, 6), dtype=bool)
    expected[2:3, 1:4] = True
    assert np.array_equal(mask, expected)
    # x = 0.4, w = 1.2 → [0.4, 1.6) holds the centres 0.5 and 1.5 → columns 0 and 1
    assert G.box_mask([[0.4, 0, 1.2, 1]], (1, 4)).tolist() == [[True, True, False, False]]
    # x = 0.6, w = 0.8 → [0.6, 1.4) holds no centre → empty
    assert not G.box_mask([[0.6, 0, 0.8, 1]], (1, 4)).any()
    # boxes are clipped to the image; mapping boxes work too
    assert G.box_mask([{"x": -5, "y": -5, "w": 6, "h": 6}], (3, 3)).sum() == 1


def test_resize_hand_value():
    # 2 → 4 with align_corners=False: source positions max((d + 0.5)/2 − 0.5, 0) = 0, 0.25, 0.75, 1.25
    # → weights on [v0, v1]: 0, 0.25, 0.75, 1 (the last clamps to v1). Row [0, 1] → [0, .25, .75, 1];
    # column [0, 2] → [0, .5, 1.5, 2]; the map is additive so out[i, j] = col[i] + row[j].
    out = G.resize_bilinear(np.array([[0.0, 1.0], [2.0, 3.0]]), (4, 4))
    row, col = np.array([0, 0.25, 0.75, 1.0]), np.array([0, 0.5, 1.5, 2.0])
    assert np.allclose(out, col[:, None] + row[None, :], atol=1e-15)


def test_resize_matches_torch_interpolate_with_nans():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    for h, w, H, W in [(7, 9, 50, 31), (14, 14, 14, 14), (20, 10, 5, 3), (3, 4, 3, 11)]:
        a = rng.normal(size=(h, w))
        a[1, 2] = np.nan
        expected = F.interpolate(torch.from_numpy(a)[None, None], size=(H, W), mode="bilinear", align_corners=False)
        expected = expected[0, 0].numpy()
        got = G.resize_bilinear(a, (H, W))
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        assert np.allclose(got, expected, equal_nan=True, atol=1e-12)


def test_cnr_after_resize_hand_value():
    # [[1, 0], [0, 0]] → 4×4: out[i, j] = a_i · a_j with a = [1, .75, .25, 0].
    # box (0,0,2,2): {1, .75, .75, .5625}: μ_in = 3.0625/4, E[x²] = 2.44140625/4.
    # all pixels: Σ = (Σa)² = 4, Σx² = (Σa²)² = 1.625² → out: Σ = 0.9375, Σx² = 0.19921875 over 12.
    mu_in, ex2_in = 3.0625 / 4, 2.44140625 / 4
    mu_out, ex2_out = 0.9375 / 12, 0.19921875 / 12
    expected = (mu_in - mu_out) / math.sqrt(ex2_in - mu_in**2 + ex2_out - mu_out**2)
    r = G.cnr(np.array([[1.0, 0.0], [0.0, 0.0]]), [Box("x", 0, 0, 2, 2)], image_shape=(4, 4))
    assert r.value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("smap", "boxes", "kwargs", "reason"),
    [
        (MAP, [Box("x", 0, 0, 4, 4)], {}, "no_outside"),  # box covers every pixel
        (MAP, [Box("x", 1, 1, 0, 2)], {}, "empty_box"),  # zero width
        (MAP, [], {}, "empty_box"),  # no box at all
        (MAP, [Box("x", 10, 10, 3, 3)], {}, "empty_box"),  # outside the image
        (np.ones((4, 4)), [TOP_LEFT], {}, "zero_variance"),  # constant map: 0/0
        (np.where(np.arange(16).reshape(4, 4) < 8, 1.0, 0.0), [Box("x", 0, 0, 4, 2)], {}, "zero_variance"),
        (
            np.where(np.eye(4) > 0, np.nan, 1.0) + np.arange(16).reshape(4, 4),
            [Box("x", 0, 0, 1, 1)],
            {},
            "all_nan_inside",
        ),
        (MAP, [Box("x", 0, 0, 1, 1)], {"ddof": 1}, "single_pixel"),
        (MAP2, [TOP_LEFT, Box("x", 3, 3, 0, 0)], {"per_box": True}, "box 1: empty_box"),
    ],
)
def test_degenerate_cases_are_nan_with_a_reason(smap, boxes, kwargs, reason):
    r = G.cnr(smap, boxes, **kwargs)
    assert math.isnan(r.value) and r.reason == reason and not r.defined


def test_bad_input_is_refused():
    with pytest.raises(BenchError, match="negative width"):
        G.cnr(MAP, [Box("x", 0, 0, -1, 2)])
    with pytest.raises(BenchError, match="infinite"):
        G.cnr(np.full((2, 2), np.inf), [TOP_LEFT])
    with pytest.raises(BenchError, match="2-D"):
        G.cnr(np.zeros(4), [TOP_LEFT])
    with pytest.raises(BenchError, match="lacks 'h'"):
        G.cnr(MAP, [{"x": 0, "y": 0, "w": 1}])


def test_report_counts_undefined_and_splits_by_category():
    results = [
        G.CNRResult(1.0),
        G.CNRResult(3.0),
        G.CNRResult(float("nan"), "zero_variance"),
        G.CNRResult(2.0),
        G.CNRResult(float("nan"), "box 0: empty_box"),
    ]
    rep = G.grounding_report(results, ["A", "A", "A", "B", None], resamples=100, seed=0)
    assert rep["value"] == pytest.approx(2.0) and rep["n"] == 3 and rep["n_undefined"] == 2
    assert rep["undefined_reasons"] == {"empty_box": 1, "zero_variance": 1}
    assert rep["per_category"]["A"]["value"] == pytest.approx(2.0)
    assert (rep["per_category"]["A"]["n"], rep["per_category"]["A"]["n_undefined"]) == (2, 1)
    assert rep["per_category"]["B"]["value"] == 2.0
    assert rep["per_category"]["unknown"]["value"] is None
    assert rep["per_category"]["unknown"]["n_undefined"] == 1
    low, high = rep["ci95"]
    assert low <= 2.0 <= high
    assert rep["variant"] == "CNR" and rep["definition"] == {"signed": False, "per_box": False, "ddof": 0}


def test_sample_category():
    assert G.sample_category({"category": "Pneumonia"}, []) == "Pneumonia"
    assert G.sample_category({}, [Box("Edema", 0, 0, 1, 1), Box("Edema", 2, 2, 1, 1)]) == "Edema"
    assert G.sample_category({}, [Box("Edema", 0, 0, 1, 1), Box("Mass", 2, 2, 1, 1)]) is None


def test_registered_metrics_on_scorer_records():
    from bench.plugins import registry

    m = MAP.tolist()
    m[3][3] = None  # JSON null → NaN
    preds = [m, {"similarity_map": MAP2.tolist()}, np.ones((2, 2)).tolist()]
    refs = [
        {"boxes": [[0, 0, 2, 2]], "image_shape": [4, 4]},
        {"boxes": [{"x": 0, "y": 0, "w": 2, "h": 2}, {"x": 2, "y": 2, "w": 2, "h": 2}]},
        {"boxes": [[0, 0, 1, 1]]},  # constant map → undefined, left out of the mean
    ]
    expected = {
        "CNR": (30 / math.sqrt(145) + math.sqrt(5)) / 2,
        "CNR-per-box": (30 / math.sqrt(145) + 2.5) / 2,
    }
    reg = registry()
    for name, value in expected.items():
        spec = reg.get("metrics", name)
        assert spec.family == "grounding" and spec.level == "sample"
        assert resolve(spec.fn)(preds, refs) == pytest.approx(value)
    signed = resolve(reg.get("metrics", "CNR-signed").fn)([(-MAP).tolist()], [{"boxes": [[0, 0, 2, 2]]}])
    assert signed == pytest.approx(-8 / math.sqrt(11))
    unbiased = resolve(reg.get("metrics", "CNR-unbiased").fn)([MAP.tolist()], [{"boxes": [[0, 0, 2, 2]]}])
    assert unbiased == pytest.approx((8 / 3) / math.sqrt(52 / 33))
    assert math.isnan(G.mean_cnr([np.ones((2, 2)).tolist()], [{"boxes": [[0, 0, 1, 1]]}]))
    with pytest.raises(BenchError, match="expected a mapping with 'boxes'"):
        G.mean_cnr([m], [[0, 0, 2, 2]])
