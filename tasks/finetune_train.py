"""The optimisation behind the fine-tuning tasks (:mod:`tasks.finetune`).

Two modes, one loop (:func:`fit`):

- **linear probe**: a linear head on frozen backbone features computed once (:func:`frozen_features`, cached
  by the task); the head trains on the CPU (it is tiny, and a run whose features are all cached never loads
  the model);
- **full fine-tuning**: the backbone and a new linear head trained end to end on the model's device, under
  bf16 autocast on CUDA (fp32 on the CPU).

Both minimise the binary cross-entropy of each class's logit (multi-label; one class = binary) with AdamW,
a linear warm-up then cosine decay to 0 (``torch.optim.lr_scheduler`` ``LinearLR`` → ``CosineAnnealingLR``,
per optimisation step), evaluate the validation split's macro AUC after every epoch, keep the weights of
the best epoch (model selection) and stop after ``patience`` epochs without improvement (early stopping).
A subset so small that ``max_epochs`` would give fewer than ``min_steps`` steps (1 % of a small split is
one batch) trains in rounds of ``k`` epochs instead, ``k`` the smallest that reaches ``min_steps``: the
validation, the patience and the budget then count rounds (``k`` = 1 otherwise).

:func:`reinitialise` gives the ``Scratch`` baseline: the same architecture with every parameter drawn anew.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.interfaces import BenchError, ImageRef, batched
from bench.metrics.classification import rank_auc

SCRATCH_INIT_VERSION = 1  # part of the feature-cache name of a re-initialised backbone


@dataclass(frozen=True)
class Hyper:
    """The optimisation settings of one mode (recorded in the result)."""

    lr: float
    head_lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    min_steps: int
    warmup_ratio: float
    patience: int


@dataclass
class Outcome:
    """What one training run did (recorded per seed)."""

    best_epoch: int
    best_val_auc: float
    epochs_run: int
    epochs_per_round: int
    steps: int
    stopped_early: bool
    seconds: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["best_val_auc"] = round(self.best_val_auc, 6)
        out["seconds"] = round(self.seconds, 3)
        return out


# --------------------------------------------------------------------------- pieces


def val_macro_auc(y_val: np.ndarray, probs: np.ndarray) -> float:
    """Macro ROC-AUC over the classes with both label values (rank formula, equal to scikit-learn's)."""
    values = [rank_auc(y_val[:, c], probs[:, c]) for c in range(y_val.shape[1])]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    if warmup <= 0:
        return cosine
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def module_device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def reinitialise(module: nn.Module, seed: int) -> dict[str, int]:
    """Draw every parameter of ``module`` anew (seeded): ``reset_parameters()`` of each sub-module that has
    one (PyTorch's default init of Linear, Conv, norms, embeddings); any parameter left (class tokens,
    position embeddings, custom norms' scales) gets truncated N(0, 0.02) when it has ≥ 2 dimensions, 0 for
    a bias and 1 for another vector. Returns the counts of parameters reset each way."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        covered: set[int] = set()
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                covered |= {id(p) for p in sub.parameters(recurse=False)}
        counts = {"reset_parameters": 0, "normal": 0, "zeros": 0, "ones": 0}
        with torch.no_grad():
            for name, p in module.named_parameters():
                if id(p) in covered:
                    counts["reset_parameters"] += 1
                elif p.dim() >= 2:
                    nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
                    counts["normal"] += 1
                elif name.endswith("bias"):
                    nn.init.zeros_(p)
                    counts["zeros"] += 1
                else:
                    nn.init.ones_(p)
                    counts["ones"] += 1
    finally:
        torch.random.set_rng_state(generator_state)
    return counts


def frozen_features(
    module: nn.Module,
    preprocess: Callable[[Sequence[ImageRef]], torch.Tensor],
    images: Sequence[ImageRef],
    batch_size: int,
) -> np.ndarray:
    """``module(preprocess(images))`` in eval mode, fp32, without gradients → ``[N, D]`` float32."""
    device = module_device(module)
    module.eval()
    out = []
    with torch.inference_mode():
        for chunk in batched(images, batch_size):
            feats = module(preprocess(chunk).to(device))
            out.append(_check_features(feats, len(chunk)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 0), np.float32)


def _check_features(feats: Any, n: int) -> torch.Tensor:
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] != n:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise BenchError(f"the model's image backbone returned {shape}; expected pooled features [{n}, D]")
    return feats


class Classifier(nn.Module):
    """A backbone followed by a linear head: ``images → logits [N, C]``."""

    def __init__(self, backbone: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(_check_features(self.backbone(x), x.shape[0]))


# --------------------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    param_groups: list[dict[str, Any]],
    inputs: Callable[[np.ndarray], torch.Tensor],
    y_train: np.ndarray,
    predict_val: Callable[[], np.ndarray],
    y_val: np.ndarray,
    hp: Hyper,
    seed: int,
) -> Outcome:
    """Train ``model`` (BCE on ``y_train``, AdamW, warm-up + cosine) with model selection and early
    stopping on the validation macro AUC; ``model`` ends with the weights of its best epoch.

    ``inputs(indices)`` builds the batch of those training rows on the model's device; ``predict_val()``
    returns the validation probabilities ``[Nv, C]`` of the model as it stands."""
    start = time.perf_counter()
    device = module_device(model)
    amp = device.type == "cuda"
    generator = torch.Generator().manual_seed(seed)
    n = y_train.shape[0]
    batch = min(hp.batch_size, n)
    per_epoch = max(1, n // batch)  # the ragged last batch is dropped (a new permutation every epoch)
    round_epochs = max(1, math.ceil(hp.min_steps / (hp.max_epochs * per_epoch)))
    total = hp.max_epochs * round_epochs * per_epoch
    optimizer = torch.optim.AdamW(param_groups, weight_decay=hp.weight_decay)
    schedule = cosine_with_warmup(optimizer, round(hp.warmup_ratio * total), total)
    targets = torch.as_tensor(y_train, dtype=torch.float32, device=device)
    best_auc, best_round, best_state = -np.inf, 0, copy.deepcopy(model.state_dict())
    epoch = steps = 0
    stopped = False
    for round_ in range(1, hp.max_epochs + 1):
        model.train()
        for _ in range(round_epochs):
            epoch += 1
            order = torch.randperm(n, generator=generator).numpy()
            for b in range(per_epoch):
                rows = order[b * batch : (b + 1) * batch]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(inputs(rows))
                target = targets[torch.as_tensor(rows, device=device)]
                loss = F.binary_cross_entropy_with_logits(logits.float(), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                steps += 1
        auc = val_macro_auc(y_val, predict_val())
        if auc > best_auc:
            best_auc, best_round, best_state = auc, round_, copy.deepcopy(model.state_dict())
        elif round_ - best_round >= hp.patience and round_ < hp.max_epochs:
            stopped = True
            break
    model.load_state_dict(best_state)
    return Outcome(
        best_round * round_epochs, float(best_auc), epoch, round_epochs, steps, stopped, time.perf_counter() - start
    )


def probabilities(model: nn.Module, batches: Sequence[torch.Tensor] | Any) -> np.ndarray:
    """Sigmoid of ``model`` on each input batch (eval mode, no gradients, bf16 autocast on CUDA)."""
    device = module_device(model)
    model.eval()
    out = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for x in batches:
            out.append(torch.sigmoid(model(x.to(device)).float()).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


# --------------------------------------------------------------------------- the two modes


def train_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    hp: Hyper,
    seed: int,
) -> tuple[Callable[[np.ndarray], np.ndarray], Outcome]:
    """A linear head on frozen features (CPU); returns ``probs(features) -> [N, C]`` and the outcome."""
    torch.manual_seed(seed)
    head = nn.Linear(x_train.shape[1], y_train.shape[1])
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    xv = torch.as_tensor(x_val, dtype=torch.float32)

    def predict(features: torch.Tensor) -> np.ndarray:
        return probabilities(head, [features])

    outcome = fit(
        head,
        [{"params": list(head.parameters()), "lr": hp.lr}],
        lambda rows: xt[torch.as_tensor(rows)],
        y_train,
        lambda: predict(xv),
        y_val,
        hp,
        seed,
    )
    return (lambda x: predict(torch.as_tensor(x, dtype=torch.float32))), outcome


def train_full(
    backbone: nn.Module,
    feature_dim: int,
    preprocess: Callable[[Sequence[ImageRef]], torch.Tensor],
    train_images: Sequence[ImageRef],
    y_train: np.ndarray,
    val_images: Sequence[ImageRef],
    y_val: np.ndarray,
    hp: Hyper,
    seed: int,
    batch_size: int,
) -> tuple[Callable[[Sequence[ImageRef]], np.ndarray], Outcome]:
    """Backbone + linear head trained end to end on the backbone's device; returns
    ``probs(images) -> [N, C]`` (batches of ``batch_size``) and the outcome."""
    device = module_device(backbone)
    torch.manual_seed(seed)
    model = Classifier(backbone, feature_dim, y_train.shape[1]).to(device)
    model.backbone.requires_grad_(True)

    def predict(images: Sequence[ImageRef]) -> np.ndarray:
        return probabilities(model, (preprocess(chunk) for chunk in batched(images, batch_size)))

    groups = [
        {"params": list(model.backbone.parameters()), "lr": hp.lr},
        {"params": list(model.head.parameters()), "lr": hp.head_lr},
    ]
    outcome = fit(
        model,
        groups,
        lambda rows: preprocess([train_images[i] for i in rows]).to(device),
        y_train,
        lambda: predict(val_images),
        y_val,
        hp,
        seed,
    )
    return predict, outcome


def hyper_from(options: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> Hyper:
    """The mode's defaults overridden by the task options that are set, each value checked."""
    merged = {k: (options[k] if options.get(k) is not None else v) for k, v in defaults.items()}
    try:
        hp = Hyper(
            lr=float(merged["lr"]),
            head_lr=float(merged["head_lr"]),
            weight_decay=float(merged["weight_decay"]),
            batch_size=int(merged["batch_size"]),
            max_epochs=int(merged["max_epochs"]),
            min_steps=int(merged["min_steps"]),
            warmup_ratio=float(merged["warmup_ratio"]),
            patience=int(merged["patience"]),
        )
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{where}: bad optimisation option ({exc})") from None
    if hp.lr <= 0 or hp.head_lr <= 0 or hp.weight_decay < 0:
        raise BenchError(f"{where}: lr and head_lr must be positive and weight_decay not negative")
    if hp.batch_size < 1 or hp.max_epochs < 1 or hp.patience < 1 or hp.min_steps < 0:
        raise BenchError(f"{where}: batch_size, max_epochs and patience must be ≥ 1 and min_steps ≥ 0")
    if not 0.0 <= hp.warmup_ratio < 1.0:
        raise BenchError(f"{where}: warmup_ratio must be in [0, 1), got {hp.warmup_ratio}")
    return hp
