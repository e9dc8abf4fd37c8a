"""Who serves a name, decided from every plugin's claim at once (never from the order plugins load in).

Rules, the same for model types and transports (kernels rank by ``priority`` alone):

1. the claim of highest ``priority`` wins;
2. at equal priority, a claim made with ``override=True`` beats the claims made without it;
3. any other tie at the top (two plugins at one priority, both or neither with ``override``) is a
   conflict: no claim serves the name, and asking for it raises :class:`PluginConflictError`.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

_TARGET = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
UNKNOWN_PLUGIN = "<unknown>"  # registrations made outside a plugin's hook (tests, the REPL)


class PluginConflictError(ValueError):
    """Two or more plugins claim one name at the same rank, so none of them serves it."""


def import_target(target: str) -> Any:
    """Imports ``"package.module:attr"`` (``attr`` may be dotted)."""
    module_name, _, attr = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        value = getattr(value, part)
    return value


class PluginImportError(ImportError):
    """A registered ``"module:Name"`` target that does not import: names the plugin, what it registered
    and the target, so that a misspelt class is not a bare AttributeError at ``pipeline()``."""


def import_registered(target: str, plugin: str, what: str) -> Any:
    """``import_target`` for a plugin's registration of ``what`` (e.g. "model_type 'llama'")."""
    try:
        return import_target(target)
    except (ImportError, AttributeError) as exc:
        raise PluginImportError(f"plugin '{plugin}' registered {what} as '{target}', which cannot be imported "
                                f"({type(exc).__name__}: {exc}); fix the target string in the plugin's "
                                "registration or reinstall the plugin") from exc


def check_registration(target: object, priority: object) -> None:
    """Type checks shared by every ``register``: a mistake fails the plugin with a message, not later."""
    if not isinstance(target, str) or not _TARGET.match(target):
        raise TypeError(f"target must be a 'package.module:Name' string (imported only when first used), "
                        f"got {target!r}")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int (higher wins), got {priority!r}")


@dataclass(frozen=True, slots=True)
class Claim:
    """One plugin's registration of ``target`` under ``name``."""

    name: str
    target: str
    plugin: str
    priority: int = 0
    override: bool = False

    @property
    def rank(self) -> tuple[int, bool]:
        return (self.priority, self.override)

    def describe(self) -> str:
        flags = f"priority {self.priority}" + (", override=True" if self.override else "")
        return f"plugin '{self.plugin}' ({flags})"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The decision for one name: a winner and the claims it overrides, or the claims in conflict."""

    name: str
    winner: Claim | None
    overridden: tuple[Claim, ...] = ()
    conflicting: tuple[Claim, ...] = ()


def decide(name: str, claims: Iterable[Claim]) -> Outcome:
    """Applies the rules above; sorting by plugin name only keeps listings and messages stable."""
    ordered = sorted(claims, key=lambda c: (-c.priority, not c.override, c.plugin))
    if not ordered:
        raise KeyError(name)
    top = [c for c in ordered if c.rank == ordered[0].rank]
    if len(top) > 1:
        return Outcome(name, None, conflicting=tuple(top))
    return Outcome(name, top[0], overridden=tuple(ordered[1:]))


def conflict_message(what: str, conflicting: Sequence[Claim], override_flag: bool = True) -> str:
    """Names every plugin in the conflict and the three ways out."""
    names = [f"'{c.plugin}'" for c in conflicting]
    plugins = ", ".join(names[:-1]) + " and " + names[-1]
    rank = f"priority {conflicting[0].priority}"
    if override_flag:
        rank += ", all with override=True" if conflicting[0].override else ", none with override=True"
    remedy = "a higher priority or override=True" if override_flag else "a higher priority"
    return (f"{what} is claimed by plugins {plugins} at the same rank ({rank}), so none of them serves it. "
            f"To choose: uninstall one of them (`mii-core plugins` names their distributions), load only one "
            f"with MII_CORE_PLUGINS (a comma-separated list of the plugins to load), or register the one "
            f"that should win with {remedy}")
