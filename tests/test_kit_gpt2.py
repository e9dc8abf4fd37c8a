"""The kit's worked plugin (plugins/example-gpt2, installed by `make install` as its own distribution) used
the way a third party would: its own parity tests run with pytest from its folder, with only it and the
reference kernels loaded; and its code reaches the core through public names only, in under 80 lines."""

import ast
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

KIT = Path(__file__).resolve().parents[1] / "plugins" / "example-gpt2"


def test_kit_is_installed_as_its_own_distribution():
    [entry] = [ep for ep in entry_points(group="mii_core.plugins") if ep.name == "gpt2"]
    assert (entry.dist.name, entry.value) == ("mii-plugin-gpt2", "mii_plugin_gpt2.plugin")


def test_kit_parity_tests_pass_from_its_folder_with_only_it_loaded():
    env = {**os.environ, "MII_CORE_PLUGINS": "gpt2,torch_ref"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=KIT, env=env,
                         capture_output=True, text=True, timeout=900)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.fullmatch(r"\d+ passed in .*", summary), f"every kit test must run and pass: {summary}"


def test_kit_uses_public_names_only_and_stays_short():
    lines = 0
    for file in sorted((KIT / "mii_plugin_gpt2").glob("*.py")):
        source = file.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mii_core"):
                names = node.module.split(".") + [alias.name for alias in node.names]
                assert not any(n.startswith("_") for n in names), f"{file.name}: private import {names}"
            if isinstance(node, ast.Attribute):
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                assert not private, f"{file.name}: private attribute {node.attr}"
        lines += sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))
    assert lines < 80, f"the GPT-2 plugin grew to {lines} lines"
