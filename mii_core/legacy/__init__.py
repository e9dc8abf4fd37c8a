"""MII Legacy's API on mii-core: ``import mii_core.legacy as mii``, then as in MII::

    mii.deploy(task="fill-mask", model="bert-base-uncased", deployment_name="bert_deployment",
               deployment_type="non-persistent")
    result = mii.mii_query_handle("bert_deployment").query({"query": "Hello I'm a [MASK] model."})
    print(result.response, result.time_taken)
    mii.terminate("bert_deployment")

Tasks come from task plugins (``mii_core_register_tasks``; ``mii-core plugins`` lists them). The names
resolve on first use, so importing this package (a task plugin importing ``mii_core.legacy.task``) loads
no torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {"deploy": "mii_core.legacy.api", "mii_query_handle": "mii_core.legacy.api",
           "terminate": "mii_core.legacy.api", "QueryHandle": "mii_core.legacy.api",
           "LegacyResult": "mii_core.legacy.result", "LegacyConfig": "mii_core.legacy.config",
           "TaskModel": "mii_core.legacy.task", "Prepared": "mii_core.legacy.task",
           "QueryError": "mii_core.legacy.task"}
__all__ = list(_PUBLIC)

if TYPE_CHECKING:
    from mii_core.legacy.api import QueryHandle, deploy, mii_query_handle, terminate
    from mii_core.legacy.config import LegacyConfig
    from mii_core.legacy.result import LegacyResult
    from mii_core.legacy.task import Prepared, QueryError, TaskModel


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mii_core.legacy' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
