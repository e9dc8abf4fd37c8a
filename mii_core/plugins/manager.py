"""Finds plugins through entry points, loads each once per process, and fills the registries."""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from mii_core.plugins import hookspecs
from mii_core.plugins.registries import ArchitectureRegistry, KernelRegistry, TransportRegistry

ENTRY_POINT_GROUP = "mii_core.plugins"
ALLOW_ENV = "MII_CORE_PLUGINS"  # comma-separated entry-point names; unset = load all
log = logging.getLogger(__name__)


@dataclass(slots=True)
class LoadedPlugin:
    name: str
    distribution: str
    version: str


@dataclass
class PluginState:
    manager: pluggy.PluginManager
    architectures: ArchitectureRegistry = field(default_factory=ArchitectureRegistry)
    kernels: KernelRegistry = field(default_factory=KernelRegistry)
    transports: TransportRegistry = field(default_factory=TransportRegistry)
    loaded: list[LoadedPlugin] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # plugin name -> reason
    skipped: list[str] = field(default_factory=list)  # excluded by MII_CORE_PLUGINS


_state: PluginState | None = None
_lock = threading.Lock()


def _allowed_names() -> set[str] | None:
    raw = os.getenv(ALLOW_ENV)
    if raw is None or raw.strip() == "":
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _register_with_hooks(state: PluginState, name: str, module: object) -> None:
    """Runs one plugin's hooks against the registries, so registrations carry its name."""
    state.manager.register(module, name=name)
    caller = state.manager.subset_hook_caller  # call only this plugin's implementations
    others = [p for p in state.manager.get_plugins() if p is not module]
    for registry, hook in ((state.architectures, "mii_core_register_architectures"),
                           (state.kernels, "mii_core_register_kernels"),
                           (state.transports, "mii_core_register_transports")):
        registry.current_plugin = name
        caller(hook, remove_plugins=others)(registry=registry)


def _load(state: PluginState) -> None:
    allowed = _allowed_names()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if any(p.name == ep.name for p in state.loaded) or ep.name in state.failed:
            continue  # two dists declaring one name (e.g. editable + regular install): first wins
        if allowed is not None and ep.name not in allowed:
            state.skipped.append(ep.name)
            continue
        dist = ep.dist.name if ep.dist else "?"
        try:
            _register_with_hooks(state, ep.name, ep.load())
        except Exception as exc:  # a broken third-party plugin must not take the process down
            state.failed[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("mii-core plugin '%s' (%s) failed to load and is skipped: %s", ep.name, dist, exc)
            continue
        state.loaded.append(LoadedPlugin(ep.name, dist, ep.dist.version if ep.dist else "?"))


def get_plugins() -> PluginState:
    """The process-wide plugin state; the first call loads the plugins (idempotent, thread-safe)."""
    global _state
    with _lock:
        if _state is None:
            manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            manager.add_hookspecs(hookspecs)
            state = PluginState(manager)
            _load(state)
            _state = state
        return _state


def reset_plugins() -> None:
    """Forgets loaded plugins so the next ``get_plugins`` reads entry points again (for tests)."""
    global _state
    with _lock:
        _state = None
