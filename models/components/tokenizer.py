"""Train, save, load and batch-encode a subword tokenizer (HF ``tokenizers``).

The tokenizer lower-cases and strips accents, splits on whitespace and punctuation, and uses
WordPiece (``##`` continuation) or BPE (``</w>`` end-of-word) subwords. Special tokens have fixed
ids: [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3 [MASK]=4. Encoded sequences are ``[CLS] ... [SEP]``.
Everything (vocabulary, normaliser, post-processor) lives in one JSON file.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from bench.interfaces import BenchError

PAD, CLS, SEP, UNK, MASK = "[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"
SPECIAL_TOKENS = (PAD, CLS, SEP, UNK, MASK)
KINDS = ("wordpiece", "bpe")


class TextTokenizer:
    """A thin wrapper around ``tokenizers.Tokenizer`` with the conventions above."""

    def __init__(self, tokenizer, json_text: str | None = None) -> None:
        self._tok = tokenizer
        # Keep the exact serialised text (what is hashed and saved), so save -> load -> save is stable.
        self._json = json_text if json_text is not None else tokenizer.to_str()
        for i, tok in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(tok) != i:
                raise BenchError(f"tokenizer is missing special token {tok} at id {i}")
        self.pad_id, self.cls_id, self.sep_id, self.unk_id, self.mask_id = range(len(SPECIAL_TOKENS))

    # ------------------------------------------------------------------ building

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        kind: str = "wordpiece",
        min_frequency: int = 1,
    ) -> TextTokenizer:
        """Train a new tokenizer from ``texts`` (any iterable of strings).

        Training is deterministic: the same texts give the same JSON in every process. (The
        stock ``WordPieceTrainer`` is not: it numbers ``##`` pieces in hash-map order, which
        changes how ties between merges are broken from run to run.)

        * ``"bpe"``: byte-level BPE (GPT-2/CLIP style; never produces [UNK]).
        * ``"wordpiece"``: BPE merges are learnt on words marked with a word-start symbol, then
          turned into a WordPiece vocabulary (word-initial pieces, ``##`` continuations, and every
          character in both forms); encoding is BERT's greedy longest-match-first.
        """
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if kind not in KINDS:
            raise BenchError(f"unknown tokenizer kind {kind!r}: expected one of {', '.join(KINDS)}")
        if vocab_size <= len(SPECIAL_TOKENS):
            raise BenchError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
        texts = [t for t in texts if isinstance(t, str) and t.strip()]
        if not texts:
            raise BenchError("cannot train a tokenizer: no non-empty texts were given")
        common = {
            "vocab_size": vocab_size,
            "min_frequency": min_frequency,
            "special_tokens": list(SPECIAL_TOKENS),
            "show_progress": False,
        }
        if kind == "bpe":
            tok = Tokenizer(models.BPE(unk_token=UNK))
            tok.normalizer = _normalizer()
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common)
            tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        else:
            learner = Tokenizer(models.BPE(unk_token=UNK))
            learner.normalizer = _normalizer()
            learner.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Metaspace(prepend_scheme="always")]
            )
            learner.train_from_iterator(texts, trainer=trainers.BpeTrainer(**common), length=len(texts))
            vocab = _wordpiece_vocab(learner.get_vocab())
            tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix="##"))
            tok.normalizer = _normalizer()
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.WordPiece(prefix="##")
            tok.add_special_tokens(list(SPECIAL_TOKENS))  # already in the vocabulary: same ids
        _add_post_processor(tok)
        return cls(tok)

    @classmethod
    def from_str(cls, json_text: str) -> TextTokenizer:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_str(json_text)
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise BenchError(f"cannot parse tokenizer JSON: {exc}") from None
        return cls(tok, json_text)

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise BenchError(f"tokenizer file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
            json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchError(f"cannot read tokenizer file {path}: {exc}") from None
        try:
            return cls.from_str(text)
        except BenchError as exc:
            raise BenchError(f"{path}: {exc}") from None

    def to_str(self) -> str:
        return self._json

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._json, encoding="utf-8")
        return path

    def sha256(self) -> str:
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ use

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text).tokens

    def encode_ids(self, text: str, max_length: int | None = None) -> list[int]:
        return self._truncate(self._tok.encode(text).ids, max_length)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens).strip()

    def _truncate(self, ids: list[int], max_length: int | None) -> list[int]:
        if max_length is None or len(ids) <= max_length:
            return ids
        if max_length < 2:
            raise BenchError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
        return [*ids[: max_length - 1], self.sep_id]

    def encode(
        self, texts: Sequence[str], max_length: int, padding: str = "longest"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch: ``(input_ids long [N, L], attention_mask long [N, L])``.

        Sequences longer than ``max_length`` are truncated, keeping the final [SEP].
        ``padding="longest"`` pads to the longest sequence in the batch, ``"max_length"`` to
        ``max_length``. Padding is on the right with [PAD] (id 0) and mask 0.
        """
        if isinstance(texts, str):
            raise BenchError("encode() expects a sequence of strings, not a single string")
        if padding not in ("longest", "max_length"):
            raise BenchError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        encs = self._tok.encode_batch([str(t) for t in texts])
        rows = [self._truncate(e.ids, max_length) for e in encs]
        length = max_length if padding == "max_length" else max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask


_WORD_START = "\u2581"  # the Metaspace marker


def _normalizer():
    from tokenizers import normalizers

    return normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])


def _wordpiece_vocab(bpe_vocab: dict[str, int]) -> dict[str, int]:
    """A WordPiece vocabulary from BPE tokens learnt on ``\u2581``-prefixed words (deterministic order)."""
    pieces: list[str] = list(SPECIAL_TOKENS)
    chars: set[str] = set()
    for token, _ in sorted(bpe_vocab.items(), key=lambda kv: kv[1]):
        if token in SPECIAL_TOKENS:
            continue
        if token.startswith(_WORD_START):
            body = token[len(_WORD_START) :]
            piece = body
        else:
            body = token
            piece = "##" + token
        chars.update(c for c in body if c != _WORD_START)
        if body and _WORD_START not in body:
            pieces.append(piece)
    chars.update(string.ascii_lowercase + string.digits + string.punctuation)
    for c in sorted(chars):  # every character, word-initial and continuation
        pieces.extend([c, "##" + c])
    vocab: dict[str, int] = {}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return vocab


def _add_post_processor(tok) -> None:
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, SPECIAL_TOKENS.index(CLS)), (SEP, SPECIAL_TOKENS.index(SEP))],
    )
