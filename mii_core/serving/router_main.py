"""The deployment's main process: starts the replicas, waits for them, runs the router and the front ends.

Run by ``serve()`` as ``python -m mii_core.serving.router_main DEPLOYMENT_FOLDER`` in a session of its
own, so the deployment outlives the caller's terminal. It writes ``status: ready`` into the
deployment record when every replica answers and every front end listens; on a start failure it
logs why (with the failing replica's log tail), stops what it started and exits 1. On terminate
(any client, a front end's /terminate, SIGTERM or SIGINT) it refuses new requests, ends those in
flight, stops the front ends and the replicas, removes the record, and exits.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from mii_core.config.deployment import MIIConfig
from mii_core.serving.errors import DeploymentStartError
from mii_core.serving.launch import log_path, log_tail, spawn_replica
from mii_core.serving.link import LinkServer, RemoteBackend, backend_handler
from mii_core.serving.metadata import DeploymentRecord, load_record, remove_record, write_record
from mii_core.serving.ports import LINK_HOST
from mii_core.serving.router import ReplicaState, Router
from mii_core.serving.transport import Transport, TransportSettings, load_transport

log = logging.getLogger("mii_core.router")
READY_POLL_SECONDS = 0.2


def start_replicas(record: DeploymentRecord, config: MIIConfig) -> list[ReplicaState]:
    folder = Path(record.folder)
    count = len(record.placements)
    model = config.model_conf
    return [ReplicaState(i, RemoteBackend(address, record.key),
                         spawn_replica(folder, i, placement, count, model.tensor_parallel, model.torch_dist_port,
                                       record.remote_host(i), config.hostfile),
                         own_group=model.tensor_parallel > 1 or record.remote_host(i) is not None,
                         host=record.remote_host(i))
            for i, (address, placement) in enumerate(zip(record.replica_links, record.placements))]


def wait_until_ready(replicas: list[ReplicaState], folder: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(replicas)
    while waiting:
        for replica in list(waiting):
            code = replica.process.poll()
            if code is not None:
                path = log_path(folder, f"replica-{replica.index}")
                raise DeploymentStartError(f"{replica.name} exited with code {code} while starting; "
                                           f"the end of its log ({path}):\n{log_tail(path)}")
            try:
                answer = replica.backend.health(timeout=5)
                if replica.host is None:  # pids on another host cannot be watched from here
                    replica.rank_pids = list(answer.get("rank_pids") or [])
                waiting.remove(replica)
            except Exception:
                pass  # not listening yet: still loading the model
        if waiting and time.monotonic() > deadline:
            names = ", ".join(f"{r.index} (on {r.host})" if r.host else str(r.index) for r in waiting)
            tails = "\n".join(f"--- replica {r.index}:\n{log_tail(log_path(folder, f'replica-{r.index}'))}"
                              for r in waiting)
            raise DeploymentStartError(f"replica(s) {names} not ready after startup_timeout={timeout:.0f} s; "
                                       f"the end of their logs:\n{tails}")
        if waiting:
            _keep_alive([r for r in replicas if r.host and r not in waiting])
            time.sleep(READY_POLL_SECONDS)


def _keep_alive(ready: list[ReplicaState]) -> None:
    """A replica on another host exits when the router stays silent (replica.ROUTER_SILENCE_SECONDS):
    those ready are asked for health while others still load."""
    for replica in ready:
        try:
            replica.backend.health(timeout=1)
        except Exception:
            pass  # a lost one fails its start below through its launcher's exit


def start_front_ends(config: MIIConfig, record: DeploymentRecord, router: Router) -> list[Transport]:
    started: list[Transport] = []
    try:
        for name, (host, port) in record.front_ends.items():
            settings = TransportSettings(host=host, port=port, deployment_name=record.name,
                                         model_name=config.model_conf.model_name_or_path, api_key=config.api_key,
                                         threads=config.restful_processes, max_request_bytes=config.max_request_bytes,
                                         tokenizer=config.model_conf.tokenizer,
                                         chat_template=config.model_conf.chat_template,
                                         tool_call_parser=config.model_conf.tool_call_parser,
                                         task=(record.legacy or {}).get("task"))
            transport = load_transport(name)(router, settings)
            transport.start()
            started.append(transport)
            log.info("%s front end listening on %s:%d", name, host, port)
    except Exception:
        stop_front_ends(started)
        raise
    return started


def stop_front_ends(transports: list[Transport]) -> None:
    for transport in transports:
        try:
            transport.stop()
        except Exception:
            log.exception("stopping a front end failed")


def run(record: DeploymentRecord) -> int:
    config = MIIConfig.model_validate(record.config)
    record.router_pid = os.getpid()
    replicas = start_replicas(record, config)
    record.replica_pids = [r.process.pid for r in replicas]
    write_record(record)
    router = Router(replicas, record.name, config.model_conf.model_name_or_path, config.max_queued_requests)
    front_ends: list[Transport] = []
    try:
        wait_until_ready(replicas, Path(record.folder), config.startup_timeout)
        client_link = LinkServer(LINK_HOST, record.router_link[1], record.key, backend_handler(router), "router")
        front_ends = start_front_ends(config, record, router)
        client_link.start()
    except Exception as exc:
        log.error("deployment '%s' failed to start: %s", record.name, exc)
        stop_front_ends(front_ends)
        router.stop_replicas(grace=2)
        remove_record(record)
        return 1
    router.refresh_load()  # so health is complete from the first call
    router.start_monitors()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: router.terminate())
    record.status = "ready"
    write_record(record)
    log.info("deployment '%s' ready: %d replica(s), front ends %s", record.name, len(replicas),
             ", ".join(f"{n} {h}:{p}" for n, (h, p) in record.front_ends.items()) or "none")
    while not router.terminate_requested.wait(1.0):
        pass  # a timed wait, so signal handlers run promptly
    shut_down(record, router, front_ends, client_link)
    return 0


def shut_down(record: DeploymentRecord, router: Router, front_ends: list[Transport], client_link: LinkServer) -> None:
    log.info("deployment '%s' terminating", record.name)
    router.begin_shutdown()
    stop_front_ends(front_ends)
    client_link.close()
    router.stop_replicas()
    remove_record(record)
    log.info("deployment '%s' terminated", record.name)


def main(argv: Optional[list[str]] = None) -> int:
    folder = Path((argv if argv is not None else sys.argv[1:])[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s router %(levelname)s %(message)s")
    record = load_record(folder)
    if record is None:
        log.error("no deployment record in %s", folder)
        return 1
    code = run(record)
    logging.shutdown()
    os._exit(code)  # front ends' worker threads are daemons; nothing is left to flush


if __name__ == "__main__":
    sys.exit(main())
