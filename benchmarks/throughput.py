"""Throughput and peak memory of `bench run`: embedding and generation, 1 vs N processes, batched vs per-sample.

Each configuration is a real run of the harness (runner, prediction cache in a fresh file, sample
writer, scoring) in its own process(es) -- several processes are started with torchrun (gloo on CPU,
NCCL on GPUs) -- on synthcxr's train split made large enough for ``--n`` samples:

* embedding: untrained clip-baseline (tiny preset) on a zero-shot task over ``--n`` images;
* generation: untrained llava-rad (tiny preset) on a report-generation task over ``--gen-n`` samples,
  ``--max-new-tokens`` tokens each (random weights rarely stop early, so every sample costs the same).

Printed per configuration: samples/s of the prediction phase, the time inside the model adapter's calls
(image decoding and preprocessing are the adapter's, so they count as model time), the harness overhead
= 1 - model time / prediction time (target for the tiny embedding model over 2,000 samples: <= 5 %),
scoring time, and the peak resident memory of the largest process (and peak CUDA memory on a GPU).
Ratios are against the one-process batched run measured in the same invocation.

``--decode-roofline``: greedy decoding of a Llama-architecture decoder built from a config (random weights,
bf16 on CUDA, float32 on CPU; ``--roofline-size small`` is a ~1.1B-parameter real-size config) at batch 1
and ``--batch-size``; bytes read per decoding step (weights + KV cache) x steps/s over the device's peak
memory bandwidth (known for H100/H200/A100, else ``--peak-bandwidth-gbs``) is the fraction of the
memory-bandwidth roofline decoding reaches.

    python benchmarks/throughput.py [--n 2000] [--gen-n 64] [--procs 1,2] [--max-new-tokens 32]
    python benchmarks/throughput.py --decode-roofline [--roofline-size small|tiny] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.plugins import hookimpl  # noqa: E402  (after the repository is on the path)

EMBED_TASK = "throughput_zs"
GEN_TASK = "throughput_rrg"


# ---------------------------------------------------------------------------------------------- worker


class _Tasks:
    """Registers the benchmark's tasks: synthcxr_zs / synthcxr_rrg on the train split of a larger synthcxr."""

    def __init__(self, n_dataset: int, max_new_tokens: int) -> None:
        self.n_dataset, self.max_new_tokens = n_dataset, max_new_tokens

    @hookimpl
    def bench_register_tasks(self) -> Iterable[Any]:
        from bench.plugins import registry

        tasks = registry().tasks
        data = {"n": self.n_dataset}
        return [
            replace(tasks["synthcxr_zs"], name=EMBED_TASK, split="train", dataset_options=data),
            replace(
                tasks["synthcxr_rrg"],
                name=GEN_TASK,
                split="train",
                dataset_options=data,
                options={**tasks["synthcxr_rrg"].options, "max_new_tokens": self.max_new_tokens},
            ),
        ]


def worker(args: argparse.Namespace) -> None:
    from bench.plugins import load_registry
    from bench.runner import RunConfig, run

    reg = load_registry([_Tasks(args.n_dataset, args.max_new_tokens)])
    config = RunConfig(
        model=args.model,
        tasks=[args.task],
        model_args={"preset": "tiny"},
        output=args.out,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        bootstrap=args.bootstrap,
        cache_path=str(Path(args.out) / "cache.sqlite"),
        progress=False,
    )
    start = time.perf_counter()
    outcome = run(config, reg=reg, log=lambda m: None)
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    cuda_peak = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        cuda_peak = torch.cuda.max_memory_allocated() / 2**20
    rank = int(os.environ.get("RANK", "0"))
    report = {"rank": rank, "peak_rss_mib": peak, "peak_cuda_mib": cuda_peak, "run_s": total}
    if rank == 0:
        report["task"] = outcome.results["tasks"][args.task]
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(report))


# ---------------------------------------------------------------------------------------------- launcher


def launch(kind: str, procs: int, batch_size: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{kind}-p{procs}-b{batch_size}"
    out.mkdir()
    embed = kind == "embed"
    model, task, limit = ("clip-baseline", EMBED_TASK, args.n) if embed else ("llava-rad", GEN_TASK, args.gen_n)
    worker_args = [
        str(Path(__file__).resolve()), "--worker", "--model", model, "--task", task, "--out", str(out),
        "--limit", str(limit), "--batch-size", str(batch_size), "--device", args.device,
        "--n-dataset", str(args.n_dataset), "--max-new-tokens", str(args.max_new_tokens),
        "--bootstrap", str(args.bootstrap),
    ]  # fmt: skip
    if procs == 1:
        cmd = [sys.executable, *worker_args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", *worker_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(max(1, args.threads // procs))}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} with {procs} process(es) failed:\n{proc.stderr[-3000:]}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(procs)]
    t = ranks[0]["task"]
    predict, model_s = t["predict_time_s"], t["model_time_s"]
    # with several ranks the model time is summed over them: per rank, it runs in parallel
    model_wall = model_s / procs
    return {
        "kind": kind,
        "processes": procs,
        "batch_size": batch_size,
        "samples": t["n_samples"],
        "samples_per_s": round(t["n_samples"] / predict, 2),
        "predict_s": round(predict, 2),
        "model_s_per_process": round(model_wall, 2),
        "harness_overhead": round(max(0.0, 1 - model_wall / predict), 4),
        "scoring_s": round(t["wall_time_s"] - predict, 2),
        "model_calls": t["calls"]["model_calls"],
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in ranks), 1),
        "peak_cuda_mib": max((r["peak_cuda_mib"] or 0 for r in ranks), default=0) or None,
    }


