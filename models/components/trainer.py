"""A generic training loop and safetensors checkpoints.

``train(model, batches, loss_fn, config, ...)``:

* AdamW (no weight decay on biases, norms, embeddings-like 1-d/positional parameters),
* cosine schedule with linear warm-up (:func:`cosine_lr`),
* gradient accumulation and gradient-norm clipping,
* bf16 autocast on CUDA only (fp32 on CPU),
* deterministic seeding (:func:`seed_everything`),
* logging through ``log`` (a callable taking a string) or the ``logging`` module, plus an
  ``on_step`` callback receiving a dict per optimiser step,
* an optional validation callback per epoch, keeping (and by default restoring) the best weights
  and optionally writing them with :func:`save_checkpoint`.

Checkpoints are a directory holding ``model.safetensors`` + ``config.json`` (+ extra files).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.interfaces import BenchError

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NO_DECAY_NAME_HINTS = ("pos_embed", "cls_token", "logit_scale", "token_embed", "bias")

# --------------------------------------------------------------------------- seeding / schedule


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch (CPU + CUDA); return a CPU generator for data order/augmentation."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, window: int = 32
) -> list[list[int]]:
    """One epoch's batches of sample indices with little padding: a random permutation, cut into windows of
    ``window`` batches, each window sorted by length and cut into batches, then the batches shuffled (the idea of
    transformers' ``group_by_length``). Every sample appears at most once; a ragged last batch is dropped."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    steps = len(order) // batch_size
    order = order[: steps * batch_size]
    span = window * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    Warm-up: ``base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``. Then cosine
    decay from ``base_lr`` (at ``step == warmup_steps``) to ``min_lr`` (at ``step == total_steps``).
    """
    if total_steps <= 0:
        raise BenchError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay matrices/kernels; no decay for 1-d tensors and embedding-like parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim < 2 or any(h in name for h in NO_DECAY_NAME_HINTS) or leaf == "bias":
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def to_device(obj: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) dicts/lists/tuples to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_device(v, device) for v in obj)
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    return obj


# --------------------------------------------------------------------------- training loop


@dataclass
class TrainConfig:
    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int | None = None  # None: warmup_ratio of the total optimiser steps
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0  # final lr = lr * min_lr_ratio
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 20  # optimiser steps between log lines (0: epoch lines only)
    bf16: bool = True  # autocast to bf16 on CUDA; ignored on CPU
    val_mode: str = "max"  # "max" or "min": which validation metric value is better
    restore_best: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


@dataclass
class TrainResult:
    steps: int = 0
    epochs: int = 0
    wall_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch
    best_metric: float | None = None
    best_epoch: int | None = None
    final_loss: float | None = None


def _loss_and_logs(out: Any) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(out, torch.Tensor):
        return out, {}
    if isinstance(out, Mapping) and "loss" in out:
        extra = {k: float(v) for k, v in out.items() if k != "loss"}
        return out["loss"], extra
    raise BenchError("loss_fn must return a scalar tensor or a dict with a 'loss' tensor")


def train(
    model: nn.Module,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[nn.Module, Any], Any],
    config: TrainConfig,
    *,
    steps_per_epoch: int,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    validate: Callable[[nn.Module, int], float | Mapping[str, float]] | None = None,
    val_metric: str = "metric",
    best_dir: str | Path | None = None,
    best_config: Mapping[str, Any] | None = None,
    best_extra_files: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place.

    ``batches(epoch)`` yields the epoch's micro-batches (``steps_per_epoch`` of them; tensors in
    them are moved to ``device``). ``loss_fn(model, batch)`` returns a scalar loss tensor or a
    dict with ``"loss"`` (other entries are logged). ``validate(model, epoch)`` runs after each
    epoch in eval mode under ``no_grad`` and returns a float or a dict containing ``val_metric``.
    """
    if steps_per_epoch <= 0:
        raise BenchError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    if config.epochs <= 0:
        raise BenchError(f"epochs must be positive, got {config.epochs}")
    if config.grad_accum <= 0:
        raise BenchError(f"grad_accum must be positive, got {config.grad_accum}")
    if config.val_mode not in ("max", "min"):
        raise BenchError(f"val_mode must be 'max' or 'min', got {config.val_mode!r}")
    device = torch.device(device)
    emit = log if log is not None else logger.info
    seed_everything(config.seed)
    model.to(device)
    model.train()

    accum = config.grad_accum
    opt_steps_per_epoch = math.ceil(steps_per_epoch / accum)
    total_steps = opt_steps_per_epoch * config.epochs
    warmup = config.warmup_steps if config.warmup_steps is not None else round(config.warmup_ratio * total_steps)
    warmup = max(0, min(warmup, total_steps - 1))
    min_lr = config.lr * config.min_lr_ratio
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay),
        lr=cosine_lr(0, total_steps, warmup, config.lr, min_lr),
        betas=tuple(config.betas),
        eps=config.eps,
        fused=fused or None,
    )
    use_bf16 = config.bf16 and device.type == "cuda"
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    step = 0
    start = time.perf_counter()

    def optimizer_step(epoch: int, loss: float, extra: dict[str, float]) -> None:
        nonlocal step
        lr = cosine_lr(min(step, total_steps - 1), total_steps, warmup, config.lr, min_lr)
        for g in optimizer.param_groups:
            g["lr"] = lr
        grad_norm = None
        if config.max_grad_norm is not None and config.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        info = {"epoch": epoch + 1, "step": step, "loss": loss, "lr": lr, **extra}
        if grad_norm is not None:
            info["grad_norm"] = grad_norm
        if on_step is not None:
            on_step(info)
        if config.log_every and step % config.log_every == 0:
            emit(f"epoch {epoch + 1}/{config.epochs} step {step}/{total_steps} loss {loss:.4f} lr {lr:.2e}")

    for epoch in range(config.epochs):
        epoch_loss, epoch_items = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        group_left, group_size = 0, accum
        last_loss, last_extra = 0.0, {}
        for micro, batch in enumerate(batches(epoch)):
            if micro >= steps_per_epoch:
                break
            if group_left == 0:
                group_size = min(accum, steps_per_epoch - micro)
                group_left = group_size
            batch = to_device(batch, device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
                loss, last_extra = _loss_and_logs(loss_fn(model, batch))
            if not torch.isfinite(loss.detach()):
                raise BenchError(f"training diverged: loss is {float(loss.detach())} at epoch {epoch + 1}, step {step}")
            (loss.float() / group_size).backward()
            last_loss = float(loss.detach())
            epoch_loss += last_loss
            epoch_items += 1
            group_left -= 1
            if group_left == 0:
                optimizer_step(epoch, last_loss, last_extra)
        if group_left:  # the epoch yielded fewer batches than announced: use what was accumulated
            optimizer_step(epoch, last_loss, last_extra)
        if epoch_items == 0:
            raise BenchError(f"batches({epoch}) yielded no batches")
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": epoch_loss / epoch_items,
            "elapsed_s": time.perf_counter() - start,
        }
        result.final_loss = record["train_loss"]
        line = f"epoch {epoch + 1}/{config.epochs} done: train loss {record['train_loss']:.4f}"
        if validate is not None:
            model.eval()
            with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
                val = validate(model, epoch)
            model.train()
            metrics = {val_metric: float(val)} if not isinstance(val, Mapping) else dict(val)
            if val_metric not in metrics:
                raise BenchError(f"validate() returned {sorted(metrics)} without {val_metric!r}")
            record.update({f"val_{k}": float(v) for k, v in metrics.items()})
            value = float(metrics[val_metric])
            better = result.best_metric is None or (
                value > result.best_metric if config.val_mode == "max" else value < result.best_metric
            )
            line += f", val {val_metric} {value:.4f}" + (" (best)" if better else "")
            if better:
                result.best_metric, result.best_epoch = value, epoch + 1
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                if best_dir is not None:
                    save_checkpoint(best_dir, model, dict(best_config or {}), best_extra_files)
        emit(line)
        result.history.append(record)

    if best_state is not None and config.restore_best:
        model.load_state_dict(best_state)
    result.steps, result.epochs = step, config.epochs
    result.wall_time_s = time.perf_counter() - start
    model.eval()
    return result


