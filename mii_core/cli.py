"""``mii-core`` / ``python -m mii_core``: inspect what is installed, serve a model, send prompts."""
from __future__ import annotations

import argparse
import sys

from mii_core.plugins import get_plugins
from mii_core.plugins.report import format_report
from mii_core.serving.commands import add_serving_commands, run_serving_command


def list_plugins() -> int:
    print(format_report(get_plugins()))
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
