"""`bench compare`, the CI regression gate: real runs of the trained clip-baseline against a deliberately
degraded copy (exit 1), a copy with noise-level weight noise (exit 0) and mismatched runs (exit 2); the
paired bootstrap's numbers are checked against the result files and against a hand-computed case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.interfaces import BenchError
from bench.metrics.stats import DefinedMean, paired_bootstrap, paired_bootstrap_statistic, paired_bootstrap_statistics
from reports.compare import _decide, compare, holm
from reports.io import read_results
from tests.conftest import run_bench

RESAMPLES = 100  # with Holm over the four metrics compared: smallest adjusted p = 4/101 < 0.05
METRICS = ("--metric", "AUC", "--metric", "F1")  # each in both zero-shot tasks


def _compare_cli(baseline: Path, new: Path, *args: str):
    return run_bench("compare", str(baseline), str(new), "--resamples", str(RESAMPLES), *args)


def test_degraded_checkpoint_is_a_regression(bench_runs):
    res = _compare_cli(bench_runs["base"], bench_runs["degraded"], "--metric", "AUC,F1", "--format", "markdown")
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "### bench compare: ❌ Regression"
    assert "| task | metric | baseline | new | Δ (95 % CI) | p | verdict |" in lines
    rows = {
        tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in lines if line.startswith("| synthcxr")
    }
    assert set(rows) == {(t, f"{m} ↑") for t in ("synthcxr_zs", "synthcxr_zs_5class") for m in ("AUC", "F1")}
    base, new = read_results(bench_runs["base"]), read_results(bench_runs["degraded"])
    for (task, metric), line in rows.items():
        name = metric.split()[0]
        cells = [c.strip() for c in line.split("|")[1:-1]]
        b, n = (r["tasks"][task]["metrics"][name]["value"] for r in (base, new))
        # the values recomputed from the samples files are those results.json records
        assert cells[2:4] == [f"{b:.4f}", f"{n:.4f}"] and cells[4].startswith(f"{n - b:+.4f} [")
        assert "**regression**: significant drop" in cells[6], line
    auc = [c.strip() for c in rows[("synthcxr_zs", "AUC ↑")].split("|")[1:-1]]
    high = float(auc[4].split(",")[1].rstrip("]"))
    assert float(auc[4].split()[0]) < -0.05 and high < 0, auc  # weight noise 0.3 costs more than 0.05 AUC
    assert auc[5] == f"{4 / (RESAMPLES + 1):.3g}"  # every resample worse: p = 1/(R+1), Holm x 4
    assert "100 resamples" in res.stdout and "alpha 0.05, Holm-adjusted" in res.stdout


def test_noise_level_differences_pass(bench_runs):
    res = _compare_cli(bench_runs["base"], bench_runs["noisy"], *METRICS, "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["verdict"] == "no regression" and out["exit_code"] == 0 and out["correction"] == "holm"
    base, new = read_results(bench_runs["base"]), read_results(bench_runs["noisy"])
    for r in out["comparisons"]:
        assert r["baseline"] == base["tasks"][r["task"]]["metrics"][r["metric"]]["value"]
        assert r["new"] == pytest.approx(new["tasks"][r["task"]]["metrics"][r["metric"]]["value"], abs=1e-12)
        assert r["method"] == "task" and r["n"] == base["tasks"][r["task"]]["n_samples"]
        assert not r["regression"] and r["p_adjusted"] >= 0.05 and r["ci95"][0] <= r["difference"] <= r["ci95"][1]
    diffs = [abs(r["difference"]) for r in out["comparisons"]]
    assert max(diffs) < 0.02 and any(d > 0 for d in diffs), diffs  # the noise moved something, a little


def test_max_drop_fails_noise_beyond_it(bench_runs):
    comp = compare(bench_runs["base"], bench_runs["noisy"], metrics=["AUC", "F1"], resamples=RESAMPLES)
    if max(r.worsening for r in comp.rows) <= 0:  # the noise happened to improve everything: swap the roles
        comp = compare(bench_runs["noisy"], bench_runs["base"], metrics=["AUC", "F1"], resamples=RESAMPLES)
    assert comp.exit_code == 0
    worst = max(comp.rows, key=lambda r: r.worsening)
    _decide(comp.rows, 0.05, worst.worsening / 2, "holm")
    assert comp.exit_code == 1 and worst.regression and "max-drop" in worst.reason
    _decide(comp.rows, 0.05, worst.worsening * 2, "holm")
    assert comp.exit_code == 0 and not comp.regressions
    text = comp.render("text")
    assert text.startswith("bench compare: no regression (4 metric(s) compared)") and "AUC ↑" in text
    assert json.loads(comp.render("json"))["comparisons"][0]["ci95"] == [comp.rows[0].low, comp.rows[0].high]


def test_mismatched_runs_are_unusable_input(bench_runs, tmp_path):
    # other samples (--limit 100): the dataset fingerprints differ
    res = _compare_cli(bench_runs["limited"], bench_runs["base"])
    assert res.returncode == 2 and "different data" in res.stderr and "synthcxr_zs" in res.stderr, res.stderr
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    # a task of the baseline missing from the new run
    with pytest.raises(BenchError, match=r"lacks task\(s\) synthcxr_zs, synthcxr_zs_5class"):
        compare(bench_runs["base"], bench_runs["retrieval"])
    # a metric that is not in the baseline, a folder without results, too few resamples for Holm
    with pytest.raises(BenchError, match="--metric BLEU"):
        compare(bench_runs["base"], bench_runs["noisy"], metrics=["BLEU"])
    with pytest.raises(BenchError, match="no result file"):
        compare(bench_runs["base"], tmp_path)
    with pytest.raises(BenchError, match="use --resamples 120 or more"):
        compare(bench_runs["base"], bench_runs["noisy"], resamples=50)
    # a samples file that does not belong to its results.json
    copy = tmp_path / "copy"
    shutil.copytree(bench_runs["noisy"], copy)
    samples = copy / "samples" / "synthcxr_zs_5class.jsonl"
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    for rec in lines:
        rec["prediction"] = {k: -v for k, v in rec["prediction"].items()}
    samples.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    with pytest.raises(BenchError, match=r"does not reproduce its results\.json"):
        compare(bench_runs["base"], copy, metrics=["ACC"], resamples=RESAMPLES)


# --------------------------------------------------------------------------- statistics


def test_holm_adjustment_by_hand():
    # sorted p: 0.01, 0.02, 0.04, 0.3 -> 4*0.01, 3*0.02, max(0.06, 2*0.04), max(0.08, 0.3)
    assert holm([0.04, 0.01, 0.3, 0.02]) == pytest.approx([0.08, 0.04, 0.3, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_defined_mean_is_the_nanmean_of_each_resample():
    values = [0.2, None, 0.8, float("nan"), 1.4]
    stats = DefinedMean.statistics(values)
    w = np.array([[1, 1, 0, 0, 2], [0, 3, 0, 2, 0], [2, 0, 1, 1, 1]], dtype=float)
    got = DefinedMean().aggregate(w @ stats, 5)
    assert got[0] == pytest.approx((0.2 + 2 * 1.4) / 3) and np.isnan(got[1]) and got[2] == pytest.approx(2.6 / 4)


def test_several_statistics_share_the_draws_of_one():
    rng = np.random.default_rng(4)
    a, b = rng.random(80), rng.random(80)

    def stats(x):
        return lambda idx: {"mean": float(x[idx].mean()), "max": float(x[idx].max())}

    joint = paired_bootstrap_statistics(stats(a), stats(b), ["mean", "max"], 80, resamples=120, seed=9)
    for name, fn in (("mean", np.mean), ("max", np.max)):
        alone = paired_bootstrap_statistic(
            lambda idx, fn=fn: float(fn(a[idx])), lambda idx, fn=fn: float(fn(b[idx])), 80, resamples=120, seed=9
        )
        assert joint[name] == alone
    # the mean also agrees with the exact additive route (sufficient statistics, same draws)
    additive = paired_bootstrap(DefinedMean(), DefinedMean.statistics(a), DefinedMean.statistics(b), 120, 9)
    assert joint["mean"].difference == pytest.approx(additive.difference)
    assert (joint["mean"].low, joint["mean"].high) == pytest.approx((additive.low, additive.high))
    assert joint["mean"].p_value == pytest.approx(additive.p_value)


# --------------------------------------------------------------------------- the workflow in docs/ci.md


def test_ci_workflow_in_the_docs():
    import re
    import shlex

    import yaml

    from bench.cli import cli

    text = (Path(__file__).resolve().parents[1] / "docs" / "ci.md").read_text()
    workflow = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    steps = workflow["jobs"]["gate"]["steps"]
    assert workflow[True] == {"push": {"branches": ["main"]}, "pull_request": None}  # YAML 1.1 reads "on" as True
    assert workflow["permissions"]["pull-requests"] == "write"
    env = {k: v for k, v in workflow["env"].items() if "${{" not in str(v)}
    commands = []
    for step in steps:
        for line in step.get("run", "").splitlines():
            if ".venv/bin/bench " in line:
                command = line[line.index(".venv/bin/bench ") :].split(" >>")[0]
                commands.append(re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), "x"), command))
    names = [shlex.split(c)[1] for c in commands]
    assert names == ["train", "run", "run", "compare", "leaderboard"], names
    for command in commands:
        args = shlex.split(command)[1:]
        sub = cli.commands[args[0]]
        sub.make_context(args[0], args[1:])  # raises on an unknown option or a missing argument
    gate = next(s["run"] for s in steps if s.get("name") == "Gate")
    assert "--format markdown" in gate and "gh pr comment" in gate and 'exit "$status"' in gate
