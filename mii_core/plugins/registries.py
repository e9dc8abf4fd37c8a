"""Name → lazily imported target, per kind of extension. Filled by plugins through the hooks."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


def import_target(target: str) -> Any:
    """Imports ``"package.module:attr"``."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


@dataclass(slots=True)
class Registration:
    name: str
    target: str
    plugin: str


@dataclass
class ArchitectureRegistry:
    entries: dict[str, Registration] = field(default_factory=dict)
    current_plugin: str = "<unknown>"

    def register(self, model_type: str, target: str) -> None:
        if model_type in self.entries:
            other = self.entries[model_type].plugin
            raise ValueError(f"model_type '{model_type}' registered by both '{other}' and '{self.current_plugin}'")
        self.entries[model_type] = Registration(model_type, target, self.current_plugin)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def load(self, model_type: str) -> Any:
        if model_type not in self.entries:
            installed = ", ".join(self.names()) or "none"
            raise ValueError(
                f"no installed plugin handles model_type '{model_type}' (architectures loaded: {installed}); "
                f"`pip install mii-plugin-{model_type.replace('_', '-')}` would add it, if such a plugin exists"
            )
        return import_target(self.entries[model_type].target)


@dataclass(slots=True)
class KernelRegistration:
    op: str
    name: str
    target: str
    devices: tuple[str, ...]
    priority: int
    plugin: str


@dataclass
class KernelRegistry:
    entries: list[KernelRegistration] = field(default_factory=list)
    current_plugin: str = "<unknown>"

    def register(self, op: str, target: str, devices: Iterable[str] = ("cpu", "cuda"),
                 priority: int = 0, name: str | None = None) -> None:
        self.entries.append(KernelRegistration(op, name or target, target, tuple(devices), priority,
                                               self.current_plugin))

    def choose(self, op: str, device_type: str) -> KernelRegistration:
        candidates = [e for e in self.entries if e.op == op and device_type in e.devices]
        if not candidates:
            raise ValueError(
                f"no kernel implements op '{op}' on device '{device_type}'; "
                "`pip install mii-kernels` provides the PyTorch reference for every op"
            )
        return max(candidates, key=lambda e: e.priority)

    def resolve(self, op: str, device_type: str) -> Callable[..., Any]:
        return import_target(self.choose(op, device_type).target)


@dataclass
class TransportRegistry:
    entries: dict[str, Registration] = field(default_factory=dict)
    current_plugin: str = "<unknown>"

    def register(self, name: str, target: str) -> None:
        self.entries[name] = Registration(name, target, self.current_plugin)

    def load(self, name: str) -> Any:
        if name not in self.entries:
            installed = ", ".join(sorted(self.entries)) or "none"
            raise ValueError(f"no transport '{name}' installed (installed: {installed})")
        return import_target(self.entries[name].target)
