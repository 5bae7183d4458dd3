"""Bootstrap statistics: resampling from sufficient statistics, shared resamples, the paired test, schema."""

from __future__ import annotations

import random

import jsonschema
import numpy as np
import pytest

from bench.interfaces import BenchError
from bench.metrics import nlg
from bench.metrics.stats import (
    additive_bootstrap_ci,
    additive_bootstrap_cis,
    additive_resamples,
    additive_value,
    align_by_id,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_weights,
    compare_runs,
    is_additive,
    iter_bootstrap_weights,
    paired_bootstrap,
    paired_bootstrap_statistic,
    percentile_interval,
    summarise_seeds,
)
from reports.schema import METRIC, SCHEMA_VERSION, results_schema
from tests.real_reports import require_iu_reports


class Mean:
    """The simplest additive metric: the mean of one per-sample value."""

    def stats(self, predictions, references):
        return np.asarray(predictions, dtype=float)[:, None]

    def aggregate(self, totals, n):
        return np.asarray(totals)[..., 0] / n


@pytest.fixture(scope="module")
def tokenised_pairs() -> tuple[list[str], list[list[str]]]:
    reports = [r for r in require_iu_reports() if r.findings][:120]
    refs = [r.findings for r in reports]
    rng = random.Random(5)
    preds = [
        refs[(i + 1) % len(refs)] if i % 2 else " ".join(refs[i].split()[: rng.randrange(3, 30)])
        for i in range(len(refs))
    ]
    return nlg.coco_tokenize(preds, refs)


def test_weights_are_the_multiplicities_of_bootstrap_indices() -> None:
    idx = bootstrap_indices(37, 25, seed=11)
    expected = np.stack([np.bincount(row, minlength=37) for row in idx]).astype(float)
    np.testing.assert_array_equal(bootstrap_weights(37, 25, seed=11), expected)
    # drawn in small blocks, the same draws
    blocks = list(iter_bootstrap_weights(37, 25, seed=11, max_cells=37 * 4))
    assert [b.shape[0] for b in blocks] == [4, 4, 4, 4, 4, 4, 1]
    np.testing.assert_array_equal(np.concatenate(blocks), expected)
    assert bootstrap_weights(5, 0, seed=0).shape == (0, 5)


def test_additive_interval_equals_recomputing_the_statistic() -> None:
    x = np.random.default_rng(0).normal(size=200)
    got = additive_bootstrap_ci(Mean(), x[:, None], 300, seed=4)
    want = bootstrap_ci(lambda idx: float(x[idx].mean()), x.size, 300, seed=4)
    assert got == pytest.approx(want, abs=1e-12)
    assert additive_bootstrap_ci(Mean(), x[:, None], 0, seed=4) == (None, None)
    assert is_additive(Mean()) and is_additive(nlg.bleu4) and not is_additive(np.mean)


def test_bleu_and_rouge_resamples_are_exact(tokenised_pairs: tuple[list[str], list[list[str]]]) -> None:
    """A resample scored from the summed statistics equals BLEU / ROUGE-L recomputed from the resampled text."""
    cands, refs = tokenised_pairs
    table = nlg.ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in refs])
    bleu_stats = nlg.bleu_stats_from_table(table)
    rouge_stats = nlg.coco_rouge_l_scores(cands, refs)[:, None]
    resampled_bleu = additive_resamples(nlg.bleu4, bleu_stats, 8, seed=2)
    resampled_rouge = additive_resamples(nlg.rougeL, rouge_stats, 8, seed=2)
    for r, idx in enumerate(bootstrap_indices(len(cands), 8, seed=2)):
        direct = nlg.coco_scores([cands[i] for i in idx], [refs[i] for i in idx])
        assert resampled_bleu[r] == pytest.approx(direct["bleu4"], abs=1e-12)
        assert resampled_rouge[r] == pytest.approx(direct["rougeL"], abs=1e-12)
    assert additive_value(nlg.bleu4, bleu_stats) == pytest.approx(nlg.coco_scores(cands, refs)["bleu4"], abs=1e-12)


def test_cider_resamples_hold_document_frequencies_fixed(tokenised_pairs: tuple[list[str], list[list[str]]]) -> None:
    cands, refs = tokenised_pairs
    per_sample = nlg.cider_scores_from_table(
        nlg.ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in refs])
    )
    resampled = additive_resamples(nlg.cider, per_sample[:, None], 5, seed=9)
    for r, idx in enumerate(bootstrap_indices(len(cands), 5, seed=9)):
        assert resampled[r] == pytest.approx(per_sample[idx].mean(), abs=1e-12)  # not a re-fit of the IDF
        refit = nlg.coco_scores([cands[i] for i in idx], [refs[i] for i in idx])["cider"]
        assert refit != pytest.approx(resampled[r], abs=1e-9)


