"""Stopping the replicas' processes: asked over the link first, signals for what does not exit."""
from __future__ import annotations

import logging
import subprocess
import time

from mii_core.serving.router.replicas import ReplicaState

log = logging.getLogger("mii_core.serving.router")


def stop_replicas(replicas: list[ReplicaState], grace: float = 10.0) -> None:
    for replica in replicas:
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
            log.warning("replica %d did not exit in %.0f s; killing it", replica.index, grace)
            process.kill()
            process.wait()
        replica.end_process_group()  # a launcher's ranks, should any be left
