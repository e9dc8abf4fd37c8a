"""Third-party plugins simulated as real installed distributions.

A distribution is a ``<name>-<version>.dist-info`` folder (METADATA + entry_points.txt) beside its
module, in a folder put on ``sys.path`` (or ``PYTHONPATH`` for a subprocess): exactly what
``importlib.metadata`` and so the plugin manager see after ``pip install``.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

GROUP = "mii_core.plugins"


def install_fake_plugin(site: Path, entry_point: str, source: str, *, module: str | None = None,
                        distribution: str | None = None) -> str:
    """Writes a distribution whose plugin (entry point ``entry_point``) is a module holding ``source``.

    Returns the module name (unique per entry point unless given, so tests never share a cached import).
    """
    module = module or f"mii_test_plugin_{entry_point}"
    distribution = distribution or f"mii-test-plugin-{entry_point.replace('_', '-')}"
    dist_info = site / f"{distribution.replace('-', '_')}-0.0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{GROUP}]\n{entry_point} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    return module


def architecture_plugin(*claims: str) -> str:
    """Source of a plugin module that makes each ``registry.register(...)`` call in ``claims``."""
    body = "\n".join(f"    registry.register({claim})" for claim in claims)
    return f"from mii_core import hookimpl\n\n@hookimpl\ndef mii_core_register_architectures(registry):\n{body}\n"
