"""The plugin registry, exercised as a third-party package would use it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.interfaces import BenchError
from bench.plugins import hookimpl, load_registry
from tests.conftest import run_bench

PLUGIN_CODE = '''
"""A third-party plugin: one task (a new instance of the zero-shot protocol) and one model."""
import hashlib

import numpy as np

from bench.interfaces import EMBED, DatasetSpec, ModelAdapter, ModelSpec, TaskSpec, as_pil
from bench.plugins import hookimpl


class PixelModel(ModelAdapter):
    """Embeds an image by its mean brightness in a 4x4 grid; texts by a seeded hash."""

    name = "toy-pixel"
    capabilities = frozenset({EMBED})

    def __init__(self, device="cpu", scale=1.0):
        super().__init__(device=device, scale=scale)
        self.scale = float(scale)

    def fingerprint(self):
        return f"toy-pixel-{self.scale}"

    def num_parameters(self):
        return 0

    def encode_images(self, images):
        out = []
        for im in images:
            a = np.asarray(as_pil(im).convert("L").resize((4, 4)), dtype=np.float64).ravel() * self.scale
            out.append(a / (np.linalg.norm(a) or 1.0))
        return np.array(out, dtype=np.float32)

    def encode_texts(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
            v = rng.normal(size=16)
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


@hookimpl
def bench_register_models():
    return [ModelSpec("toy-pixel", "thirdparty_bench.plugin:PixelModel", frozenset({EMBED}),
                      description="third-party toy", kind="dual encoder")]


def load_toyreal(root, split):
    raise AssertionError("never reached: the folder check refuses first")


@hookimpl
def bench_register_datasets():
    return [DatasetSpec("toyreal", "thirdparty_bench.plugin:load_toyreal", folder="ToyReal-1.0",
                        obtain="ToyReal is credentialed: request access from its publisher.")]


@hookimpl
def bench_register_tasks():
    return [TaskSpec(name="toyreal_zs", dataset="toyreal", protocol="zero_shot", split="test", metrics=("AUC",),
                     requires=frozenset({EMBED}), factory="tasks.zero_shot:ZeroShotClassification",
                     options={"classes": ("Edema",)}),
            TaskSpec(name="toy_synth_zs", dataset="synthcxr", protocol="zero_shot", split="test",
                     metrics=("AUC", "F1", "ACC"), requires=frozenset({EMBED}),
                     factory="tasks.zero_shot:ZeroShotClassification", family="zero-shot",
                     options={"classes": ("Cardiomegaly", "Pleural Effusion")})]
'''


@pytest.fixture(scope="module")
def thirdparty(tmp_path_factory) -> dict[str, str]:
    """A throwaway distribution (package + dist-info with a `bench` entry point) on PYTHONPATH."""
    root = tmp_path_factory.mktemp("site")
    pkg = root / "thirdparty_bench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(PLUGIN_CODE)
    info = root / "thirdparty_bench-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-bench\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text("[bench]\ntoy = thirdparty_bench.plugin\n")
    (info / "RECORD").write_text("")
    return {"PYTHONPATH": str(root)}


def test_listing_does_not_import_torch():
    code = textwrap.dedent("""
        import sys
        from bench import api
        for kind in ("tasks", "models", "datasets", "metrics"):
            api.list_items(kind)
        api.list_plugins()
        heavy = ("torch", "sklearn", "transformers", "sacrebleu", "models.reference.clip_baseline",
                 "bench.metrics.nlg", "bench.metrics.clinical")
        print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_list_tasks_json_lists_every_synthcxr_task():
    res = run_bench("list", "tasks", "--json")
    assert res.returncode == 0, res.stderr
    tasks = {t["name"]: t for t in json.loads(res.stdout)}
    expected = {
        "synthcxr_zs",
        "synthcxr_zs_5class",
        "synthcxr_grounding",
        "synthcxr_retrieval",
        "synthcxr_vqa",
        "synthcxr_rrg",
        "synthcxr_diag",
        "synthcxr_ft_1pct",
        "synthcxr_ft_10pct",
        "synthcxr_ft_100pct",
    }
    assert expected <= set(tasks)
    assert tasks["synthcxr_zs"]["protocol"] == "zero_shot" and tasks["synthcxr_zs"]["requires"] == ["embed"]
    assert tasks["synthcxr_zs"]["metrics"] == ["AUC", "F1", "ACC"]
    assert tasks["synthcxr_grounding"]["requires"] == ["ground"]
    assert tasks["synthcxr_rrg"]["requires"] == ["generate"]
    assert tasks["synthcxr_ft_1pct"]["requires"] == ["backbone"]
    assert tasks["synthcxr_zs"]["implemented"] and tasks["synthcxr_vqa"]["implemented"]
    assert tasks["synthcxr_ft_1pct"]["implemented"] and tasks["synthcxr_ft_1pct"]["family"] == "fine-tune"
    assert {"synthcxr_ft_1pct_full", "synthcxr_ft_1pct_scratch", "synthcxr_ft_1pct_full_scratch"} <= set(tasks)
    assert not tasks["chestxray14_linear_probe"]["implemented"]
    models = json.loads(run_bench("list", "models", "--json").stdout)
    clip = next(m for m in models if m["name"] == "clip-baseline")
    assert clip["capabilities"] == ["backbone", "embed", "ground", "train"]