def test_shared_resamples_match_separate_ones(tokenised_pairs: tuple[list[str], list[list[str]]]) -> None:
    cands, refs = tokenised_pairs
    table = nlg.ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in refs])
    bleu = nlg.bleu_stats_from_table(table)
    items = {
        "bleu1": (nlg.bleu1, bleu),
        "bleu4": (nlg.bleu4, bleu),
        "rougeL": (nlg.rougeL, nlg.coco_rouge_l_scores(cands, refs)[:, None]),
        "cider": (nlg.cider, nlg.cider_scores_from_table(table)[:, None]),
    }
    together = additive_bootstrap_cis(items, 200, seed=3)
    for name, (metric, stats) in items.items():
        assert together[name] == pytest.approx(additive_bootstrap_ci(metric, stats, 200, seed=3), abs=1e-12)
        low, high = together[name]
        assert low < additive_value(metric, stats) < high
    assert additive_bootstrap_cis({}, 10, 0) == {}


def test_percentile_interval_of_undefined_resamples() -> None:
    assert percentile_interval(np.array([np.nan] * 90 + [1.0] * 10), 100) == (None, None)
    assert percentile_interval(np.arange(101.0), 101) == pytest.approx((2.5, 97.5))


# --------------------------------------------------------------------------- paired test


def test_paired_bootstrap_of_identical_runs() -> None:
    x = np.random.default_rng(1).random((50, 1))
    out = paired_bootstrap(Mean(), x, x, resamples=200, seed=0)
    assert out.difference == 0 and (out.low, out.high) == (0, 0) and out.p_value == 1.0
    assert out.to_json()["ci95"] == [0.0, 0.0] and out.n == 50


def test_paired_bootstrap_of_a_constant_shift() -> None:
    # every resampled difference equals the observed one: none is as extreme as |d| under the null -> p = 1/(R+1)
    x = np.random.default_rng(2).random((40, 1))
    out = paired_bootstrap(Mean(), x + 0.1, x, resamples=99, seed=0)
    assert out.difference == pytest.approx(0.1) and out.low == pytest.approx(0.1) and out.high == pytest.approx(0.1)
    assert out.p_value == pytest.approx(1 / 100)


def test_paired_bootstrap_detects_a_better_run_and_not_noise(tokenised_pairs) -> None:
    cands, refs = tokenised_pairs
    good = [rr[0] for rr in refs]  # copies of the references
    table_a = nlg.ngram_table([c.split() for c in good], [[r.split() for r in rr] for rr in refs])
    table_b = nlg.ngram_table([c.split() for c in cands], [[r.split() for r in rr] for rr in refs])
    a, b = nlg.bleu_stats_from_table(table_a), nlg.bleu_stats_from_table(table_b)
    out = paired_bootstrap(nlg.bleu4, a, b, resamples=300, seed=0)
    assert out.value_a == pytest.approx(1.0, abs=1e-6) and out.difference > 0.3
    assert out.low > 0 and out.p_value <= 1 / 301 + 1e-12
    flipped = paired_bootstrap(nlg.bleu4, b, a, resamples=300, seed=0)
    assert flipped.difference == pytest.approx(-out.difference)
    assert (flipped.low, flipped.high) == pytest.approx((-out.high, -out.low))
    # two runs drawn from the same distribution: no evidence of a difference
    rng = np.random.default_rng(7)
    noise_a, noise_b = rng.random((300, 1)), rng.random((300, 1))
    null = paired_bootstrap(Mean(), noise_a, noise_b, resamples=500, seed=1)
    assert null.low < 0 < null.high and null.p_value > 0.05


def test_generic_paired_bootstrap_matches_the_additive_one() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random((60, 1)), rng.random((60, 1)) * 0.9
    additive = paired_bootstrap(Mean(), a, b, resamples=150, seed=5)
    generic = paired_bootstrap_statistic(
        lambda idx: float(a[idx].mean()), lambda idx: float(b[idx].mean()), 60, resamples=150, seed=5
    )
    assert generic.difference == pytest.approx(additive.difference)
    assert (generic.low, generic.high) == pytest.approx((additive.low, additive.high))
    assert generic.p_value == pytest.approx(additive.p_value)
    with pytest.raises(BenchError, match="same samples"):
        paired_bootstrap(Mean(), a, b[:10])


def test_align_by_id() -> None:
    rows_a, rows_b = align_by_id(["x", "y", "z", "w"], ["w", "q", "x", "y"])
    assert rows_a.tolist() == [0, 1, 3] and rows_b.tolist() == [2, 3, 0]
    with pytest.raises(BenchError, match="share no sample ids"):
        align_by_id(["a"], ["b"])
    with pytest.raises(BenchError, match="repeated sample ids"):
        align_by_id(["a", "a"], ["a"])