# --------------------------------------------------------------------------- checkpoints


def state_dict_bytes(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> bytes:
    """The exact bytes :func:`save_checkpoint` writes to ``model.safetensors``."""
    from safetensors.torch import save

    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int], str] = {}
    for name, t in state.items():
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if key is not None and key in seen:  # tied weights: store a copy (safetensors forbids sharing)
            t = t.clone()
        elif key is not None:
            seen[key] = name
        tensors[name] = t.to("cpu").contiguous()
    return save(tensors, metadata={"format": "pt"})


def save_checkpoint(
    directory: str | Path,
    model: nn.Module | Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    extra_files: Mapping[str, str | bytes | Path] | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ ``extra_files``) into ``directory``.

    ``extra_files`` maps a file name to its content (str/bytes) or to a file Path to copy.
    Files are written to temporary names and renamed, so a crash never leaves a half file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        config_text = json.dumps(dict(config), indent=2, sort_keys=True)
    except TypeError as exc:
        raise BenchError(f"checkpoint config is not JSON-serialisable: {exc}") from None
    files: dict[str, bytes | Path] = {
        WEIGHTS_FILE: state_dict_bytes(model),
        CONFIG_FILE: config_text.encode(),
    }
    for name, content in (extra_files or {}).items():
        if Path(name).name != name or name in (WEIGHTS_FILE, CONFIG_FILE):
            raise BenchError(f"bad extra checkpoint file name {name!r}")
        files[name] = content.encode("utf-8") if isinstance(content, str) else content
    for name, content in files.items():
        tmp = directory / f".{name}.tmp"
        if isinstance(content, Path):
            shutil.copyfile(content, tmp)
        else:
            tmp.write_bytes(content)
        os.replace(tmp, directory / name)
    return directory


def load_checkpoint(
    directory: str | Path, model: nn.Module | None = None, strict: bool = True
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint directory: ``(config, state_dict)``; loads into ``model`` when given.

    Raises BenchError naming the directory and the missing or unreadable file.
    """
    from safetensors.torch import load as st_load

    directory = Path(directory)
    if not directory.is_dir():
        raise BenchError(f"checkpoint directory not found: {directory}")
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise BenchError(f"checkpoint {directory} is missing {name}")
    try:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"checkpoint {directory}: cannot read {CONFIG_FILE}: {exc}") from None
    if not isinstance(config, dict):
        raise BenchError(f"checkpoint {directory}: {CONFIG_FILE} must hold a JSON object")
    try:
        state = st_load((directory / WEIGHTS_FILE).read_bytes())
    except Exception as exc:  # safetensors raises SafetensorError / OSError on corrupt files
        raise BenchError(f"checkpoint {directory}: cannot read {WEIGHTS_FILE}: {exc}") from None
    if model is not None:
        try:
            model.load_state_dict(state, strict=strict)
        except RuntimeError as exc:
            raise BenchError(f"checkpoint {directory}: weights do not match the model: {exc}") from None
    return config, state