def test_every_task_metric_is_a_registered_metric():
    reg = load_registry()
    metrics = reg.metrics
    for task in reg.tasks.values():
        missing = [m for m in task.metrics if m not in metrics]
        assert not missing, f"task {task.name} names unregistered metrics {missing}"
    for m in metrics.values():
        assert m.description and m.level in ("corpus", "sample") and m.family, m
        assert isinstance(m.fn, str) and ":" in m.fn, m  # lazy reference
    assert not metrics["MeanRank i2t"].higher_is_better and not metrics["radcliq_v1"].higher_is_better
    assert metrics["bleu4"].higher_is_better


def test_third_party_distribution_registers_task_and_model(thirdparty, tmp_path):
    res = run_bench("list", "tasks", env=thirdparty)
    assert res.returncode == 0, res.stderr
    assert "toy_synth_zs" in res.stdout
    assert "toy-pixel" in run_bench("list", "models", env=thirdparty).stdout
    plugins = json.loads(run_bench("plugins", "--json", env=thirdparty).stdout)
    toy = next(p for p in plugins if p["name"] == "toy")
    assert toy["distribution"] == "thirdparty-bench" and toy["version"] == "0.3.1"
    assert toy["hooks"] == ["bench_register_datasets", "bench_register_models", "bench_register_tasks"]

    res = run_bench(
        "run",
        "--model",
        "toy-pixel",
        "--task",
        "toy_synth_zs",
        "--model-args",
        "scale=2",
        "--output",
        str(tmp_path / "runs"),
        "--bootstrap",
        "50",
        "--no-progress",
        env=thirdparty,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    result = json.loads((Path(out["run_dir"]) / "results.json").read_text())
    task = result["tasks"]["toy_synth_zs"]
    assert result["model"]["args"] == {"scale": 2}
    assert task["n_samples"] > 100
    assert 0.0 <= task["metrics"]["AUC"]["value"] <= 1.0
    assert task["config"]["classes"] == ["Cardiomegaly", "Pleural Effusion"]


def test_disable_plugins_blocks_by_name(thirdparty):
    env = {**thirdparty, "BENCH_DISABLE_PLUGINS": "toy, models"}
    res = run_bench("list", "models", "--json", env=env)
    assert json.loads(res.stdout) == []
    assert "toy_synth_zs" not in run_bench("list", "tasks", env=env).stdout
    plugins = {p["name"]: p for p in json.loads(run_bench("plugins", "--json", env=env).stdout)}
    assert plugins["toy"]["blocked"] and plugins["models"]["blocked"] and not plugins["tasks"]["blocked"]


class _UnknownHook:
    @hookimpl
    def bench_register_widgets(self):
        return []


class _Duplicate:
    @staticmethod
    @hookimpl
    def bench_register_tasks():
        from tasks.catalog import all_tasks

        return all_tasks()[:1]


def test_unknown_hook_is_reported():
    with pytest.raises(BenchError, match=r"unknown hook.*bench_register_widgets"):
        load_registry(extra_plugins=[_UnknownHook()])


def test_duplicate_names_name_both_plugins():
    with pytest.raises(BenchError, match=r"registered twice: by plugin .*tasks"):
        load_registry(extra_plugins=[_Duplicate])


def test_unknown_name_suggests_close_matches():
    reg = load_registry()
    with pytest.raises(BenchError, match="Did you mean: synthcxr_zs"):
        reg.get("tasks", "synthcxr_z")


def test_missing_dataset_is_refused_before_work(thirdparty, tmp_path):
    out = tmp_path / "runs"
    res = run_bench("run", "--model", "toy-pixel", "--task", "toyreal_zs", "--output", str(out), env=thirdparty)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "dataset 'toyreal' is read from local files: pass --data-root" in res.stderr
    assert "ToyReal-1.0" in res.stderr and "request access" in res.stderr
    res = run_bench(
        "run",
        "--model",
        "toy-pixel",
        "--task",
        "toyreal_zs",
        "--output",
        str(out),
        "--data-root",
        str(tmp_path / "data"),
        env=thirdparty,
    )
    assert res.returncode == 2
    assert f"dataset 'toyreal' not found: expected its folder at {tmp_path / 'data' / 'ToyReal-1.0'}" in res.stderr
    assert not out.exists() or not any(out.iterdir())
