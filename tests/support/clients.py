"""The third-party clients of issue 19 (lm-eval, guidellm, LiteLLM, LangChain), imported as their users do.

They are in the ``test`` extras; one that is missing fails its test with the command that installs it,
never a skip that could pass unnoticed."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

INSTALL = "pip install -e '.[test]'"


def require_client(module: str, package: str) -> ModuleType:
    """``module`` imported, or the test failed naming ``package`` and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"the client {package} is not installed ({exc}); the client tests run it as its users do: "
                    f"{INSTALL}", pytrace=False)
