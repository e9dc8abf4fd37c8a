"""The layering of mii_core is a contract (pyproject.toml, [tool.importlinter]): each floor imports only the
floors below it, no package's modules import each other in a circle, and the core never imports a transport,
a kernel implementation or an architecture plugin. ``lint-imports`` checks the real import graph."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports_command() -> list[str]:
    beside_python = Path(sys.executable).with_name("lint-imports")
    found = str(beside_python) if beside_python.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]' (import-linter is a test extra)")
    return [found, "--no-cache"]


def test_import_contracts_are_kept():
    done = subprocess.run(lint_imports_command(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"lint-imports found broken contracts:\n{done.stdout}\n{done.stderr}"


def test_the_forbidden_list_names_every_plugin_package_in_the_tree():
    """import-linter's forbidden contract takes no prefix wildcard (``mii_plugin_*``), so each plugin
    package is named: a new architecture, task plugin or server must be added there too."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = {m for c in contracts if c["type"] == "forbidden" for m in c["forbidden_modules"]}
    packages = {init.parent.name for pattern in ("architectures/*/*/__init__.py", "plugins/*/*/__init__.py",
                                                 "servers/*/*/__init__.py")
                for init in REPO.glob(pattern)}
    assert packages, "no plugin packages found: has the layout changed?"
    assert sorted(packages - forbidden) == [], "add these to the forbidden contract in pyproject.toml"
