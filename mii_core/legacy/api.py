"""MII Legacy's functions: ``deploy``, ``mii_query_handle``, ``terminate`` (``import mii_core.legacy as mii``)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional, Protocol

from mii_core.config.base import validate_options
from mii_core.config.deployment import DeploymentType
from mii_core.legacy.config import LegacyConfig
from mii_core.legacy.deployment import InProcessDeployment
from mii_core.legacy.result import LegacyResult
from mii_core.legacy.model_type import model_type_of
from mii_core.loading.checkpoint import resolve_model_path
from mii_core.plugins import get_plugins

NON_PERSISTENT, LOCAL = DeploymentType.NON_PERSISTENT.value, DeploymentType.LOCAL.value
FASTGEN_TASK = "text-generation"  # MII Legacy's one task the FastGen engine also serves


class Deployment(Protocol):
    name: str
    task: str

    def query(self, query: dict, **options: Any) -> LegacyResult: ...

    def remote_query(self, query: Any) -> Any: ...

    def to_plain(self, response: Any) -> Any: ...

    def terminate(self) -> None: ...


_deployments: dict[str, Deployment] = {}
_lock = threading.Lock()


def deploy(task: str, model: str, deployment_name: Optional[str] = None, deployment_type: str = LOCAL,
           model_path: Optional[str] = None, enable_deepspeed: bool = True, enable_zero: bool = False,
           ds_config: Optional[dict] = None, mii_config: Optional[dict] = None, **kwargs: Any) -> "QueryHandle":
    """Deploys ``model`` (a hub id, or a folder: ``model_path`` if given) for ``task`` under
    ``deployment_name`` and returns its query handle: ``"local"`` (MII's default) starts a persistent
    deployment (router, replica processes, gRPC and REST front ends), ``"non-persistent"`` runs the model in
    this process. MII Legacy's signature; see the README for what is built."""
    _refuse_unsupported(deployment_type, enable_zero, ds_config, kwargs)
    name = deployment_name or f"{Path(model).name}-{task}-deployment"
    config = validate_options(LegacyConfig, dict(mii_config or {}), "mii_config")
    folder = resolve_model_path(model_path or model)
    model_type = model_type_of(folder)
    if deployment_type == LOCAL:
        check_served(task, model_type)  # here, not in a replica's log
        from mii_core.legacy.local import start_local  # serving's deploy path only when used

        start_local(name, task, model_type, folder, config)
        return QueryHandle(name)
    with _lock:
        if name in _deployments:
            raise ValueError(f"a deployment named '{name}' is running; terminate it first or choose another name")
        _deployments[name] = build_deployment(name, task, model_type, folder, config)
    return QueryHandle(name)


def _refuse_unsupported(deployment_type: str, enable_zero: bool, ds_config: Optional[dict], kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"deploy() got unknown argument(s) {sorted(kwargs)}")
    if deployment_type not in (NON_PERSISTENT, LOCAL):
        raise ValueError(f"deployment_type must be '{NON_PERSISTENT}' or '{LOCAL}' ('aml' is not supported), "
                         f"got {deployment_type!r}")
    if enable_zero or ds_config:
        raise ValueError("enable_zero and ds_config (DeepSpeed ZeRO inference) are not supported by mii-core")


def check_served(task: str, model_type: str) -> None:
    """An error naming the installed task plugins when nothing serves ``task`` for ``model_type``."""
    plugins = get_plugins()
    if task == FASTGEN_TASK:
        return  # an architecture plugin, else HF generate: the replica says which
    plugins.tasks.served_for(task, model_type)


def build_deployment(name: str, task: str, model_type: str, folder: Path, config: LegacyConfig) -> Deployment:
    """The deployment object that answers queries in this process (a replica's, or the caller's)."""
    plugins = get_plugins()
    if task == FASTGEN_TASK and model_type in plugins.architectures.entries:
        from mii_core.legacy.textgen import FastGenDeployment  # the engine's imports only when used

        return FastGenDeployment(name, str(folder), config.pipeline_kwargs)
    if task == FASTGEN_TASK and model_type not in plugins.tasks.model_types(task):
        from mii_core.legacy.hf_generate import HFGenerateDeployment  # no plugin serves it: HF generate

        return HFGenerateDeployment(name, folder, model_type, config)
    task_class = plugins.tasks.load_for(task, model_type)
    model = task_class.load(folder, task=task, device=config.torch_device(), dtype=config.torch_dtype())
    return InProcessDeployment(name, model, config)


def get_deployment(name: str) -> Deployment:
    """The deployment named ``name``: one in this process, else a running local one (from its record)."""
    with _lock:
        found = _deployments.get(name)
    if found is None:
        found = _find_local(name)
    if found is None:
        raise ValueError(f"no legacy deployment named '{name}' (in this process: "
                         f"{', '.join(sorted(_deployments)) or 'none'}; nor a running local deployment)")
    return found


def _find_local(name: str) -> Optional[Deployment]:
    from mii_core.legacy.local import find_local  # serving's client path only when used

    return find_local(name)


class QueryHandle:
    """MII Legacy's query handle: ``query(request_dict, **options)`` → a result with ``.response`` and
    ``.time_taken``. For a local deployment it queries over gRPC, from any process."""

    def __init__(self, deployment_name: str) -> None:
        self.deployment_name = deployment_name
        with _lock:
            in_process = deployment_name in _deployments
        # a local deployment's client is made once; an in-process one is looked up per query (terminate ends it)
        self._remote = None if in_process else get_deployment(deployment_name)

    def query(self, request_dict: dict, **options: Any) -> LegacyResult:
        target = self._remote or get_deployment(self.deployment_name)
        return target.query(request_dict, **options)

    def terminate(self) -> None:
        terminate(self.deployment_name)


def mii_query_handle(deployment_name: str) -> QueryHandle:
    return QueryHandle(deployment_name)


def terminate(deployment_name: str) -> None:
    """Stops a deployment (a local one: every process of it); its pending queries are answered first."""
    with _lock:
        found = _deployments.pop(deployment_name, None)
    if found is None:
        found = _find_local(deployment_name)
    if found is None:
        raise ValueError(f"no legacy deployment named '{deployment_name}' to terminate")
    found.terminate()
