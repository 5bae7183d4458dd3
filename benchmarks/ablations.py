"""The reference models' ablation switches on synthcxr: train the tiny preset with each switch, score it.

For each variant the tiny preset is trained on synthcxr (train split; val for model selection) with the
variant's ``--train-args`` and evaluated on the model's synthcxr tasks (test split, no bootstrap). Prints one
table per model (variant, training seconds, metrics) and writes every number to ``--json``. Checkpoints go
under ``--work`` and a finished one is reused, so an interrupted run resumes.

    python benchmarks/ablations.py --model lgdea [--init CLIP_CKPT] [--variants full,use_rec=false]
        [--work DIR] [--json FILE]
    python benchmarks/ablations.py --model llava-radz --base LLAVA_RAD_CKPT
    python benchmarks/ablations.py --model llava-rad --encoder CLIP_CKPT

Measured numbers and what they mean are in the issue notes; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench import api
from bench.interfaces import BenchError

# variant name -> train args (besides the dependencies given on the command line); "full" = the preset
VARIANTS: dict[str, dict[str, dict[str, object]]] = {
    "lgdea": {
        "full": {},
        "use_global=false": {"use_global": False},
        "use_rec=false": {"use_rec": False},
        "use_evidence_kl=false": {"use_evidence_kl": False},
        "use_knn=false": {"use_knn": False},
        "use_graph=false": {"use_graph": False},
        "use_align=false": {"use_align": False},
        "paired_fraction=0.1": {"paired_fraction": 0.1},
    },
    "llava-radz": {
        "full": {},
        "dkam=false": {"dkam": False},
        "library=entity": {"library": "entity"},
        "features=global": {"features": "global"},
        "features=local": {"features": "local"},
        "prompt=false": {"prompt": False},
    },
    "llava-rad": {
        "full": {},
        "stage3=false (Variant #5)": {"stage3": False},
        "lora_r=16": {"lora_r": 16},
    },
}
TASKS = {
    "lgdea": ["synthcxr_zs", "synthcxr_retrieval", "synthcxr_grounding"],
    "llava-radz": ["synthcxr_zs", "synthcxr_retrieval"],
    "llava-rad": ["synthcxr_rrg"],
}
HEADLINE = {
    "synthcxr_zs": "AUC",
    "synthcxr_retrieval": "Recall@10 i2t",
    "synthcxr_grounding": "CNR",
    "synthcxr_rrg": "chexpert_rules_f1_micro_14_uncneg",
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--base", default=None, help="llava-radz: the trained llava-rad checkpoint (base=DIR)")
    parser.add_argument("--encoder", default=None, help="llava-rad: the trained clip-baseline checkpoint")
    parser.add_argument(
        "--init", default=None, help="lgdea: start from this trained clip-baseline, for the demo's epochs (init=DIR)"
    )
    parser.add_argument("--work", default="runs/ablations", help="checkpoints and runs")
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args()
    variants = VARIANTS[args.model]
    chosen = list(variants) if not args.variants else [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)} for {args.model}; known: {', '.join(variants)}")
    depends: dict[str, object] = {}
    if args.model == "llava-radz":
        if not args.base:
            raise SystemExit("llava-radz ablations start from a trained llava-rad: give --base DIR")
        depends["base"] = args.base
    if args.model == "llava-rad" and args.encoder:
        depends["encoder"] = args.encoder
    if args.model == "lgdea" and args.init:
        demo_step = next(s for s in api.DEMO_PLAN if s.model == "lgdea")
        depends.update({k: v for k, v in demo_step.train_args.items() if k != "init"}, init=args.init)
    work = Path(args.work) / args.model
    rows = []
    for name in chosen:
        ckpt = work / _slug(name)
        train_args = {**depends, **variants[name]}
        start = time.perf_counter()
        try:
            if api.trained_checkpoint(ckpt) is None:
                api.train(args.model, "tiny", "synthcxr", ckpt, seed=0, device="cpu", train_args=train_args)
            seconds = json.loads((ckpt / "training.json").read_text()).get("seconds", time.perf_counter() - start)
            outcome = api.evaluate(
                args.model,
                TASKS[args.model],
                model_args={"checkpoint": str(ckpt)},
                output=str(work / "runs"),
                bootstrap=0,
                device="cpu",
                progress=False,
            )
        except BenchError as exc:
            raise SystemExit(f"{args.model} {name}: {exc}") from None
        metrics = {
            task: {k: v["value"] for k, v in outcome.results["tasks"][task]["metrics"].items()}
            for task in TASKS[args.model]
        }
        rows.append({"variant": name, "train_args": train_args, "train_seconds": seconds, "metrics": metrics})
        heads = "  ".join(f"{t}:{HEADLINE[t]}={metrics[t][HEADLINE[t]]:.3f}" for t in TASKS[args.model])
        print(f"{args.model:11s} {name:28s} {seconds:6.0f}s  {heads}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
