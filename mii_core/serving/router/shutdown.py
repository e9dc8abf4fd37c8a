"""Stopping the replicas' processes: asked over the link first, signals for what does not exit (for a
replica on another host, its DeepSpeed launcher's own stop first)."""
from __future__ import annotations

import logging
import subprocess
import time

from mii_core.serving.router.replicas import ReplicaState

log = logging.getLogger("mii_core.serving.router")
REMOTE_STOP_SECONDS = 15.0  # DeepSpeed's launcher: pdsh reaching the host, pkill there, 1 s of its own


def stop_replicas(replicas: list[ReplicaState], grace: float = 10.0) -> None:
    for replica in replicas:
        if not replica.alive:
            continue  # its process is gone (or, on another host, out of reach: its launcher is gone)
        try:
            replica.backend.terminate()
        except Exception:
            pass  # already gone, or stuck: the signals below take care of it
    deadline = time.monotonic() + grace
    for replica in replicas:
        process = replica.process
        if process is None:
            continue
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.warning("%s did not exit in %.0f s; stopping it", replica.name, grace)
            _force_stop(replica, process)
        replica.end_process_group()  # a launcher's ranks, should any be left


def _force_stop(replica: ReplicaState, process: subprocess.Popen) -> None:
    """SIGKILL, except that a replica on another host first gets DeepSpeed's own stop: its launcher, on
    SIGTERM, ends the replica's processes on that host (pdsh running pkill there) before exiting."""
    if replica.host:
        process.terminate()
        try:
            process.wait(timeout=REMOTE_STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            log.warning("%s: DeepSpeed's launcher did not stop it in %.0f s; killing the launcher", replica.name,
                        REMOTE_STOP_SECONDS)
    process.kill()
    process.wait()
