"""Finds plugins through entry points, loads each once per process, and fills the registries.

A plugin either registers everything its hooks ask for or nothing: when its import, its hooks'
signatures or one of its hooks fails, whatever it had registered is removed from every
registry and it is reported FAILED by name, with its error; the other plugins are unaffected.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

import pluggy

from mii_core.plugins import hookspecs
from mii_core.plugins.claims import UNKNOWN_PLUGIN, conflict_message
from mii_core.plugins.registries import (ArchitectureRegistry, KernelRegistry, PluginConflictError,
                                         TaskRegistry, TransportRegistry)

ENTRY_POINT_GROUP = "mii_core.plugins"
ALLOW_ENV = "MII_CORE_PLUGINS"  # comma-separated entry-point names; unset = load all
LOADED, FAILED, SKIPPED = "loaded", "FAILED", "skipped"
log = logging.getLogger(__name__)


@dataclass(slots=True)
class PluginRecord:
    """One installed plugin (an entry point) and what became of it."""

    name: str
    distribution: str
    version: str
    status: str = LOADED
    error: str = ""  # why it FAILED
    hooks: tuple[str, ...] = ()  # the hooks it implements


@dataclass
class PluginState:
    manager: pluggy.PluginManager
    architectures: ArchitectureRegistry = field(default_factory=ArchitectureRegistry)
    kernels: KernelRegistry = field(default_factory=KernelRegistry)
    transports: TransportRegistry = field(default_factory=TransportRegistry)
    tasks: TaskRegistry = field(default_factory=TaskRegistry)
    plugins: list[PluginRecord] = field(default_factory=list)  # in load order (entry-point name)

    @property
    def registries(self) -> tuple[ArchitectureRegistry, KernelRegistry, TransportRegistry, TaskRegistry]:
        return (self.architectures, self.kernels, self.transports, self.tasks)

    @property
    def loaded(self) -> list[PluginRecord]:
        return [p for p in self.plugins if p.status == LOADED]

    @property
    def failed(self) -> dict[str, str]:
        """plugin name -> its error."""
        return {p.name: p.error for p in self.plugins if p.status == FAILED}

    @property
    def skipped(self) -> list[str]:
        """Installed plugins that MII_CORE_PLUGINS left out."""
        return [p.name for p in self.plugins if p.status == SKIPPED]


_state: PluginState | None = None
_lock = threading.Lock()
_HOOKS = ("mii_core_register_architectures", "mii_core_register_kernels", "mii_core_register_transports",
          "mii_core_register_tasks")  # in the order of PluginState.registries


def _allowed_names() -> set[str] | None:
    raw = os.getenv(ALLOW_ENV)
    if raw is None or raw.strip() == "":
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _register_with_hooks(state: PluginState, name: str, module: object) -> tuple[str, ...]:
    """Runs one plugin's hooks against the registries, so its registrations carry its name."""
    state.manager.register(module, name=name)
    state.manager.check_pending()  # a misspelt hook name fails here instead of silently doing nothing
    others = [p for p in state.manager.get_plugins() if p is not module]
    implemented = {caller.name for caller in state.manager.get_hookcallers(module) or ()}
    for registry, hook in zip(state.registries, _HOOKS):
        registry.current_plugin = name
        try:
            state.manager.subset_hook_caller(hook, remove_plugins=others)(registry=registry)
        finally:
            registry.current_plugin = UNKNOWN_PLUGIN
    return tuple(hook for hook in _HOOKS if hook in implemented)


def _roll_back(state: PluginState, name: str, reason: str) -> None:
    for registry in state.registries:
        registry.forget_plugin(name, reason)
    if state.manager.get_plugin(name) is not None:
        state.manager.unregister(name=name)


def _load_one(state: PluginState, ep: EntryPoint, record: PluginRecord) -> None:
    try:
        record.hooks = _register_with_hooks(state, ep.name, ep.load())
    except Exception as exc:  # a broken third-party plugin must not take the process down
        record.status, record.error = FAILED, f"{type(exc).__name__}: {exc}"
        _roll_back(state, ep.name, record.error)
        log.warning("mii-core plugin '%s' (%s) failed to load and registered nothing: %s",
                    ep.name, record.distribution, record.error)


def _distribution(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist else "?"


def _same_name_error(name: str, eps: list[EntryPoint]) -> str:
    """Several distributions declaring one plugin name: none is loaded, which one would win depends on
    sys.path order. One distribution seen twice (an editable and a regular install) is no error."""
    distributions = sorted({re.sub(r"[-_.]+", "-", _distribution(ep)).lower() for ep in eps})
    if len(distributions) < 2:
        return ""
    return (f"the plugin name '{name}' is declared by several distributions ({', '.join(distributions)}), "
            "so none of them is loaded; uninstall one or rename its entry point")


def _load(state: PluginState) -> None:
    allowed = _allowed_names()
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        by_name.setdefault(ep.name, []).append(ep)
    for name, eps in sorted(by_name.items()):
        ep = eps[0]
        record = PluginRecord(name, _distribution(ep), ep.dist.version if ep.dist else "?")
        state.plugins.append(record)
        if allowed is not None and name not in allowed:
            record.status = SKIPPED
        elif error := _same_name_error(name, eps):
            record.status, record.error = FAILED, error
            log.warning("mii-core plugin '%s': %s", name, error)
        else:
            _load_one(state, ep, record)
    _log_outcomes(state)


def _log_outcomes(state: PluginState) -> None:
    """Says, once, which plugin overrides which, and which names no plugin serves because of a tie."""
    for registry in (state.architectures, state.transports, state.tasks):
        for outcome in registry.outcomes():
            what = f"{registry.kind} '{outcome.name}'"
            if outcome.winner is None:
                log.error("%s", conflict_message(what, outcome.conflicting))
            elif outcome.overridden:
                log.warning("%s is served by %s, which overrides %s", what, outcome.winner.describe(),
                            ", ".join(c.describe() for c in outcome.overridden))
    for op in state.kernels.ops():
        for device in state.kernels.devices():
            try:
                state.kernels.choose(op, device)
            except PluginConflictError as exc:
                log.error("%s", exc)
            except ValueError:
                pass  # no kernel for this op on this device: only an error if a model needs it


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
