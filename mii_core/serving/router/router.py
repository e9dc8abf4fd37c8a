"""The deployment's Backend: what the transports and the client link call, composed of the router's rooms."""
from __future__ import annotations

import threading
from typing import Any

from mii_core.serving.backend import Backend, Request
from mii_core.serving.errors import QueueFull, Unavailable
from mii_core.serving.router.admission import Admission
from mii_core.serving.router.failover import RoutedStream
from mii_core.serving.router.load_poll import LoadPoller
from mii_core.serving.router.metrics import Observer, Observers
from mii_core.serving.router.process_watch import ProcessWatch
from mii_core.serving.router.replicas import ReplicaPool, ReplicaState
from mii_core.serving.router.shutdown import stop_replicas

ENGINE_TOTALS = ("running", "waiting", "kv_blocks_used", "kv_blocks_total")


class Router(Backend):
    def __init__(self, replicas: list[ReplicaState], deployment_name: str, model_name: str,
                 max_queued_requests: int) -> None:
        self.deployment_name, self.model_name = deployment_name, model_name
        self.terminate_requested = threading.Event()
        self._stopping = threading.Event()  # set at shutdown: refuses requests, ends the monitors
        self.pool = ReplicaPool(replicas)
        self.admission = Admission(max_queued_requests, self._stopping)
        self.watch = ProcessWatch(self.pool)
        self.load = LoadPoller(self.pool)
        self.observers = Observers()

    # ---- Backend ----
    def submit(self, request: Request) -> RoutedStream:
        try:
            return self.admission.admit(
                lambda: RoutedStream(request, self.pool, self.watch, self.admission, self.observers))
        except (QueueFull, Unavailable) as exc:
            self.observers.notify("request_ended", exc.kind)
            raise

    def health(self) -> dict[str, Any]:
        replicas = [r.describe() for r in self.pool.replicas]
        alive = self.pool.alive_count()
        status = ("stopping" if self._stopping.is_set() else "ok" if alive == len(replicas)
                  else "degraded" if alive else "down")
        totals = {key: sum(r["engine"].get(key) or 0 for r in replicas) for key in ENGINE_TOTALS}
        return {"status": status, "deployment": self.deployment_name, "model": self.model_name,
                "queued_requests": self.admission.queued, "rerouted": self.pool.rerouted, "replicas_alive": alive,
                "replicas": replicas, **totals}

    def terminate(self) -> None:
        self.terminate_requested.set()

    def add_observer(self, observer: Observer) -> None:
        self.observers.add(observer)

    # ---- the deployment's life (router_main) ----
    def refresh_load(self) -> None:
        self.load.refresh()

    def start_monitors(self) -> None:
        self.watch.start(self._stopping)
        self.load.start(self._stopping)

    def begin_shutdown(self) -> None:
        """Refuses new requests and ends those in flight with Unavailable."""
        self.admission.begin_shutdown()

    def stop_replicas(self, grace: float = 10.0) -> None:
        stop_replicas(self.pool.replicas, grace)
