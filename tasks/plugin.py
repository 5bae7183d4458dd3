"""Registers the built-in tasks through the public hook, like any third-party plugin."""

from __future__ import annotations

from bench.interfaces import TaskSpec
from bench.plugins import hookimpl
from tasks.catalog import all_tasks


@hookimpl
def bench_register_tasks() -> list[TaskSpec]:
    return all_tasks()
