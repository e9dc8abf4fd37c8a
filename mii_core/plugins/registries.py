"""Name → lazily imported target, per kind of extension. Filled by plugins through the hooks.

Every registration is kept with the plugin that made it, so a plugin that fails part-way can be
removed whole (``forget_plugin``), and who serves a name is decided from all claims at once
(:mod:`mii_core.plugins.claims`), whatever order the plugins loaded in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from mii_core.plugins.claims import (UNKNOWN_PLUGIN, Claim, Outcome, PluginConflictError, check_registration,
                                     conflict_message, decide, import_registered,
                                     import_target)

__all__ = ["ArchitectureRegistry", "KernelRegistry", "TransportRegistry", "TaskRegistry", "KernelRegistration",
           "PluginConflictError", "import_target"]


class NamedRegistry:
    """Name → one target; several plugins may claim a name, the rules in ``claims`` pick who serves it."""

    kind = "name"  # how messages call a key ("model_type", "transport")

    def __init__(self) -> None:
        self.claims: list[Claim] = []
        self.current_plugin = UNKNOWN_PLUGIN  # set by the plugin manager around each plugin's hook
        self.failed_plugins: dict[str, str] = {}  # plugin -> why it failed (its claims were removed)

    def register(self, name: str, target: str, *, priority: int = 0, override: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} must be a non-empty string, got {name!r}")
        check_registration(target, priority)
        if not isinstance(override, bool):
            raise TypeError(f"override must be True or False, got {override!r}")
        if any(c.name == name and c.plugin == self.current_plugin for c in self.claims):
            raise ValueError(f"plugin '{self.current_plugin}' registers {self.kind} '{name}' twice")
        self.claims.append(Claim(name, target, self.current_plugin, priority, override))

    def forget_plugin(self, plugin: str, reason: str = "") -> None:
        """Removes every claim ``plugin`` made (it failed); ``reason`` is kept for error messages."""
        self.claims = [c for c in self.claims if c.plugin != plugin]
        if reason:
            self.failed_plugins[plugin] = reason

    def names(self) -> list[str]:
        return sorted({c.name for c in self.claims})

    def outcome(self, name: str) -> Outcome:
        return decide(name, (c for c in self.claims if c.name == name))

    def outcomes(self) -> list[Outcome]:
        return [self.outcome(name) for name in self.names()]

    @property
    def entries(self) -> dict[str, Claim]:
        """name -> the claim that serves it (names in conflict are left out)."""
        return {o.name: o.winner for o in self.outcomes() if o.winner is not None}

    def served_by(self, name: str) -> Claim:
        """The claim that serves ``name``; a missing name or a conflict is a ValueError saying what to do."""
        if not any(c.name == name for c in self.claims):
            raise ValueError(self._missing_message(name) + self._failed_note())
        outcome = self.outcome(name)
        if outcome.winner is None:
            raise PluginConflictError(conflict_message(f"{self.kind} '{name}'", outcome.conflicting))
        return outcome.winner

    def load(self, name: str) -> Any:
        claim = self.served_by(name)
        return import_registered(claim.target, claim.plugin, f"{self.kind} '{name}'")

    def _missing_message(self, name: str) -> str:
        return f"no {self.kind} '{name}' installed (installed: {', '.join(self.names()) or 'none'})"

    def _failed_note(self) -> str:
        if not self.failed_plugins:
            return ""
        failed = "; ".join(f"'{p}': {why}" for p, why in sorted(self.failed_plugins.items()))
        return f". Plugins that failed to load, and so registered nothing: {failed}"


class ArchitectureRegistry(NamedRegistry):
    """HF ``model_type`` → ``"module:PolicyClass"``."""

    kind = "model_type"

    def _missing_message(self, model_type: str) -> str:
        installed = ", ".join(self.names()) or "none"
        return (f"no installed plugin handles model_type '{model_type}' (architectures loaded: {installed}); "
                f"`pip install mii-plugin-{model_type.replace('_', '-')}` would add it, if such a plugin exists")


class TransportRegistry(NamedRegistry):
    """Transport name (``grpc``, ``rest``) → ``"module:Class"``."""

    kind = "transport"


class TaskRegistry(NamedRegistry):
    """(task, HF ``model_type``) → ``"module:TaskModelClass"``: the legacy tasks (``mii_core.legacy``).

    One plugin registration names a task and the model types it serves for it; each pair is a claim of
    its own (named ``"task/model_type"``), so two plugins may serve one task for different model types
    and the rules of :mod:`mii_core.plugins.claims` decide per pair.
    """

    kind = "task"
    SEPARATOR = "/"  # neither task names nor HF model types contain it

    def register(self, task: str, target: str, *, model_types: Iterable[str] = (), priority: int = 0,
                 override: bool = False) -> None:
        if not isinstance(task, str) or not task or self.SEPARATOR in task:
            raise TypeError(f"task must be a non-empty string without '{self.SEPARATOR}', got {task!r}")
        types_ = self._checked_model_types(model_types)
        for model_type in types_:  # all checked before any is added: a bad call registers nothing
            check_registration(target, priority)
            if any(c.name == self.key(task, model_type) and c.plugin == self.current_plugin for c in self.claims):
                raise ValueError(f"plugin '{self.current_plugin}' registers task '{task}' for model_type "
                                 f"'{model_type}' twice")
        for model_type in types_:
            super().register(self.key(task, model_type), target, priority=priority, override=override)

    def _checked_model_types(self, model_types: Iterable[str]) -> tuple[str, ...]:
        if isinstance(model_types, str) or not all(isinstance(m, str) and m for m in model_types):
            raise TypeError(f"model_types must be a tuple of HF model_type strings such as ('bert',), "
                            f"got {model_types!r}")
        found = tuple(model_types)
        if not found or any(self.SEPARATOR in m for m in found):
            raise TypeError(f"model_types must name at least one HF model_type (without '{self.SEPARATOR}'), "
                            f"got {model_types!r}")
        return found

    @classmethod
    def key(cls, task: str, model_type: str) -> str:
        return f"{task}{cls.SEPARATOR}{model_type}"

    def tasks(self) -> list[str]:
        return sorted({name.split(self.SEPARATOR)[0] for name in self.names()})

    def model_types(self, task: str) -> list[str]:
        prefix = task + self.SEPARATOR
        return sorted(name.removeprefix(prefix) for name in self.names() if name.startswith(prefix))

    def describe_installed(self) -> str:
        """Each task plugin with what it serves: 'plugin' (task: types; ...), for error messages."""
        served: dict[str, dict[str, list[str]]] = {}
        for claim in self.claims:
            task, _, model_type = claim.name.partition(self.SEPARATOR)
            served.setdefault(claim.plugin, {}).setdefault(task, []).append(model_type)
        if not served:
            return "no task plugin is installed (`pip install mii-tasks-text` adds the text tasks)"
        def listing(tasks: dict[str, list[str]]) -> str:
            return ", ".join(f"{task}: {'/'.join(sorted(types_))}" for task, types_ in sorted(tasks.items()))

        return "; ".join(f"'{plugin}' ({listing(tasks)})" for plugin, tasks in sorted(served.items()))

    def served_for(self, task: str, model_type: str) -> Claim:
        """The claim serving ``task`` on ``model_type``; an unknown task or model type is a ValueError naming
        what is installed."""
        if task not in self.tasks():
            raise ValueError(f"unknown task '{task}'; the installed task plugins serve: "
                             f"{', '.join(self.tasks()) or 'no task'} ({self.describe_installed()})"
                             + self._failed_note())
        if model_type not in self.model_types(task):
            raise ValueError(f"no installed task plugin serves task '{task}' for model_type '{model_type}' "
                             f"(it is served for: {', '.join(self.model_types(task))}); installed task "
                             f"plugins: {self.describe_installed()}" + self._failed_note())
        return self.served_by(self.key(task, model_type))

    def load_for(self, task: str, model_type: str) -> Any:
        claim = self.served_for(task, model_type)
        return import_registered(claim.target, claim.plugin, f"task '{task}' for model_type '{model_type}'")


@dataclass(frozen=True, slots=True)
class KernelRegistration:
    op: str
    name: str
    target: str
    devices: tuple[str, ...]
    priority: int
    plugin: str


class KernelRegistry:
    """op → implementations; per device the highest priority serves, a tie at the top is a conflict."""

    def __init__(self) -> None:
        self.entries: list[KernelRegistration] = []
        self.current_plugin = UNKNOWN_PLUGIN

    def register(self, op: str, target: str, devices: Iterable[str] = ("cpu", "cuda"),
                 priority: int = 0, name: str | None = None) -> None:
        check_registration(target, priority)
        if isinstance(devices, str) or not all(isinstance(d, str) for d in devices):
            raise TypeError(f"devices must be a tuple of device types such as ('cuda',), got {devices!r}")
        entry = KernelRegistration(op, name or target, target, tuple(devices), priority, self.current_plugin)
        for other in self.entries:
            if (other.op, other.plugin, other.priority) == (op, entry.plugin, priority) and \
                    set(other.devices) & set(entry.devices):
                raise ValueError(f"plugin '{entry.plugin}' registers op '{op}' twice at priority {priority} "
                                 f"for device(s) {sorted(set(other.devices) & set(entry.devices))}; "
                                 "give the two different priorities or devices")
        self.entries.append(entry)

    def forget_plugin(self, plugin: str, reason: str = "") -> None:
        self.entries = [e for e in self.entries if e.plugin != plugin]

    def ops(self) -> list[str]:
        return sorted({e.op for e in self.entries})

    def devices(self) -> list[str]:
        return sorted({d for e in self.entries for d in e.devices})

    def candidates(self, op: str, device_type: str) -> list[KernelRegistration]:
        """Every implementation of ``op`` on ``device_type``, best first."""
        found = [e for e in self.entries if e.op == op and device_type in e.devices]
        return sorted(found, key=lambda e: (-e.priority, e.plugin, e.name))

    def choose(self, op: str, device_type: str) -> KernelRegistration:
        candidates = self.candidates(op, device_type)
        if not candidates:
            raise ValueError(
                f"no kernel implements op '{op}' on device '{device_type}'; "
                "`pip install mii-kernels` provides the PyTorch reference for every op"
            )
        top = [e for e in candidates if e.priority == candidates[0].priority]
        if len(top) > 1:  # one plugin cannot tie with itself (register refuses it): these are several
            claims = [Claim(op, e.target, e.plugin, e.priority) for e in top]
            raise PluginConflictError(conflict_message(f"op '{op}' on device '{device_type}'", claims,
                                                       override_flag=False))
        return top[0]

    def resolve(self, op: str, device_type: str) -> Callable[..., Any]:
        chosen = self.choose(op, device_type)
        return import_registered(chosen.target, chosen.plugin, f"kernel '{chosen.name}' for op '{op}'")
