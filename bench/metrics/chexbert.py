"""The CheXbert report labeler (Smit et al. 2020), loaded from a local ``chexbert.pth``.

Architecture (as released, ``stanfordmlgroup/CheXbert``, ``src/models/bert_labeler.py``): a
bert-base-uncased encoder; the final-layer hidden state of [CLS] (dropout 0.1, inactive at
inference) feeds 14 linear heads, 13 with 4 classes (blank, positive, negative, uncertain) and the
last, "No Finding", with 2 (blank, positive). The label of an observation is the argmax of its head.

Checkpoint: ``torch.save({"model_state_dict": ..., ...})`` of the model wrapped in
``nn.DataParallel``, so every key carries a ``module.`` prefix (``module.bert.embeddings...``,
``module.linear_heads.0.weight``). A bare state dict (with or without the prefix) is accepted
too. The encoder's configuration is read from the weights' shapes (vocabulary, hidden size,
layers, feed-forward size, positions); the number of attention heads, which shapes do not
determine, is hidden size / 64 (12 for bert-base) unless a ``config.json`` (a BertConfig) lies
beside the checkpoint.

Tokenisation: the bert-base-uncased WordPiece tokenizer, from a local folder (``vocab.txt`` or
``tokenizer.json``): ``chexbert_tokenizer=`` / ``BENCH_CHEXBERT_TOKENIZER``, else the
checkpoint's own folder. Text is preprocessed as CheXbert does (strip, newlines to spaces,
whitespace runs collapsed), tokenised, wrapped in [CLS] ... [SEP] and cut to 512 tokens
(the first 510 word pieces); an empty report is [CLS] [SEP].

The embedding used by RadCliQ (``semb_score``) is the same [CLS] hidden state
(CXR-Report-Metric's ``encode.py``).

Nothing is downloaded: only local files are read, and a missing configuration raises
:class:`~bench.metrics.unavailable.MetricUnavailable`.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.interfaces import BenchError
from bench.metrics.clinical import OBSERVATIONS, option_path
from bench.metrics.unavailable import MetricUnavailable

CHECKPOINT_ENV = "BENCH_CHEXBERT_PATH"
TOKENIZER_ENV = "BENCH_CHEXBERT_TOKENIZER"
MAX_TOKENS = 512
N_HEADS_4 = 13  # 12 conditions + Support Devices: blank / positive / negative / uncertain
# buffers some transformers versions save and others do not; never a reason to refuse a checkpoint
_OPTIONAL_KEYS = ("bert.embeddings.position_ids",)
_LAYER_KEY = re.compile(r"^bert\.encoder\.layer\.(\d+)\.")


def preprocess(text: str) -> str:
    """CheXbert's report cleaning: strip, newlines to spaces, whitespace runs to one space, strip."""
    return re.sub(r"\s+", " ", str(text).strip().replace("\n", " ")).strip()


# ----------------------------------------------------------------------------- model


