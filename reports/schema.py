"""The versioned result format: JSON Schemas of results.json and of one samples/*.jsonl line.

Bump SCHEMA_VERSION (major.minor) on any change; readers accept the same major version.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = "1.4"

_INTERVAL = {
    "type": "array",
    "items": {"type": ["number", "null"]},
    "minItems": 2,
    "maxItems": 2,
}

METRIC = {
    "type": "object",
    "required": ["value", "ci95", "n"],
    "properties": {
        "value": {"type": ["number", "null"]},
        "ci95": _INTERVAL,
        "n": {"type": "integer", "minimum": 0},
        # 1.1: a metric that could not be computed here (missing Java, local weights, …): value and ci95 are
        # null and this says why.
        "unavailable": {"type": "string", "minLength": 1},
        # 1.2: a metric measured by several training runs (fine-tuning seeds): value is their mean, sd their
        # sample standard deviation (null with one seed), seeds each run's value and interval by seed.
        "sd": {"type": ["number", "null"], "minimum": 0},
        "seeds": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["value", "ci95"],
                "properties": {"value": {"type": ["number", "null"]}, "ci95": _INTERVAL},
            },
        },
    },
}

# 1.3: a task scored with an LLM judge (CheXprompt, `--judge`) records who judged and what it cost (never the key).
JUDGE = {
    "type": "object",
    "required": ["model", "host", "prompt_version", "n_judged", "n_judge_failed"],
    "properties": {
        "model": {"type": "string"},
        "host": {"type": "string"},
        "remote": {"type": "boolean"},
        "prompt_version": {"type": "string"},
        "temperature": {"type": "number"},
        "n_judged": {"type": "integer", "minimum": 0},
        "n_judge_failed": {"type": "integer", "minimum": 0},
        "usage": {"type": "object"},
        "cost_usd": {"type": "number", "minimum": 0},
    },
}

TASK_RESULT = {
    "type": "object",
    "required": [
        "task",
        "dataset",
        "protocol",
        "split",
        "dataset_fingerprint",
        "n_samples",
        "metrics",
        "config",
        "samples_file",
        "wall_time_s",
        "comparable",
    ],
    "properties": {
        "task": {"type": "string"},
        "dataset": {"type": "string"},
        "protocol": {"type": "string"},
        "split": {"type": "string"},
        "family": {"type": "string"},
        "dataset_fingerprint": {"type": "string", "minLength": 8},
        "n_samples": {"type": "integer", "minimum": 0},
        "metrics": {"type": "object", "additionalProperties": METRIC},
        "config": {"type": "object"},
        "samples_file": {"type": "string"},
        "wall_time_s": {"type": "number", "minimum": 0},
        "model_time_s": {"type": "number", "minimum": 0},
        "throughput_samples_per_s": {"type": ["number", "null"]},
        "calls": {"type": "object"},
        "batch_size": {
            "type": "object",
            "properties": {
                "requested": {"oneOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}]},
                "used": {"type": ["integer", "null"]},
                "out_of_memory_at": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "distributed": {
            "type": "object",
            "properties": {
                "world_size": {"type": "integer", "minimum": 1},
                "backend": {"type": ["string", "null"]},
                "mode": {"enum": ["records", "outputs", None]},
            },
        },
        "comparable": {"type": "boolean"},
        "flags": {"type": "array", "items": {"type": "string"}},
        "judge": JUDGE,
    },
}

RESULTS = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://medvlbench/schemas/results-1.json",
    "title": "medvlbench run result",
    "type": "object",
    "required": ["schema_version", "run_id", "status", "created", "model", "config", "environment", "tasks"],
    "properties": {
        "schema_version": {"type": "string", "pattern": r"^1\.\d+$"},
        "run_id": {"type": "string", "minLength": 1},
        "status": {"enum": ["running", "complete", "failed"]},
        "created": {"type": "string"},
        "finished": {"type": ["string", "null"]},
        "comparable": {"type": "boolean"},
        "flags": {"type": "array", "items": {"type": "string"}},
        "model": {
            "type": "object",
            "required": ["name", "args", "fingerprint", "capabilities"],
            "properties": {
                "name": {"type": "string"},
                "args": {"type": "object"},
                "fingerprint": {"type": "string", "minLength": 8},
                "parameters": {"type": ["integer", "null"]},
                "kind": {"type": "string"},
                "capabilities": {"type": "array", "items": {"type": "string"}},
            },
        },
        "config": {
            "type": "object",
            "required": ["tasks", "seed", "bootstrap", "config_hash"],
            "properties": {
                "tasks": {"type": "array", "items": {"type": "string"}},
                "seed": {"type": "integer"},
                "bootstrap": {"type": "integer", "minimum": 0},
                "limit": {"type": ["integer", "null"]},
                "batch_size": {"oneOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}]},
                "world_size": {"type": "integer", "minimum": 1},
                "device": {"type": "string"},
                "config_hash": {"type": "string"},
            },
        },
        "environment": {
            "type": "object",
            "required": ["python", "platform", "packages", "harness_version"],
            "properties": {
                "python": {"type": "string"},
                "platform": {"type": "string"},
                "packages": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                "git_commit": {"type": ["string", "null"]},
                "device": {"type": "string"},
                "harness_version": {"type": "string"},
            },
        },
        "tasks": {"type": "object", "additionalProperties": TASK_RESULT},
        "wall_time_s": {"type": ["number", "null"]},
    },
}

SAMPLE_RECORD = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://medvlbench/schemas/sample-1.json",
    "title": "medvlbench per-sample record",
    "type": "object",
    "required": ["id", "inputs", "prediction", "reference"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "object"},
        "prediction": {},
        "reference": {},
        "scores": {"type": "object"},
    },
}


def results_schema() -> dict[str, Any]:
    return RESULTS


def sample_schema() -> dict[str, Any]:
    return SAMPLE_RECORD
