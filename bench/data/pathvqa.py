"""PathVQA (He et al. 2020): pathology visual question answering, one Sample per question.

Official download (https://github.com/UCSD-AI4H/PathVQA, the ``pvqa`` folder), unpacked as is::

    qas/train/train_qa.pkl, qas/val/val_qa.pkl, qas/test/test_qa.pkl
    images/train/train_0422.jpg, images/val/..., images/test/...

Each ``*_qa.pkl`` is a pickled list of ``{"image": "train_0422", "question": ..., "answer": ...}``.
A pickle can run arbitrary code when loaded, so it is read with a restricted unpickler that
resolves no global except a few builtin containers: a pickle that names any other callable (e.g.
``os.system`` through ``__reduce__``) is refused before anything runs. Answers ``yes``/``no`` are
``closed``, all others ``open`` (official test: 6,761 questions).

Also read: the Hugging Face export ``flaviagiammarino/path-vqa`` (``data/{train,validation,test}-*.parquet``,
columns ``image, question, answer``; 19,654 / 6,259 / 6,719 questions after the exporter removed
duplicates). ``format="auto"`` reads the official files when ``qas/`` is present.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from bench.data.common import CheckReport
from bench.data.hf_parquet import (
    ImageSource,
    check_dataset,
    check_split,
    closed_if_yes_no,
    parquet_ref,
    read_parquet_split,
    resolve_format,
    text_field,
)
from bench.interfaces import BenchError, Sample

DATASET = "pathvqa"
SPLITS = ("train", "val", "test")

# the only globals a question-answer pickle may name: inert builtin containers
_SAFE_GLOBALS = frozenset(
    {
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "str"),
        ("builtins", "bytes"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "bool"),
        ("collections", "OrderedDict"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def safe_unpickle(path: Path) -> Any:
    """Unpickle plain data (lists, dicts, strings, numbers) only; any other global is refused."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found") from None
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc})") from None
    if not raw:
        raise BenchError(f"{path}: the file is empty; expected a pickled list of questions")
    last: Exception | None = None
    for encoding in ("utf-8", "latin1"):  # Python 2 pickles store str as bytes
        try:
            return _RestrictedUnpickler(io.BytesIO(raw), encoding=encoding).load()
        except UnicodeDecodeError as exc:
            last = exc
            continue
        except pickle.UnpicklingError as exc:
            if str(exc).startswith("refused global"):
                raise BenchError(
                    f"{path}: unsafe pickle refused ({exc}); a question file may only hold lists, dicts and "
                    "strings. Use the official file or the Hugging Face Parquet export (format='hf')"
                ) from None
            raise BenchError(f"{path}: not a readable pickle ({exc})") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as exc:
            raise BenchError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    raise BenchError(f"{path}: cannot decode the pickled text ({last})")


def load(root: str | Path, split: str, *, format: str = "auto", check_images: bool = True) -> list[Sample]:
    """Questions of one split."""
    root = Path(root)
    check_split(DATASET, split, SPLITS)
    fmt = resolve_format(format, root, (root / "qas").is_dir(), DATASET, "qas/<split>/<split>_qa.pkl")
    if fmt == "hf":
        return _load_hf(root, split)
    return _load_official(root, split, check_images)


def _load_official(root: Path, split: str, check_images: bool) -> list[Sample]:
    path = root / "qas" / split / f"{split}_qa.pkl"
    if not path.is_file():
        raise BenchError(f"{root}: missing qas/{split}/{split}_qa.pkl (the PathVQA {split} questions)")
    items = safe_unpickle(path)
    if not isinstance(items, list):
        raise BenchError(f"{path}: expected a pickled list of questions, got {type(items).__name__}")
    if not items:
        raise BenchError(f"{path}: the list of questions is empty")
    images = ImageSource.find(DATASET, root, (f"images/{split}",), required=check_images)
    out = []
    for k, item in enumerate(items):
        where = f"{path} item {k}"
        image = text_field(item, "image", where)
        question = text_field(item, "question", where)
        answer = text_field(item, "answer", where)
        name = image if image.lower().endswith((".jpg", ".jpeg", ".png")) else f"{image}.jpg"
        out.append(
            Sample(
                id=f"{DATASET}-{split}-{k:05d}",
                dataset=DATASET,
                split=split,
                images=[images.ref(name)],
                question=question,
                answer=answer,
                answer_type=closed_if_yes_no(answer),
                meta={"image_id": image, "index": k, "format": "official"},
            )
        )
    return out


def _load_hf(root: Path, split: str) -> list[Sample]:
    data = read_parquet_split(root, split, DATASET, ("question", "answer"))
    out = []
    for i, (row, loc) in enumerate(zip(data.rows, data.locations, strict=True)):
        where = f"{loc[0]} row {loc[1]}"
        answer = text_field(row, "answer", where)
        out.append(
            Sample(
                id=f"{DATASET}-hf-{split}-{i:05d}",
                dataset=DATASET,
                split=split,
                images=[parquet_ref(DATASET, loc, data.image_column)],
                question=text_field(row, "question", where),
                answer=answer,
                answer_type=closed_if_yes_no(answer),
                meta={"format": "hf", "shard": loc[0].name, "row": loc[1]},
            )
        )
    return out


def check(root: str | Path, **options: Any) -> CheckReport:
    return check_dataset(DATASET, Path(root), load, SPLITS, **options)