def build_model(config: Any) -> Any:
    """The CheXbert module for a ``transformers.BertConfig`` (random weights)."""
    import torch.nn as nn
    from transformers import BertModel

    class CheXbert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config)
            self.dropout = nn.Dropout(0.1)
            hidden = config.hidden_size
            heads = [nn.Linear(hidden, 4, bias=True) for _ in range(N_HEADS_4)]
            heads.append(nn.Linear(hidden, 2, bias=True))
            self.linear_heads = nn.ModuleList(heads)

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, list[Any]]:
            """([B, H] [CLS] states, 14 logit tensors: 13 x [B, 4] and [B, 2])."""
            cls = self.bert(input_ids, attention_mask=attention_mask)[0][:, 0, :]
            dropped = self.dropout(cls)
            return cls, [head(dropped) for head in self.linear_heads]

    return CheXbert()


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def read_state_dict(path: Path) -> dict[str, Any]:
    """The model weights of a CheXbert checkpoint, ``module.`` prefixes removed."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BenchError(f"CheXbert checkpoint not found: {path}") from None
    except Exception as exc:  # unpickling errors come in many types
        raise BenchError(f"cannot read CheXbert checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, Mapping) else type(obj).__name__
        raise BenchError(
            f"{path} is not a CheXbert checkpoint: expected a dict with 'model_state_dict' "
            f"(a state dict of tensors), found {keys or 'an empty dict'}"
        )
    return _strip_prefix(obj)


def infer_config(state: Mapping[str, Any], path: Path, config_file: Path | None = None) -> Any:
    """A BertConfig matching the weights (see the module docstring)."""
    from transformers import BertConfig

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise BenchError(f"{path} is not a CheXbert checkpoint: key {key!r} is missing")
        return tuple(state[key].shape)

    vocab, hidden = shape("bert.embeddings.word_embeddings.weight")
    positions = shape("bert.embeddings.position_embeddings.weight")[0]
    types = shape("bert.embeddings.token_type_embeddings.weight")[0]
    layers = {int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k))}
    if not layers:
        raise BenchError(f"{path} is not a CheXbert checkpoint: no 'bert.encoder.layer.*' weights")
    intermediate = shape("bert.encoder.layer.0.intermediate.dense.weight")[0]
    values = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": max(layers) + 1,
        "intermediate_size": intermediate,
        "max_position_embeddings": positions,
        "type_vocab_size": types,
        "num_attention_heads": max(1, hidden // 64),
    }
    if config_file is not None and config_file.is_file():
        try:
            extra = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot read {config_file}: {exc}") from None
        values = {
            **extra,
            **values,
            "num_attention_heads": extra.get("num_attention_heads", values["num_attention_heads"]),
        }
    if hidden % values["num_attention_heads"]:
        raise BenchError(
            f"{path}: hidden size {hidden} is not a multiple of {values['num_attention_heads']} attention heads "
            f"(put a config.json with num_attention_heads beside the checkpoint)"
        )
    return BertConfig(**values)


def _list(keys: Sequence[str], limit: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_model(path: str | Path) -> tuple[Any, Any]:
    """(model in eval mode, its BertConfig) from a CheXbert checkpoint; BenchError if keys or shapes differ."""
    path = Path(path)
    state = read_state_dict(path)
    config = infer_config(state, path, path.parent / "config.json")
    model = build_model(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k not in _OPTIONAL_KEYS]
    unexpected = [k for k in state if k not in expected and k not in _OPTIONAL_KEYS]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_list(unexpected)}")
        raise BenchError(
            f"{path} does not match the CheXbert architecture (BERT + 14 linear heads, keys "
            f"'module.bert.*' and 'module.linear_heads.0-13.*'): {'; '.join(parts)}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if wrong:
        raise BenchError(f"{path}: weights with unexpected shapes: {_list(wrong, 4)}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    model.eval()
    return model, config


def load_tokenizer(folder: str | Path) -> Any:
    """The WordPiece tokenizer saved in ``folder`` (``vocab.txt`` or ``tokenizer.json``), offline."""
    from transformers import BertTokenizer

    folder = Path(folder)
    if not ((folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()):
        raise BenchError(
            f"no CheXbert tokenizer in {folder}: expected the bert-base-uncased tokenizer files (vocab.txt or "
            f"tokenizer.json); give chexbert_tokenizer= or set {TOKENIZER_ENV}"
        )
    try:
        return BertTokenizer.from_pretrained(str(folder), local_files_only=True, do_lower_case=True)
    except Exception as exc:
        raise BenchError(f"cannot load the CheXbert tokenizer from {folder}: {exc}") from None


# ----------------------------------------------------------------------------- labeler


class CheXbertLabeler:
    """Labels and embeds reports with a loaded CheXbert; results are cached per report text."""

    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu", batch_size: int = 16) -> None:
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        vocab = int(model.bert.config.vocab_size)
        if len(tokenizer) > vocab:
            raise BenchError(f"CheXbert tokenizer has {len(tokenizer)} tokens but the model only {vocab} embeddings")

    def encode(self, text: str) -> list[int]:
        """CheXbert's token ids: [CLS] + word pieces (at most 510) + [SEP]."""
        tok = self.tokenizer
        pieces = tok.tokenize(preprocess(text))
        ids = tok.convert_tokens_to_ids(pieces)[: MAX_TOKENS - 2]
        return [tok.cls_token_id, *ids, tok.sep_token_id]

    def _run(self, texts: Sequence[str]) -> None:
        import torch

        todo = sorted({t for t in texts if t not in self._cache}, key=lambda t: len(t))
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            encoded = [self.encode(t) for t in chunk]
            width = max(len(e) for e in encoded)
            ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for i, e in enumerate(encoded):
                ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
                mask[i, : len(e)] = 1
            with torch.inference_mode():
                cls, logits = self.model(ids.to(self.device), mask.to(self.device))
            labels = torch.stack([head.argmax(dim=1) for head in logits], dim=1).cpu().numpy()
            embeddings = cls.float().cpu().numpy()
            for i, text in enumerate(chunk):
                self._cache[text] = (labels[i].astype(np.int64), embeddings[i].astype(np.float32))

    def label(self, texts: Sequence[str]) -> np.ndarray:
        """[N, 14] class codes (0 blank, 1 positive, 2 negative, 3 uncertain), CheXbert's observation order."""
        self._run(texts)
        if not texts:
            return np.zeros((0, len(OBSERVATIONS)), dtype=np.int64)
        return np.stack([self._cache[t][0] for t in texts])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[N, hidden] final-layer [CLS] states (RadCliQ's CheXbert embedding)."""
        self._run(texts)
        if not texts:
            return np.zeros((0, int(self.model.bert.config.hidden_size)), dtype=np.float32)
        return np.stack([self._cache[t][1] for t in texts])


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


@functools.lru_cache(maxsize=4)
def load_labeler(checkpoint: str, tokenizer: str, device: str, batch_size: int = 16) -> CheXbertLabeler:
    """A labeler for local files (cached: loading is done once per process)."""
    model, _ = load_model(checkpoint)
    return CheXbertLabeler(model, load_tokenizer(tokenizer), device, batch_size)


def labeler_from_options(options: Mapping[str, Any]) -> CheXbertLabeler:
    """The labeler named by the metric options (``chexbert_path``, ``chexbert_tokenizer``, ``device``,
    ``batch_size``) or the environment; MetricUnavailable when no checkpoint is configured."""
    checkpoint = option_path(options, "chexbert_path", CHECKPOINT_ENV)
    if checkpoint is None:
        raise MetricUnavailable(
            f"CheXbert weights not configured: give chexbert_path= or set {CHECKPOINT_ENV} to a local chexbert.pth "
            "(Smit et al. 2020; nothing is downloaded)"
        )
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MetricUnavailable(f"CheXbert needs torch and transformers: {exc}") from None
    if not os.path.isfile(checkpoint):
        raise BenchError(f"CheXbert checkpoint not found: {checkpoint} (from chexbert_path / {CHECKPOINT_ENV})")
    tokenizer = option_path(options, "chexbert_tokenizer", TOKENIZER_ENV) or os.path.dirname(
        os.path.abspath(checkpoint)
    )
    device = str(options.get("device") or _default_device())
    return load_labeler(
        os.path.abspath(checkpoint), os.path.abspath(tokenizer), device, int(options.get("batch_size", 16))
    )
