"""The whole test suite as `make test` runs it: two pytest processes side by side.

The tests that need trained models (the clip-baseline trained in the session and the models trained from it,
marked ``trained_models`` by tests/conftest.py) spend minutes training; the other tests are mostly
single-threaded and take a few minutes. The two halves start together, each with one torch thread (two
processes each with several OpenMP threads on two cores slow training down twice over); once the light half
has ended, the training half uses every core from its next test on (tests/conftest.py reads
``BENCH_SUITE_PARTNER_PID``). The light half's output is shown when it ends; the exit status is the worse.

    python -m tests.run_suite [extra pytest arguments]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def main(argv: list[str]) -> int:
    base = [sys.executable, "-m", "pytest", "-q", "--durations=15", *argv]
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as light_log:
        light = subprocess.Popen(
            [*base, "-m", "not trained_models", "-p", "no:cacheprovider"],
            stdout=light_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        print("== tests that train models (the others run alongside; their report follows) ==", flush=True)
        heavy = subprocess.call(
            [*base, "-m", "trained_models"], env={**os.environ, "BENCH_SUITE_PARTNER_PID": str(light.pid)}
        )
        light_status = light.wait()
        light_log.seek(0)
        print("\n== the other tests ==", flush=True)
        sys.stdout.write(light_log.read())
    print(f"\nwhole suite: {time.perf_counter() - start:.0f} s, exit statuses {heavy} and {light_status}")
    if heavy == light_status == 5:
        return 5  # pytest's "no tests collected"
    return max(0 if s == 5 else s for s in (heavy, light_status))  # one half may select nothing


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
