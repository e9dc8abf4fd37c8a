"""Name → lazily imported target, per kind of extension. Filled by plugins through the hooks.

Every registration is kept with the plugin that made it, so a plugin that fails part-way can be
removed whole (``forget_plugin``), and who serves a name is decided from all claims at once
(:mod:`mii_core.plugins.claims`), whatever order the plugins loaded in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from mii_core.plugins.claims import (UNKNOWN_PLUGIN, Claim, Outcome, PluginConflictError, check_registration,
                                     conflict_message, decide, import_target)

__all__ = ["ArchitectureRegistry", "KernelRegistry", "TransportRegistry", "KernelRegistration",
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
        return import_target(self.served_by(name).target)

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
        return import_target(self.choose(op, device_type).target)
