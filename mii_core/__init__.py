"""mii-core: a plugin-based LLM inference engine with DeepSpeed-MII's API.

``mii_core.pipeline(model)`` builds an in-process engine, ``mii_core.serve(model)`` a persistent
deployment (``mii_core.client(name)`` reaches it from any process); architectures, kernels and
transports arrive as plugins (see ``mii_core.plugins.hookspecs``).

The public names are imported on first use (PEP 562): ``import mii_core`` and a plugin's
``from mii_core import hookimpl`` must not load torch, so registering a plugin stays cheap.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it; a table of strings, so nothing is imported until asked for
_PUBLIC = {
    "pipeline": "mii_core.pipeline",
    "Pipeline": "mii_core.pipeline",
    "serve": "mii_core.serving.deploy",
    "client": "mii_core.serving.client",
    "MIIClient": "mii_core.serving.client",
    "MIIConfig": "mii_core.config.deployment",
    "DeploymentType": "mii_core.config.deployment",
    "Response": "mii_core.response",
    "TokenOutput": "mii_core.response",
    "hookimpl": "mii_core.plugins.hookspecs",
}

__all__ = [*_PUBLIC, "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time __getattr__ imports on demand
    from mii_core.config.deployment import DeploymentType, MIIConfig
    from mii_core.pipeline import Pipeline, pipeline
    from mii_core.plugins.hookspecs import hookimpl
    from mii_core.response import Response, TokenOutput
    from mii_core.serving.client import MIIClient, client
    from mii_core.serving.deploy import serve


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mii_core' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


class _Package(types.ModuleType):
    """``mii_core.pipeline`` is both a submodule and the public function. Importing the submodule binds it
    on the package, which would hide the function from ``__getattr__``; as before the lazy imports, the
    function keeps the name (the module stays reachable as ``sys.modules["mii_core.pipeline"]``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
