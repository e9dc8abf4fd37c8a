"""Local (persistent) legacy deployments for the serving tests: real router and replica processes on free
loopback ports, metadata in a private cache, every process ended afterwards."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from support.serving import free_port_block, kill_group, pid_alive, wait_until

PORTS = 4  # gRPC front end, the replica's link, the router's link, the REST front end


@contextlib.contextmanager
def private_cache(folder) -> Iterator[None]:
    old = os.environ.get("MII_CACHE_PATH")
    os.environ["MII_CACHE_PATH"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MII_CACHE_PATH", None)
        else:
            os.environ["MII_CACHE_PATH"] = old


@contextlib.contextmanager
def local_deployment(task: str, folder, name: str, **config) -> Iterator[tuple]:
    """(query handle, deployment record) of a new local deployment; terminated (and its processes checked
    gone) on leaving."""
    import mii_core.legacy as mii
    from mii_core.serving.metadata import read_record

    base = free_port_block(PORTS)
    config = {"port_number": base, "restful_api_port": base + 3, "startup_timeout": 180.0, "batch_wait_ms": 20.0,
              **config}
    handle = mii.deploy(task=task, model=str(folder), deployment_name=name, mii_config=config)
    record = read_record(name)
    try:
        yield handle, record
    finally:
        with contextlib.suppress(Exception):
            mii.terminate(name)
        pids = [record.router_pid, *record.replica_pids]
        try:
            wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=30, what="the deployment to stop")
        finally:
            kill_group(record.router_pid)
