"""Plugin registry: pluggy hook specifications and the entry-point loader.

Built-in datasets, metrics, tasks and models register through the same hooks and the same
entry-point group (``bench``) as third-party packages. Hooks return *specs* holding lazy
``"module:attr"`` references, so listing never imports torch or builds a model.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy

from bench.interfaces import BenchError, DatasetSpec, MetricSpec, ModelSpec, TaskSpec

GROUP = "bench"
hookspec = pluggy.HookspecMarker(GROUP)
hookimpl = pluggy.HookimplMarker(GROUP)


class BenchHookSpecs:
    @hookspec
    def bench_register_datasets(self) -> Iterable[DatasetSpec]:
        """Return dataset readers."""

    @hookspec
    def bench_register_tasks(self) -> Iterable[TaskSpec]:
        """Return task specs."""

    @hookspec
    def bench_register_models(self) -> Iterable[ModelSpec]:
        """Return model factories."""

    @hookspec
    def bench_register_metrics(self) -> Iterable[MetricSpec]:
        """Return metric functions."""


S = TypeVar("S", DatasetSpec, TaskSpec, ModelSpec, MetricSpec)
KINDS = {
    "datasets": ("bench_register_datasets", DatasetSpec),
    "tasks": ("bench_register_tasks", TaskSpec),
    "models": ("bench_register_models", ModelSpec),
    "metrics": ("bench_register_metrics", MetricSpec),
}


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    blocked: bool = False


@dataclass
class Registry:
    """The loaded plugins and everything they registered, by name."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo]
    datasets: dict[str, DatasetSpec]
    tasks: dict[str, TaskSpec]
    models: dict[str, ModelSpec]
    metrics: dict[str, MetricSpec]
    owners: dict[tuple[str, str], str]  # (kind, name) -> plugin name

    def get(self, kind: str, name: str) -> Any:
        table: dict[str, Any] = getattr(self, kind)
        if name in table:
            return table[name]
        singular = kind.rstrip("s")
        close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise BenchError(f"unknown {singular} {name!r}.{hint} (`bench list {kind}` shows all {len(table)})")


def _disabled() -> set[str]:
    raw = os.environ.get("BENCH_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def _collect(manager: pluggy.PluginManager, hook: str, cls: type[S], kind: str) -> tuple[dict[str, S], dict]:
    table: dict[str, S] = {}
    owners: dict[tuple[str, str], str] = {}
    caller = getattr(manager.hook, hook)
    # Iterate per implementation so that a duplicate name can name both plugins.
    for impl in reversed(caller.get_hookimpls()):
        plugin_name = manager.get_name(impl.plugin) or "?"
        try:
            result = impl.function()
        except Exception as exc:  # a broken third-party plugin must not take the harness down
            raise BenchError(f"plugin {plugin_name!r} failed in {hook}(): {exc!r}") from exc
        for spec in result or ():
            if not isinstance(spec, cls):
                raise BenchError(
                    f"plugin {plugin_name!r} returned {type(spec).__name__} from {hook}(); expected {cls.__name__}"
                )
            if spec.name in table:
                raise BenchError(
                    f"{kind[:-1]} {spec.name!r} is registered twice: by plugin "
                    f"{owners[(kind, spec.name)]!r} and by {plugin_name!r}"
                )
            table[spec.name] = spec
            owners[(kind, spec.name)] = plugin_name
    return table, owners


def load_registry(extra_plugins: Iterable[object] = ()) -> Registry:
    """Load every ``bench`` entry point (minus BENCH_DISABLE_PLUGINS) and collect specs."""
    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(BenchHookSpecs)
    blocked = _disabled()
    infos: list[PluginInfo] = []
    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
        )
        infos.append(info)
        if ep.name in blocked:
            info.blocked = True
            manager.set_blocked(ep.name)
            continue
        if manager.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise BenchError(f"cannot load plugin {ep.name!r} ({ep.value}): {exc!r}") from exc
        manager.register(plugin, name=ep.name)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", repr(plugin))
        manager.register(plugin, name=name)
        infos.append(PluginInfo(name=name, module=name, distribution=None, version=None))
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise BenchError(f"a plugin implements an unknown hook: {exc}") from exc
    for info in infos:
        plugin = manager.get_plugin(info.name)
        if plugin is not None:
            info.hooks = sorted(h.name for h in manager.get_hookcallers(plugin) or [])
    tables: dict[str, Any] = {}
    owners: dict[tuple[str, str], str] = {}
    for kind, (hook, cls) in KINDS.items():
        tables[kind], own = _collect(manager, hook, cls, kind)
        owners.update(own)
    return Registry(manager=manager, plugins=infos, owners=owners, **tables)


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The process-wide registry (loaded once)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def reset_registry() -> None:
    global _REGISTRY
    _REGISTRY = None
