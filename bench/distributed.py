"""Running one evaluation over several processes (``torchrun`` / ``accelerate launch``).

The launcher starts one process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`context` joins the ``torch.distributed`` process group
(NCCL on CUDA, gloo on CPU) and reports the rank. The runner then gives each rank a
deterministic share of the samples (:func:`shard_indices`: whole batches, dealt round-robin, so
that every batch a rank computes is exactly a batch of the one-process run and the model sees
the same inputs together), gathers what the ranks computed on rank 0, and rank 0 alone scores
and writes. Nothing here is a communication layer of its own: the collectives are
``torch.distributed``'s object collectives.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.interfaces import BenchError

# How long a rank waits at a collective for the others (e.g. while rank 0 scores a long task).
TIMEOUT = _dt.timedelta(hours=6)


@dataclass
class DistContext:
    """This process's place in the run: rank 0 of 1 without a launcher."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # this module initialised the process group (and destroys it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}

    # ------------------------------------------------------------------ collectives (no-ops on one process)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None on the other ranks."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank (in rank order)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BenchError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def launched_world_size() -> int:
    """WORLD_SIZE as set by a launcher (1 without one)."""
    return _env_int("WORLD_SIZE") or 1


def device_for_rank(device: str, local_rank: int, world_size: int) -> str:
    """The device a rank uses: with several processes, ``auto``/``cuda`` mean this rank's own GPU."""
    if world_size <= 1:
        return device
    if device == "cpu":
        return device
    import torch

    if device == "auto" and not torch.cuda.is_available():
        return "cpu"
    if device in ("auto", "cuda"):
        if local_rank >= torch.cuda.device_count():
            raise BenchError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; start at most that many "
                "processes per node (torchrun --nproc-per-node) or pass --device cpu"
            )
        return f"cuda:{local_rank}"
    return device  # an explicit cuda:N is the user's choice


def context(device: str = "auto") -> DistContext:
    """Join the launcher's process group, or return the one-process context."""
    world = launched_world_size()
    if world <= 1:
        return DistContext()
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None:
        raise BenchError("WORLD_SIZE is set but RANK is not: start distributed runs with torchrun or accelerate launch")
    import torch
    import torch.distributed as dist

    local_rank = rank if local_rank is None else local_rank
    rank_device = device_for_rank(device, local_rank, world)
    backend = "nccl" if rank_device.startswith("cuda") else "gloo"
    owns = False
    if dist.is_initialized():
        backend = str(dist.get_backend())
    else:
        if backend == "nccl":
            torch.cuda.set_device(int(rank_device.split(":")[1]))
        try:
            dist.init_process_group(backend=backend, timeout=TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise BenchError(f"cannot join the process group of {world} ranks ({backend}): {exc}") from None
        owns = True
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise BenchError(
            f"process group is rank {dist.get_rank()} of {dist.get_world_size()}, "
            f"the environment says {rank} of {world}"
        )
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, owns_group=owns)


def shard_indices(n: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The sample positions rank ``rank`` computes: batches ``[b*B, (b+1)*B)`` with ``b ≡ rank (mod world)``.

    Each batch is the one-process run's batch, so batched model calls see the same inputs
    together on any number of ranks; the shares cover every position once."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad shard: n={n}, batch_size={batch_size}, rank={rank}, world_size={world_size}")
    out: list[int] = []
    for b, start in enumerate(range(0, n, batch_size)):
        if b % world_size == rank:
            out.extend(range(start, min(start + batch_size, n)))
    return out


def take(items: Sequence[Any], indices: Sequence[int]) -> list[Any]:
    return [items[i] for i in indices]
