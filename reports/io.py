"""Read and write result files: ``<run>/results.json`` and ``<run>/samples/<task>.jsonl``.

Writes are atomic (temp file + rename) so a crash never leaves a half-written results.json.
Every file is validated against the versioned schema on write and on read.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import jsonschema

from bench.interfaces import BenchError
from reports.schema import SAMPLE_RECORD, SCHEMA_VERSION, results_schema

RESULTS_FILE = "results.json"
SAMPLES_DIR = "samples"
PARTIAL_SUFFIX = ".partial"


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf → None, numpy scalars/arrays → Python."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy
        return _clean(obj.tolist())
    return obj


def to_json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(_clean(record), ensure_ascii=False, separators=(",", ":"))


@functools.cache
def _results_validator() -> Any:
    schema = results_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # once per process, not on every write
    return cls(schema)


def validate_results(data: Mapping[str, Any], source: str = "results") -> None:
    try:
        error = jsonschema.exceptions.best_match(_results_validator().iter_errors(data))
        if error is not None:
            raise error
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise BenchError(
            f"{source} does not match the result schema {SCHEMA_VERSION} at {where}: {exc.message}"
        ) from None


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; ``mode`` sets its permissions (the
    temporary file is private, 0o600, otherwise: pages of a static site need 0o644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(run_dir: Path, results: Mapping[str, Any]) -> Path:
    data = _clean(results)
    validate_results(data, str(run_dir / RESULTS_FILE))
    path = run_dir / RESULTS_FILE
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    """Load and validate a results.json (or the results.json inside a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"no result file at {path} (expected <run>/results.json written by `bench run`)") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path} is not valid JSON: {exc}") from None
    version = str(data.get("schema_version", "")) if isinstance(data, dict) else ""
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise BenchError(f"{path} has result schema version {version or '(none)'}; this harness reads {SCHEMA_VERSION}")
    validate_results(data, str(path))
    return data


def samples_path(run_dir: Path, task: str) -> Path:
    return run_dir / SAMPLES_DIR / f"{task}.jsonl"


class JsonlWriter:
    """Streams records to ``FILE.partial`` (line-buffered: every record reaches the file as soon as it is
    produced); ``finish`` renames it to ``FILE``, so an existing output is replaced only by a complete one."""

    def __init__(self, path: str | Path) -> None:
        self.final = Path(path)
        self.partial = self.final.with_name(self.final.name + PARTIAL_SUFFIX)
        self._fh: TextIO | None = open(self.partial, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        self.count = 0

    def write(self, record: Mapping[str, Any]) -> None:
        assert self._fh is not None
        self._fh.write(to_json_line(record) + "\n")
        self.count += 1

    def finish(self) -> Path:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.partial, self.final)
        return self.final

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class SampleWriter(JsonlWriter):
    """Streams a task's records to ``samples/<task>.jsonl.partial``; ``finish`` renames it into place."""

    def __init__(self, run_dir: Path, task: str) -> None:
        path = samples_path(run_dir, task)
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path)


def iter_samples(path: str | Path, validate: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the records of a samples JSONL file (or a predictions file for `bench score`)."""
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115
    except FileNotFoundError:
        raise BenchError(f"predictions file not found: {path}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchError(f"{path}:{lineno}: not a JSON object ({exc.msg})") from None
            if validate:
                _validate_record(record, path, lineno)
            yield record


def _validate_record(record: Any, path: Path, lineno: int) -> None:
    if not isinstance(record, dict):
        raise BenchError(f"{path}:{lineno}: expected a JSON object with id, prediction, reference")
    missing = [k for k in ("id", "prediction", "reference") if k not in record]
    if missing:
        raise BenchError(
            f"{path}:{lineno}: missing field(s) {', '.join(missing)} (each line needs id, "
            "prediction, reference and the task's own fields)"
        )
    record.setdefault("inputs", {})
    error = jsonschema.exceptions.best_match(_sample_validator().iter_errors(record))
    if error is not None:
        raise BenchError(f"{path}:{lineno}: {error.message}")


@functools.cache
def _sample_validator() -> Any:
    cls = jsonschema.validators.validator_for(SAMPLE_RECORD)
    cls.check_schema(SAMPLE_RECORD)
    return cls(SAMPLE_RECORD)