# ---------------------------------------------------------------------------------------------- roofline

PEAK_BANDWIDTH_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "L40S": 864.0, "A10": 600.0}
ROOFLINE_CONFIGS = {
    # ~1.1B parameters: the TinyLlama-1.1B architecture (a real-size small decoder)
    "small": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
              "num_key_value_heads": 4, "vocab_size": 32000},
    "tiny": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8,
             "num_key_value_heads": 4, "vocab_size": 8000},
}  # fmt: skip


def decode_roofline(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = LlamaConfig(**ROOFLINE_CONFIGS[args.roofline_size], max_position_embeddings=4096)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    peak_gbs = args.peak_bandwidth_gbs
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    if peak_gbs is None and cuda:
        peak_gbs = next((v for k, v in PEAK_BANDWIDTH_GBS.items() if k in name), None)
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    kv_per_token *= torch.finfo(dtype).bits // 8
    rows = []
    prompt_len, new = args.prompt_tokens, args.decode_tokens
    for batch in sorted({1, args.batch_size}):
        ids = torch.randint(3, cfg.vocab_size, (batch, prompt_len), device=device)
        gen = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)  # warm-up
            prefill_start = time.perf_counter()
            model(ids)
            if cuda:
                torch.cuda.synchronize()
            prefill = time.perf_counter() - prefill_start
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            model.generate(ids, **gen)
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        decode_s = max(elapsed - prefill, 1e-9)
        steps_per_s = new / decode_s
        mean_context = prompt_len + new / 2
        bytes_per_step = weight_bytes + batch * mean_context * kv_per_token
        achieved = bytes_per_step * steps_per_s / 1e9
        rows.append(
            {
                "batch": batch,
                "tokens_per_s": round(batch * steps_per_s, 1),
                "decode_steps_per_s": round(steps_per_s, 2),
                "achieved_gbs": round(achieved, 1),
                "roofline_fraction": round(achieved / peak_gbs, 3) if peak_gbs else None,
                "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
            }
        )
    return {
        "device": name,
        "dtype": str(dtype).replace("torch.", ""),
        "parameters": n_params,
        "weight_gb": round(weight_bytes / 1e9, 3),
        "peak_bandwidth_gbs": peak_gbs,
        "prompt_tokens": prompt_len,
        "decode_tokens": new,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=2000, help="images for the embedding runs")
    parser.add_argument("--gen-n", type=int, default=64, help="samples for the generation runs")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="the batched runs' batch size")
    parser.add_argument("--procs", default="1,2", help="process counts to compare")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the ranks")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--n-dataset", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kinds", default="embed,generate")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--decode-roofline", action="store_true")
    parser.add_argument("--roofline-size", default="small", choices=sorted(ROOFLINE_CONFIGS))
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--peak-bandwidth-gbs", type=float, default=None)
    args = parser.parse_args()
    if args.n_dataset is None:  # the train split is 70 % of synthcxr
        args.n_dataset = math.ceil(max(args.n, args.gen_n) / 0.7) + 2
    if args.worker:
        worker(args)
        return
    if args.decode_roofline:
        result = decode_roofline(args)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return
    from bench.data import synthcxr

    synthcxr.load(None, "train", n=args.n_dataset)  # generate the dataset once, outside the timings
    procs = [int(p) for p in args.procs.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            configs = [(p, args.batch_size) for p in procs] + [(1, 1)]
            for n_procs, batch in configs:
                row = launch(kind, n_procs, batch, args, Path(tmp))
                rows.append(row)
                print(json.dumps(row), flush=True)
    for kind in {r["kind"] for r in rows}:
        base = next(r for r in rows if r["kind"] == kind and r["processes"] == 1 and r["batch_size"] == args.batch_size)
        for r in rows:
            if r["kind"] == kind:
                r["speed_vs_1proc_batched"] = round(r["samples_per_s"] / base["samples_per_s"], 2)
    print("\nkind      procs batch  samples  samples/s  x(1 proc)  overhead  scoring_s  peak RSS MiB")
    for r in rows:
        print(
            f"{r['kind']:9} {r['processes']:5} {r['batch_size']:5} {r['samples']:8} {r['samples_per_s']:10} "
            f"{r['speed_vs_1proc_batched']:10} {r['harness_overhead']:9.1%} {r['scoring_s']:10} {r['peak_rss_mib']:13}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
