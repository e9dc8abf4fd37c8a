"""A replica of a local (persistent) MII Legacy deployment: one task model behind its dynamic batcher,
served over the deployment's link as a :class:`~mii_core.serving.backend.Backend` of task queries.

The router starts it as it starts any replica (``python -m mii_core.replica_main FOLDER INDEX``); the
record's ``legacy`` entry says which task model to build. Each link connection runs in its own thread,
so concurrent queries meet in the batcher and share forward passes. A bad query fails alone: its keys
and images are checked before it is reported started, and the task's own errors end only its stream.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from mii_core.config.base import validate_options
from mii_core.legacy.config import LegacyConfig
from mii_core.serving.backend import STARTED, Backend, Request, ResponseStream, TaskQuery
from mii_core.serving.errors import InvalidRequest
from mii_core.serving.link import LinkServer, backend_handler
from mii_core.serving.metadata import DeploymentRecord
from mii_core.serving.ports import LINK_HOST
from mii_core.serving.replica import PARENT_CHECK_SECONDS, RouterWatch

log = logging.getLogger("mii_core.legacy.replica")


class TaskStream(ResponseStream):
    """One task query: STARTED, then (the query answered) ``responses`` holds its plain answer."""

    def __init__(self, deployment: Any, query: dict[str, Any], options: dict[str, Any]) -> None:
        self._deployment, self._query, self._options = deployment, query, options
        self.responses = None

    def cancel(self) -> None:
        pass  # a query already in the batcher finishes with its batch; nothing is held after it

    def events(self, poll_interval: Optional[float] = None) -> Iterator[Any]:
        yield STARTED
        result = self._deployment.query(self._query, **self._options)
        self.responses = {"response": self._deployment.to_plain(result.response),
                          "time_taken": float(result.time_taken)}


class TaskBackend(Backend):
    """A legacy deployment (``mii_core.legacy.api.Deployment``) as the replica's Backend."""

    def __init__(self, deployment: Any) -> None:
        self.deployment = deployment
        self.terminated = False

    def submit(self, request: Request) -> TaskStream:
        task = self.deployment.task
        if not isinstance(request, TaskQuery):
            raise InvalidRequest(f"this deployment serves the MII Legacy task '{task}': send it task queries "
                                 "(mii_core.legacy.mii_query_handle, the legacymodelresponse gRPC service, or "
                                 "POST /mii/<deployment>), not text generation requests")
        if request.task is not None and request.task != task:
            raise InvalidRequest(f"this deployment serves '{task}', not '{request.task}'; call its {task} method")
        return TaskStream(self.deployment, self.deployment.remote_query(request.query), request.options)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid(), "rank_pids": [os.getpid()], "task": self.deployment.task}

    def terminate(self) -> None:
        self.terminated = True


def replica_device(config: LegacyConfig, placement: dict[str, Any]) -> str:
    """The device option, else this replica's first GPU (the launcher shows it only its own), else the CPU."""
    if config.device is not None:
        return config.device
    return "cuda:0" if placement["devices"] else "cpu"


def run_task_replica(record: DeploymentRecord, index: int) -> int:
    """The replica process: builds the task model, serves the link until terminated; never returns."""
    from mii_core.legacy.api import build_deployment  # the api imports serving's deploy; only here

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s legacy replica {index} %(levelname)s %(message)s")
    router = RouterWatch()
    router.exit_when_gone(f"legacy replica {index}")
    spec = record.legacy
    config = validate_options(LegacyConfig, dict(spec["mii_config"]), "mii_config")
    config = config.model_copy(update={"device": replica_device(config, record.placements[index])})
    deployment = build_deployment(record.name, spec["task"], spec["model_type"], Path(spec["model_dir"]), config)
    backend = TaskBackend(deployment)
    host, port = record.link_bind(index)
    server = LinkServer(host or LINK_HOST, port, record.key, backend_handler(backend), name=f"replica{index}").start()
    log.info("legacy replica %d (%s) ready on %s:%d (pid %d)", index, deployment.task, host, port, os.getpid())
    while not backend.terminated and router.alive():
        time.sleep(PARENT_CHECK_SECONDS)
    server.close()
    deployment.terminate()
    logging.shutdown()
    os._exit(0)
