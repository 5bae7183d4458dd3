"""Measure the clip-baseline ``tiny`` preset on synthcxr: training time and zero-shot AUC.

Zero-shot follows the CheXzero protocol: for each finding, the prompts "{finding}" and
"no {finding}" (lower case); p = exp(s+) / (exp(s+) + exp(s-)) with raw cosine similarities;
ROC-AUC per finding on the test split (uncertain -1 counts as positive, unmentioned as negative),
macro average over the 7 findings. Both the untrained (random-init) and the trained model are
scored.

    .venv/bin/python benchmarks/clip_baseline_tiny.py [--root DIR] [--threads 2] [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from bench.data import synthcxr
from models.reference.clip_baseline import ClipBaseline

FINDINGS = list(synthcxr.FINDINGS)


def zero_shot_auc(model: ClipBaseline, samples, findings=FINDINGS) -> dict[str, float]:
    img = model.encode_images([s.image for s in samples])
    prompts = [p for f in findings for p in (f.lower(), f"no {f.lower()}")]
    txt = model.encode_texts(prompts)
    sims = img @ txt.T  # raw cosine similarities [N, 2F]
    out: dict[str, float] = {}
    for k, finding in enumerate(findings):
        pos, neg = sims[:, 2 * k].astype(np.float64), sims[:, 2 * k + 1].astype(np.float64)
        prob = np.exp(pos) / (np.exp(pos) + np.exp(neg))
        y = np.array([1 if s.labels.get(finding) in (1, -1) else 0 for s in samples])
        out[finding] = float(roc_auc_score(y, prob)) if 0 < y.sum() < len(y) else float("nan")
    out["macro"] = float(np.nanmean([out[f] for f in findings]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="synthcxr parent folder (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    ap.add_argument("--no-val", action="store_true", help="train without the val split (as `bench train` uses)")
    ap.add_argument("--save", default=None, help="write the trained checkpoint here")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    root = Path(args.root) if args.root else Path(tempfile.gettempdir()) / "medvlbench-synthcxr"
    t = time.perf_counter()
    train, val, test = (synthcxr.load(root, split) for split in ("train", "val", "test"))
    print(f"synthcxr: {len(train)} train / {len(val)} val / {len(test)} test ({time.perf_counter() - t:.1f}s)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    untrained = ClipBaseline(device="cpu", seed=args.seed)
    auc_untrained = zero_shot_auc(untrained, test)

    model = ClipBaseline(device="cpu", seed=args.seed)
    config: dict = {"seed": args.seed, "device": "cpu", "log": lambda line: print("  " + line, flush=True)}
    if not args.no_val:
        config["val_data"] = val
    if args.epochs:
        config["epochs"] = args.epochs
    t = time.perf_counter()
    model.fit(train, config)
    train_s = time.perf_counter() - t
    auc_trained = zero_shot_auc(model, test)
    if args.save:
        model.save(args.save)

    print(f"\ntraining time: {train_s:.1f} s ({model.last_train_result.steps} steps, "
          f"{model.num_parameters() / 1e6:.2f}M parameters)")  # fmt: skip
    print(f"{'finding':<18} {'untrained':>9} {'trained':>8}")
    for f in [*FINDINGS, "macro"]:
        print(f"{f:<18} {auc_untrained[f]:>9.3f} {auc_trained[f]:>8.3f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"train_seconds": train_s, "untrained": auc_untrained, "trained": auc_trained}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
