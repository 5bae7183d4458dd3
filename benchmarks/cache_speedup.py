"""How much faster is a second identical run, served from the prediction cache?

Runs the same `bench run` twice in this process against a fresh cache file and prints, per
task, the prediction-phase time of both runs and their ratio (target: >= 20x), plus the whole
run's wall time. Metrics of both runs must be identical.

    python benchmarks/cache_speedup.py [--checkpoint DIR] [--preset tiny|paper] [--tasks synthcxr_zs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench import api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="trained clip-baseline folder (default: untrained)")
    parser.add_argument("--preset", default="tiny", help="architecture of the untrained model")
    parser.add_argument("--tasks", default="synthcxr_zs,synthcxr_zs_5class")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    model_args = {"checkpoint": args.checkpoint} if args.checkpoint else {"preset": args.preset}
    tasks = args.tasks.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        options = dict(
            model_args=model_args,
            output=str(Path(tmp) / "runs"),
            cache_path=str(Path(tmp) / "c.sqlite"),
            batch_size=args.batch_size,
            bootstrap=200,
            progress=False,
            device="cpu",
        )
        timings = []
        results = []
        for _ in range(2):
            start = time.perf_counter()
            outcome = api.evaluate("clip-baseline", tasks, log=lambda m: None, **options)
            timings.append(time.perf_counter() - start)
            results.append(outcome.results)
    first, second = results
    rows = []
    for task in tasks:
        a, b = first["tasks"][task], second["tasks"][task]
        same = a["metrics"] == b["metrics"]
        rows.append(
            {
                "task": task,
                "n": a["n_samples"],
                "predict_s_uncached": a["predict_time_s"],
                "predict_s_cached": b["predict_time_s"],
                "speedup": round(a["predict_time_s"] / max(b["predict_time_s"], 1e-9), 1),
                "model_items_uncached": a["calls"]["model_items"],
                "model_items_cached": b["calls"]["model_items"],
                "identical_metrics": same,
            }
        )
    total_first = sum(first["tasks"][t]["predict_time_s"] for t in tasks)
    total_second = sum(second["tasks"][t]["predict_time_s"] for t in tasks)
    print(
        json.dumps(
            {
                "model": "clip-baseline",
                "model_args": model_args,
                "tasks": rows,
                "predict_s_total": [round(total_first, 3), round(total_second, 3)],
                "predict_speedup_total": round(total_first / max(total_second, 1e-9), 1),
                "run_wall_s": [round(t, 3) for t in timings],
                "run_wall_speedup": round(timings[0] / timings[1], 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
