"""Wall time of the fine-tuning protocol's three synthcxr tasks in linear-probe mode (target: ≤ 5 minutes on
2 CPU cores), with a fresh prediction cache, as a user types it:

    bench run --model clip-baseline --model-args checkpoint=DIR \\
        --task synthcxr_ft_1pct,synthcxr_ft_10pct,synthcxr_ft_100pct

Prints the wall time of the whole command and the CPU time it used (user + system: what it costs when other
work shares the cores), each task's time, feature rows computed and served from the cache, and AUC as mean ± sd
over seeds. ``--scratch`` also runs the ``_scratch`` variants (timed separately).

    python benchmarks/finetune_speed.py --checkpoint DIR [--scratch] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = ("synthcxr_ft_1pct", "synthcxr_ft_10pct", "synthcxr_ft_100pct")
TARGET_S = 300.0


def bench_run(tasks: list[str], checkpoint: str, tmp: Path, device: str) -> tuple[float, float, dict]:
    command = [
        sys.executable, "-m", "bench", "run", "--model", "clip-baseline", "--model-args", f"checkpoint={checkpoint}",
        "--task", ",".join(tasks), "--output", str(tmp / "runs"), "--cache", str(tmp / "cache.sqlite"),
        "--device", device, "--no-progress",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"bench run failed ({done.returncode}):\n{done.stderr}")
    printed = json.loads(done.stdout)
    return wall, cpu, json.loads((Path(printed["run_dir"]) / "results.json").read_text())


def rows(results: dict) -> list[dict]:
    out = []
    for name, task in results["tasks"].items():
        auc = task["metrics"]["AUC"]
        out.append(
            {
                "task": name,
                "wall_s": task["wall_time_s"],
                "features_computed": task["calls"]["model_items"],
                "features_cached": task["calls"]["cache_hits"],
                "train_samples": [r["train_samples"] for r in task["config"]["runs"]],
                "AUC_mean": round(auc["value"], 4),
                "AUC_sd": None if auc["sd"] is None else round(auc["sd"], 4),
                "AUC_seeds": {k: round(v["value"], 4) for k, v in auc["seeds"].items()},
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", required=True, help="a trained clip-baseline folder (bench train clip-baseline)"
    )
    parser.add_argument("--scratch", action="store_true", help="also run the Scratch variants (timed separately)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    report: dict = {"command_tasks": list(TASKS), "target_s": TARGET_S, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu, results = bench_run(list(TASKS), args.checkpoint, Path(tmp), args.device)
        report.update({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "within_target": wall <= TARGET_S})
        report["tasks"] = rows(results)
        if args.scratch:
            wall, cpu, results = bench_run([f"{t}_scratch" for t in TASKS], args.checkpoint, Path(tmp), args.device)
            report["scratch"] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "tasks": rows(results)}
    with contextlib.suppress(OSError):  # other work on the machine slows it down
        report["load_average"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
