"""The text of ``mii-core plugins``: each installed plugin and its status, who serves each model type
(and whom it overrides, or who is in conflict), the kernel chosen per op and device, the transports, the
legacy tasks."""
from __future__ import annotations

import os

from mii_core.plugins.claims import Outcome, conflict_message
from mii_core.plugins.manager import ALLOW_ENV, FAILED, SKIPPED, PluginRecord, PluginState
from mii_core.plugins.registries import KernelRegistry, NamedRegistry, PluginConflictError
from mii_core.plugins.target_check import missing_target

_HOOK_PREFIX = "mii_core_register_"


def _plugin_line(p: PluginRecord) -> str:
    line = f"  {p.name:<16} {p.distribution} {p.version}  "
    if p.status == FAILED:
        return line + f"FAILED (registered nothing): {p.error}"
    if p.status == SKIPPED:
        return line + f"not loaded: {ALLOW_ENV}={os.environ.get(ALLOW_ENV, '')} leaves it out"
    hooks = ", ".join(h.removeprefix(_HOOK_PREFIX) for h in p.hooks) or "no hooks"
    return line + f"loaded ({hooks})"


def _outcome_lines(registry: NamedRegistry, outcome: Outcome) -> list[str]:
    if outcome.winner is None:
        return ([f"  {outcome.name:<16} CONFLICT: "
                 + conflict_message(f"{registry.kind} '{outcome.name}'", outcome.conflicting)]
                + [f"  {'':<16}   claimed: {c.target}  [{c.describe()}]" for c in outcome.conflicting])
    lines = [f"  {outcome.name:<16} {outcome.winner.target}  [{outcome.winner.describe()}]"
             + _import_note(registry, outcome.name)]
    lines += [f"  {'':<16}   overrides {c.target}  [{c.describe()}]" for c in outcome.overridden]
    return lines


def _import_note(registry: NamedRegistry, name: str) -> str:
    """Checks the winner's "module:Name" now, without importing it, so that a misspelt target shows in the
    listing rather than first at ``pipeline()``."""
    winner = registry.served_by(name)
    why = missing_target(winner.target)
    if why is None:
        return ""
    return (f"\n  {'':<16}   BROKEN: plugin '{winner.plugin}' registered {registry.kind} '{name}' as "
            f"'{winner.target}', which cannot be imported: {why}")


def _named_section(title: str, registry: NamedRegistry) -> list[str]:
    lines = [title]
    for outcome in registry.outcomes():
        lines += _outcome_lines(registry, outcome)
    return lines if len(lines) > 1 else lines + ["  (none)"]


def _kernel_section(kernels: KernelRegistry) -> list[str]:
    lines = ["Kernels (op on device -> chosen implementation):"]
    for op in kernels.ops():
        for device in kernels.devices():
            candidates = kernels.candidates(op, device)
            if not candidates:
                lines.append(f"  {op:<20} {device:<5} (no kernel)")
                continue
            try:
                chosen = kernels.choose(op, device)
            except PluginConflictError as exc:
                lines.append(f"  {op:<20} {device:<5} CONFLICT: {exc}")
                continue
            others = ", ".join(f"{c.name} ({c.plugin}, {c.priority})" for c in candidates if c is not chosen)
            lines.append(f"  {op:<20} {device:<5} {chosen.name}  [plugin '{chosen.plugin}', priority "
                         f"{chosen.priority}]" + (f"  over: {others}" if others else ""))
            why = missing_target(chosen.target)
            if why:
                lines.append(f"  {'':<26} BROKEN: '{chosen.target}' cannot be imported: {why}")
    return lines if len(lines) > 1 else lines + ["  (none)"]


def format_report(state: PluginState) -> str:
    lines = ["Plugins (entry-point name, distribution, status):"]
    lines += [_plugin_line(p) for p in state.plugins] or ["  (none installed)"]
    lines += _named_section("Architectures (model_type -> policy, and the plugin that serves it):",
                            state.architectures)
    lines += _kernel_section(state.kernels)
    lines += _named_section("Transports (name -> class, and the plugin that serves it):", state.transports)
    lines += _named_section("Tasks of mii_core.legacy (task/model_type -> class, and the plugin that serves it):",
                            state.tasks)
    return "\n".join(lines)
