"""Each live replica's load (its health answer: running sequences, KV blocks), polled for ``health()``."""
from __future__ import annotations

import logging
import threading

from mii_core.serving.router.replicas import ReplicaPool

log = logging.getLogger("mii_core.serving.router")
HEALTH_SECONDS = 1.0


class LoadPoller:
    def __init__(self, pool: ReplicaPool) -> None:
        self.pool = pool

    def refresh(self) -> None:
        for replica in self.pool.live():
            try:
                replica.load = replica.backend.health(timeout=HEALTH_SECONDS)
            except Exception as exc:  # reported by the process watch if it died
                log.debug("replica %d health: %s", replica.index, exc)

    def start(self, stopping: threading.Event) -> None:
        """Refreshes every HEALTH_SECONDS, from a daemon thread, until ``stopping`` is set."""
        def poll() -> None:
            while not stopping.wait(HEALTH_SECONDS):
                self.refresh()
        threading.Thread(target=poll, name="router-load", daemon=True).start()
