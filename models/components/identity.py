"""Model identity from files: a fingerprint computed without building the model.

The prediction cache is keyed by the model's fingerprint. When an adapter can name its weights by
their files (a checkpoint directory), hashing those bytes identifies the model without loading
it, so a run whose every prediction is cached never builds the model at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from bench.interfaces import BenchError

_CHUNK = 1 << 22


def bytes_fingerprint(parts: Sequence[tuple[str, bytes]]) -> str:
    """The fingerprint :func:`files_fingerprint` gives for files with these names and contents, so an
    in-memory model can be identified exactly as its saved checkpoint will be."""
    digest = hashlib.sha256()
    for name, content in parts:
        digest.update(name.encode() + b"\0")
        digest.update(content)
        digest.update(b"\1")
    return digest.hexdigest()[:16]


def files_fingerprint(directory: str | Path, names: Sequence[str]) -> str:
    """sha256 over the named files' names and bytes (16 hex digits); a missing file is an error."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in names:
        path = directory / name
        try:
            with path.open("rb") as fh:
                digest.update(name.encode() + b"\0")
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            raise BenchError(f"checkpoint {directory} is missing {name}") from None
        except OSError as exc:
            raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from None
        digest.update(b"\1")
    return digest.hexdigest()[:16]
