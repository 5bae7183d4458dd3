"""Resolve a device request ("auto" | "cpu" | "cuda" | "cuda:N") and set torch threads."""

from __future__ import annotations

import os

import torch

from bench.interfaces import BenchError

_ACCEPTED = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Return the torch.device for ``spec``.

    "auto" (or None) picks CUDA when available, else CPU. Asking for CUDA explicitly on a
    machine without it raises BenchError instead of failing later inside torch.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    name = "auto" if spec is None else str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BenchError(
                f"device {spec!r} requested but CUDA is not available on this machine "
                "(use device='cpu' or device='auto')"
            )
        if name.startswith("cuda:"):
            index_text = name.split(":", 1)[1]
            if not index_text.isdigit():
                raise BenchError(f"bad device {spec!r}: expected {_ACCEPTED}")
            index = int(index_text)
            if index >= torch.cuda.device_count():
                raise BenchError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
            return torch.device("cuda", index)
        return torch.device("cuda")
    raise BenchError(f"unknown device {spec!r}: expected {_ACCEPTED}")


def set_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    ``None`` uses ``BENCH_THREADS`` from the environment if set, else the number of CPU cores
    available to this process (torch's default can oversubscribe containers).
    """
    if num_threads is None:
        env = os.environ.get("BENCH_THREADS")
        if env:
            try:
                num_threads = int(env)
            except ValueError:
                raise BenchError(f"BENCH_THREADS must be an integer, got {env!r}") from None
        else:
            try:
                num_threads = len(os.sched_getaffinity(0))
            except AttributeError:  # pragma: no cover - non-Linux
                num_threads = os.cpu_count() or 1
    num_threads = max(1, int(num_threads))
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return num_threads
