"""``mii-core`` / ``python -m mii_core``: inspect what is installed, serve a model, send prompts."""
from __future__ import annotations

import argparse
import sys

from mii_core.plugins import get_plugins
from mii_core.plugins.manager import ALLOW_ENV
from mii_core.serving.commands import add_serving_commands, run_serving_command


def list_plugins() -> int:
    state = get_plugins()
    print("Plugins loaded:")
    for plugin in state.loaded:
        print(f"  {plugin.name:<16} {plugin.distribution} {plugin.version}")
    if not state.loaded:
        print("  (none)")
    print("Architectures (model_type -> policy):")
    for entry in sorted(state.architectures.entries.values(), key=lambda e: e.name):
        print(f"  {entry.name:<16} {entry.target}  [plugin {entry.plugin}]")
    print("Kernels (op: implementation [devices] priority):")
    for k in sorted(state.kernels.entries, key=lambda e: (e.op, -e.priority)):
        print(f"  {k.op}: {k.name} [{', '.join(k.devices)}] {k.priority}  [plugin {k.plugin}]")
    print("Transports:")
    for entry in sorted(state.transports.entries.values(), key=lambda e: e.name):
        print(f"  {entry.name:<16} {entry.target}  [plugin {entry.plugin}]")
    if not state.transports.entries:
        print("  (none)")
    if state.skipped:
        print(f"Not loaded ({ALLOW_ENV} restricts): {', '.join(state.skipped)}")
    for name, reason in state.failed.items():
        print(f"FAILED plugin '{name}': {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mii-core", description="mii-core command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plugins", help="list installed plugins, architectures, kernels and transports")
    add_serving_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "plugins":
        return list_plugins()
    return run_serving_command(args)


if __name__ == "__main__":
    sys.exit(main())
