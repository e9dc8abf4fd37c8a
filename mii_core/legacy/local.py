"""Local (persistent) MII Legacy deployments: started through the same path as ``mii_core.serve()`` (router,
replicas, transports), their replicas serving a task model (``legacy/replica.py``), found again by name
from any process through the deployment record, and queried over gRPC (MII's way) when the deployment has
a gRPC front end, else over the deployment's own link."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

from mii_core.config.base import validate_options
from mii_core.config.deployment import DEPLOYMENT_NAME_PATTERN, MIIConfig
from mii_core.legacy.config import LegacyConfig
from mii_core.legacy.result import LegacyResult
from mii_core.serving.backend import TaskQuery
from mii_core.serving.client import MIIClient
from mii_core.serving.deploy import start_deployment
from mii_core.serving.errors import Unavailable
from mii_core.serving.link import LinkBroken, RemoteBackend
from mii_core.serving.metadata import DeploymentRecord, process_alive, read_record
from mii_core.serving.transport import load_transport

QUERY_TRANSPORT = "grpc"  # MII's query handle speaks gRPC


def start_local(name: str, task: str, model_type: str, folder: Path, config: LegacyConfig) -> None:
    """Starts the deployment's processes and returns once its front ends listen (errors: the router's log)."""
    mii_config = validate_options(MIIConfig, {
        "deployment_name": name,
        "model_config": {"model_name_or_path": str(folder), "tensor_parallel": 1, "replica_num": config.replica_num},
        **config.serving_options()}, "mii_config")
    start_deployment(mii_config, legacy={"task": task, "model_type": model_type, "model_dir": str(folder),
                                         "mii_config": config.model_dump(mode="json")})


def find_local(name: str) -> Optional["RemoteDeployment"]:
    """The running local legacy deployment named ``name``, or None when there is no such record."""
    record = read_record(name) if DEPLOYMENT_NAME_PATTERN.match(name) else None
    if record is None or record.legacy is None:
        return None
    if record.status != "ready" or not process_alive(record.router_pid):
        raise Unavailable(f"legacy deployment '{name}' is not running ({record.status}, router pid "
                          f"{record.router_pid}); deploy it again")
    return RemoteDeployment(record)


class RemoteDeployment:
    """A local deployment seen from a client process: ``query`` over gRPC or the link, ``terminate``."""

    def __init__(self, record: DeploymentRecord) -> None:
        self.name, self.task = record.name, record.legacy["task"]
        self._record = record
        self._client = _task_client(record)

    def query(self, query: dict, **options: Any) -> LegacyResult:
        response, time_taken = self._client.query(query, options)
        return LegacyResult(response, time_taken)

    def terminate(self) -> None:
        MIIClient(self._record).terminate_server()


def _task_client(record: DeploymentRecord) -> Any:
    task = record.legacy["task"]
    if QUERY_TRANSPORT in record.front_ends:
        host, port = record.front_ends[QUERY_TRANSPORT]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # a wildcard bind is reached on loopback
        return load_transport(QUERY_TRANSPORT).task_client(host, port, task, record.config.get("api_key"))
    return LinkTaskClient(record)


class LinkTaskClient:
    """Queries over the deployment's own link (a deployment without a gRPC front end); images in the query
    travel as PNG bytes, and come back as the task sent them (PNG bytes)."""

    def __init__(self, record: DeploymentRecord) -> None:
        self.name = record.name
        self._backend = RemoteBackend(record.router_link, record.key)

    def query(self, query: dict, options: dict) -> tuple[Any, float]:
        request = TaskQuery({key: encoded_image(value) for key, value in query.items()}, dict(options))
        try:
            answer = self._backend.submit(request).result()
        except LinkBroken as exc:
            raise Unavailable(f"legacy deployment '{self.name}' is not reachable ({exc}); is it running?") from None
        return answer["response"], answer["time_taken"]


def encoded_image(value: Any) -> Any:
    """A PIL image as its PNG bytes (what a query's image is on the wire); any other value as it is."""
    if hasattr(value, "save") and hasattr(value, "mode"):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    return value