def test_compare_runs_matches_ids_and_uses_sufficient_statistics(tokenised_pairs) -> None:
    cands, refs = tokenised_pairs
    run_a = [{"id": f"s{i}", "prediction": rr[0], "reference": rr[0]} for i, rr in enumerate(refs)]
    run_b = [{"id": f"s{i}", "prediction": c, "reference": rr[0]} for i, (c, rr) in enumerate(zip(cands, refs))]
    run_b = [*run_b[::-1], {"id": "extra", "prediction": "x", "reference": "y"}]  # other order + an id A lacks
    out = compare_runs(nlg.bleu4, run_a, run_b, resamples=200, seed=0)
    assert out.n == len(refs) and out.value_a == pytest.approx(1.0, abs=1e-6)
    assert out.value_b == pytest.approx(nlg.bleu4(cands, [rr[0] for rr in refs]), abs=1e-12)
    assert out.low > 0 and out.p_value < 0.01
    # a plain function metric is recomputed on each resample, with the same draws
    plain = compare_runs(lambda p, r: float(np.mean([a == b for a, b in zip(p, r)])), run_a, run_b, 100, seed=0)
    assert plain.value_a == 1.0 and plain.difference > 0
    bad = [dict(run_b[0], reference="something else"), *run_b[1:]]
    with pytest.raises(BenchError, match="different references"):
        compare_runs(nlg.bleu4, run_a, bad, resamples=10)


# --------------------------------------------------------------------------- result schema


def test_metric_schema_accepts_unavailable_metrics() -> None:
    assert SCHEMA_VERSION.split(".")[0] == "1" and SCHEMA_VERSION != "1.0"
    jsonschema.validate({"value": None, "ci95": [None, None], "n": 3, "unavailable": "needs Java"}, METRIC)
    jsonschema.validate({"value": 0.5, "ci95": [0.4, 0.6], "n": 3}, METRIC)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"value": None, "ci95": [None, None], "n": 3, "unavailable": ""}, METRIC)
    assert results_schema()["properties"]["schema_version"]["pattern"] == r"^1\.\d+$"


def test_metric_schema_accepts_seed_summaries() -> None:
    seeds = {"0": {"value": 0.8, "ci95": [0.7, 0.9]}, "1": {"value": 0.9, "ci95": [None, None]}}
    jsonschema.validate({"value": 0.85, "ci95": [0.75, 0.95], "n": 3, "sd": 0.07, "seeds": seeds}, METRIC)
    jsonschema.validate({"value": 0.8, "ci95": [None, None], "n": 3, "sd": None, "seeds": {"0": seeds["0"]}}, METRIC)
    for bad in ({"sd": -0.1}, {"seeds": {}}, {"seeds": {"0": {"value": 0.8}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"value": 0.8, "ci95": [None, None], "n": 3, **bad}, METRIC)


def test_summarise_seeds_mean_sd_intervals_and_metadata() -> None:
    import statistics

    from reports.text import metric_text

    bundles = {
        0: {"value": 0.80, "n": 50, "per_class": {"a": 0.7, "b": 0.9}, "average": "macro", "threshold": {"a": 0.2}},
        1: {"value": 0.86, "n": 50, "per_class": {"a": 0.8, "b": 0.92}, "average": "macro", "threshold": {"a": 0.3}},
        2: {"value": 0.83, "n": 50, "per_class": {"a": None, "b": 0.91}, "average": "macro", "threshold": {"a": 0.3}},
    }
    rng = np.random.default_rng(0)
    resampled = {k: b["value"] + rng.normal(0, 0.02, 400) for k, b in bundles.items()}
    out = summarise_seeds(bundles, resampled, 400)
    assert out["value"] == pytest.approx(statistics.mean([0.80, 0.86, 0.83]))
    assert out["sd"] == pytest.approx(statistics.stdev([0.80, 0.86, 0.83]))
    assert out["per_class"] == {"a": None, "b": pytest.approx(0.91)}
    assert out["average"] == "macro" and "threshold" not in out  # differs between seeds: kept per seed
    assert out["seeds"]["1"]["threshold"] == {"a": 0.3} and out["seeds"]["0"]["value"] == 0.80
    low, high = out["ci95"]
    mean_of_resamples = np.mean([resampled[k] for k in bundles], axis=0)
    assert (low, high) == percentile_interval(mean_of_resamples, 400)
    assert high - low < out["seeds"]["0"]["ci95"][1] - out["seeds"]["0"]["ci95"][0]  # averaging narrows it
    assert metric_text(out) == f"0.8300 ± {statistics.stdev([0.80, 0.86, 0.83]):.4f} (3 seeds)"
    one = summarise_seeds({0: bundles[0]}, None, 0)
    assert one["value"] == 0.80 and one["sd"] is None and one["ci95"] == [None, None]
    assert one["threshold"] == {"a": 0.2} and metric_text(one) == "0.8000"
    undefined = summarise_seeds({0: {"value": None, "n": 5}, 1: {"value": 0.5, "n": 5}}, None, 0)
    assert undefined["value"] is None and undefined["sd"] is None
    assert metric_text({"value": None, "ci95": [None, None], "n": 0, "unavailable": "needs Java"}) == "n/a (needs Java)"
