"""Smoke test and throughput of the generative transformers adapters: batched vs per-sample generation.

Builds a tiny LLaVA on the fly (random weights, tests/tiny_models.py) and, with ``--checkpoint DIR``, also
loads a real checkpoint (``hf-llava`` when its config is LLaVA -- transformers or original format --,
else ``hf-vlm``; bfloat16 on CUDA, falling back to the CPU with a note). Each model answers the same
synthcxr_vqa-like requests (synthcxr images rendered in memory, the VQA task's prompt texts, greedy,
``--max-new-tokens``) once one request at a time and once in batches of ``--batch-size``, and the script
prints samples/s of both, how many answers agree, and the peak GPU memory.

    python benchmarks/gpu_smoke.py [--checkpoint DIR] [--n 32] [--batch-size 8] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def vqa_like_requests(n: int, max_new_tokens: int, size: int = 224) -> list[Any]:
    """synthcxr images (rendered like the dataset's, without writing it) with the VQA task's prompts."""
    from functools import partial

    from PIL import Image

    from bench.data.synthcxr import make_record
    from bench.interfaces import GenerationRequest, ImageRef
    from tasks.prompts import VQA_CLOSED, VQA_OPEN

    out = []
    for index in range(10**6):
        record, pixels = make_record(0, index, size)
        for qa in record["meta"]["qa"]:
            template = VQA_CLOSED if qa["answer_type"] == "closed" else VQA_OPEN
            image = ImageRef(key=f"gpu-smoke/{size}/{index}", loader=partial(Image.fromarray, pixels))
            prompt = template.format(question=qa["question"])
            out.append(GenerationRequest(images=(image,), prompt=prompt, max_new_tokens=max_new_tokens))
            if len(out) == n:
                return out
    return out


def adapter_for(directory: Path) -> str:
    config = json.loads((directory / "config.json").read_text())
    is_llava = "mm_vision_tower" in config or str(config.get("model_type", "")).startswith("llava")
    return "hf-llava" if is_llava else "hf-vlm"


def build(adapter: str, directory: Path, device: str, dtype: str, batch_size: int) -> Any:
    from models.hf_llava import HFLlava
    from models.hf_vlm import HFVisionLanguageModel

    cls = HFLlava if adapter == "hf-llava" else HFVisionLanguageModel
    return cls(pretrained=str(directory), device=device, dtype=dtype, batch_size=batch_size)


def timed(model: Any, requests: list[Any], batch_size: int) -> tuple[list[str], float, float | None]:
    """Answers, samples/s and peak GPU memory (GiB) with ``batch_size`` requests per forward pass."""
    import torch

    cuda = model.device.type == "cuda"
    model.batch_size = batch_size
    model.generate(requests[: 2 * batch_size])  # warm-up (kernels, allocator, lazy initialisation)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(model.device)
    start = time.perf_counter()
    answers = model.generate(requests)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(model.device) / 2**30 if cuda else None
    return answers, len(requests) / seconds, peak


def measure(name: str, adapter: str, directory: Path, args: argparse.Namespace, requests: list[Any]) -> dict:
    import torch

    device, dtype, notes = args.device, args.dtype, []
    if device in ("auto", "cuda") and not torch.cuda.is_available():
        notes.append("CUDA is not available: ran on the CPU")
        device = "cpu"
    if device == "auto":
        device = "cuda"
    if dtype == "auto" and name == "checkpoint" and device.startswith("cuda"):
        dtype = "bfloat16"
    start = time.perf_counter()
    model = build(adapter, directory, device, dtype, args.batch_size)
    load_s = time.perf_counter() - start
    single, single_rate, single_peak = timed(model, requests, 1)
    batched, batched_rate, batched_peak = timed(model, requests, args.batch_size)
    info = model.describe()
    return {
        "model": name,
        "adapter": adapter,
        "checkpoint": str(directory),
        "format": info.get("format"),
        "prompt_format": info.get("prompt_format"),
        "device": info["device"],
        "dtype": info["dtype"],
        "parameters": info["parameters"],
        "load_s": round(load_s, 2),
        "per_sample_samples_per_s": round(single_rate, 3),
        "batched_samples_per_s": round(batched_rate, 3),
        "speedup": round(batched_rate / single_rate, 2),
        "answers_identical": f"{sum(a == b for a, b in zip(single, batched, strict=True))}/{len(requests)}",
        "peak_gpu_gib_per_sample": None if single_peak is None else round(single_peak, 3),
        "peak_gpu_gib_batched": None if batched_peak is None else round(batched_peak, 3),
        "example_answer": batched[0],
        "notes": notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a local VLM checkpoint folder (optional)")
    parser.add_argument("--adapter", default="auto", choices=("auto", "hf-vlm", "hf-llava"))
    parser.add_argument("--n", type=int, default=32, help="number of requests")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    args = parser.parse_args()

    from tests.tiny_models import save_tiny_llava

    requests = vqa_like_requests(args.n, args.max_new_tokens)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = save_tiny_llava(Path(tmp) / "tiny-llava")
        rows.append(measure("tiny", "hf-llava", tiny, args, requests))
        if args.checkpoint:
            directory = Path(args.checkpoint).expanduser()
            adapter = adapter_for(directory) if args.adapter == "auto" else args.adapter
            rows.append(measure("checkpoint", adapter, directory, args, requests))
    for row in rows:
        peak = row["peak_gpu_gib_batched"]
        print(
            f"{row['model']:10} {row['adapter']:8} {row['device']:6} {row['dtype']:8} "
            f"per-sample {row['per_sample_samples_per_s']:8.2f}/s  batched(x{args.batch_size}) "
            f"{row['batched_samples_per_s']:8.2f}/s  speedup {row['speedup']:5.2f}  "
            f"identical {row['answers_identical']}  peak GPU {'-' if peak is None else f'{peak:.2f} GiB'}"
            + (f"  ({'; '.join(row['notes'])})" if row["notes"] else ""),
            file=sys.stderr,
        )
    print(json.dumps({"n": args.n, "batch_size": args.batch_size, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
