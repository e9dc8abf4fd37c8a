"""The router: the deployment's Backend, in front of its replicas.

- Least outstanding work: a request goes to the live replica with the fewest prompts in flight
  (ties: the one picked longest ago), so a replica busy with long requests gets fewer new ones.
- Failover: a replica that breaks the link before it reported the request's start (queued there, or
  unreachable) costs the request nothing: it goes to another replica. Once a replica reported the
  start, losing it ends the request with an error that says so (it cannot be resumed elsewhere).
- Replica processes are polled every MONITOR_SECONDS, so a dead one stops getting requests and is
  reported by ``health()`` within that time; their load (running sequences, KV blocks) every second.
  A tensor-parallel replica is watched rank by rank (the pids its rank 0 reports): one lost rank makes
  the replica lost, with the rank named, and what is left of it is ended.
- At most ``max_queued_requests`` requests wait to start; past that ``QueueFull``.
- Observers (the REST plugin's metrics) hear time to first token, inter-token latency, tokens and
  each request's outcome.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Protocol

from mii_core.serving.backend import Backend, Chunk, GenerateRequest, ResponseStream
from mii_core.serving.errors import QueueFull, RequestCancelled, Unavailable, error_kind
from mii_core.serving.link import LinkBroken, RemoteBackend
from mii_core.serving.metadata import lost_ranks

log = logging.getLogger(__name__)
MONITOR_SECONDS = 0.2
HEALTH_SECONDS = 1.0


class Observer(Protocol):
    def request_ended(self, outcome: str) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def inter_token(self, seconds: float) -> None: ...
    def tokens_generated(self, count: int) -> None: ...


@dataclass(eq=False)
class ReplicaState:
    index: int
    backend: RemoteBackend
    process: Optional[subprocess.Popen] = None
    alive: bool = True
    lost_reason: Optional[str] = None
    outstanding: int = 0  # prompts in flight here
    served: int = 0  # requests finished here
    last_pick: int = -1
    load: dict[str, Any] = field(default_factory=dict)  # the replica's last health answer
    own_group: bool = False  # its process leads a process group of its own (a launcher and its ranks)
    rank_pids: list[int] = field(default_factory=list)  # tensor parallel: each rank's pid, in rank order

    def end_process_group(self, signum: int = signal.SIGKILL) -> None:
        if self.own_group and self.process is not None:
            try:
                os.killpg(self.process.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def describe(self) -> dict[str, Any]:
        engine = ({k: v for k, v in self.load.items() if k not in ("status", "pid", "rank_pids")}
                  if self.alive else {})
        return {"index": self.index, "alive": self.alive, "pid": self.process.pid if self.process else None,
                "rank_pids": self.rank_pids, "lost_reason": self.lost_reason, "outstanding": self.outstanding,
                "served": self.served, "engine": engine}


class Router(Backend):
    def __init__(self, replicas: list[ReplicaState], deployment_name: str, model_name: str,
                 max_queued_requests: int) -> None:
        self.replicas, self.deployment_name, self.model_name = replicas, deployment_name, model_name
        self.max_queued_requests = max_queued_requests
        self.terminate_requested = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._unstarted = 0
        self.rerouted = 0  # requests a replica lost before starting them, sent to another
        self._picks = itertools.count()
        self._active: set["RoutedStream"] = set()
        self._observers: list[Observer] = []

    # ---- Backend ----
    def submit(self, request: GenerateRequest) -> "RoutedStream":
        try:
            return self._admit(request)
        except (QueueFull, Unavailable) as exc:
            self.notify("request_ended", exc.kind)
            raise

    def _admit(self, request: GenerateRequest) -> "RoutedStream":
        if self._stopping.is_set():
            raise Unavailable("the deployment is shutting down")
        with self._lock:
            if self._unstarted >= self.max_queued_requests:
                raise QueueFull(f"{self._unstarted} requests are waiting to start (max_queued_requests="
                                f"{self.max_queued_requests}); retry later")
            self._unstarted += 1
            stream = RoutedStream(self, request)
            self._active.add(stream)
        return stream

    def health(self) -> dict[str, Any]:
        replicas = [r.describe() for r in self.replicas]
        alive = sum(r.alive for r in self.replicas)
        status = ("stopping" if self._stopping.is_set() else "ok" if alive == len(self.replicas)
                  else "degraded" if alive else "down")
        totals = {key: sum(r["engine"].get(key) or 0 for r in replicas)
                  for key in ("running", "waiting", "kv_blocks_used", "kv_blocks_total")}
        return {"status": status, "deployment": self.deployment_name, "model": self.model_name,
                "queued_requests": self._unstarted, "rerouted": self.rerouted, "replicas_alive": alive,
                "replicas": replicas, **totals}

    def terminate(self) -> None:
        self.terminate_requested.set()

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    # ---- routing ----
    def pick(self, exclude: set[int], prompts: int) -> ReplicaState:
        with self._lock:
            live = [r for r in self.replicas if r.alive and r.index not in exclude]
            if not live:
                raise Unavailable(self._no_replica_message())
            best = min(live, key=lambda r: (r.outstanding, r.last_pick))
            best.outstanding += prompts
            best.last_pick = next(self._picks)
            return best

    def release(self, replica: ReplicaState, prompts: int, served: bool) -> None:
        with self._lock:
            replica.outstanding -= prompts
            replica.served += served

    def started(self) -> None:
        with self._lock:
            self._unstarted -= 1

    def ended(self, stream: "RoutedStream", outcome: str) -> None:
        with self._lock:
            self._active.discard(stream)
        self.notify("request_ended", outcome)

    def notify(self, event: str, value: Any) -> None:
        for observer in self._observers:
            try:
                getattr(observer, event)(value)
            except Exception:
                log.exception("metrics observer failed on %s", event)

    def replica_broke(self, replica: ReplicaState, error: Exception) -> None:
        """A link to ``replica`` broke: if its process (or one of its ranks) is gone, it is lost for good."""
        if not self.check_replica(replica):
            log.warning("replica %d: link broke (%s) but the process lives", replica.index, error)

    def check_replica(self, replica: ReplicaState) -> bool:
        """Marks ``replica`` lost if one of its ranks or its process is gone; True if it is lost."""
        if not replica.alive:
            return True
        gone = lost_ranks(replica.rank_pids)
        if gone:
            self.mark_lost(replica, f"lost {', '.join(gone)}")
            replica.end_process_group()  # the launcher ends the other ranks too; this makes sure
            return True
        code = replica.process.poll() if replica.process else None
        if code is not None:
            self.mark_lost(replica, f"its process exited with code {code}")
            return True
        return False

    def mark_lost(self, replica: ReplicaState, reason: str) -> None:
        with self._lock:
            if not replica.alive:
                return
            replica.alive, replica.lost_reason = False, reason
        log.error("replica %d lost: %s; serving on %d replica(s)", replica.index, reason,
                  sum(r.alive for r in self.replicas))

    def _no_replica_message(self) -> str:
        lost = "; ".join(f"replica {r.index}: {r.lost_reason}" for r in self.replicas if not r.alive)
        return f"no live replica can take the request ({lost or 'all were tried'})"

    # ---- watching the replicas ----
    def start_monitors(self) -> None:
        threading.Thread(target=self._watch_processes, name="router-processes", daemon=True).start()
        threading.Thread(target=self._poll_load, name="router-load", daemon=True).start()

    def _watch_processes(self) -> None:
        while not self._stopping.wait(MONITOR_SECONDS):
            for replica in self.replicas:
                self.check_replica(replica)

    def refresh_load(self) -> None:
        for replica in [r for r in self.replicas if r.alive]:
            try:
                replica.load = replica.backend.health(timeout=HEALTH_SECONDS)
            except Exception as exc:  # reported by the process watch if it died
                log.debug("replica %d health: %s", replica.index, exc)

    def _poll_load(self) -> None:
        while not self._stopping.wait(HEALTH_SECONDS):
            self.refresh_load()

    # ---- shutdown ----
    def begin_shutdown(self) -> None:
        """Refuses new requests and ends those in flight with Unavailable."""
        self._stopping.set()
        with self._lock:
            active = list(self._active)
        for stream in active:
            stream.cancel()

    def stop_replicas(self, grace: float = 10.0) -> None:
        for replica in self.replicas:
            try:
                replica.backend.terminate()
            except Exception:
                pass  # already gone, or stuck: the signals below take care of it
        deadline = time.monotonic() + grace
        for replica in self.replicas:
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


class RoutedStream(ResponseStream):
    def __init__(self, router: Router, request: GenerateRequest) -> None:
        self._router, self._request = router, request
        self._remote: Optional[ResponseStream] = None
        self._cancelled = False
        self._submitted = time.monotonic()
        self._last_chunk: dict[int, float] = {}
        self._tokens: dict[int, int] = {}
        self.responses = None

    def cancel(self) -> None:
        self._cancelled = True
        if self._remote is not None:
            self._remote.cancel()

    def events(self, poll_interval: Optional[float] = None) -> Iterator[Any]:
        outcome, started = "internal", False
        try:
            tried: set[int] = set()
            while True:
                replica = self._router.pick(tried, self._request.count)
                tried.add(replica.index)
                served, remote_events = False, None
                try:
                    self._check_cancelled()
                    self._remote = replica.backend.submit(self._request)
                    remote_events = self._remote.events(poll_interval)
                    for event in remote_events:
                        if event is not None and not started:
                            started = True
                            self._router.started()
                        self._observe(event)
                        yield event
                    self.responses, served, outcome = self._remote.responses, True, "ok"
                    return
                except RequestCancelled:
                    self._check_cancelled()  # during shutdown this says so instead
                    raise
                except LinkBroken as exc:
                    self._check_cancelled()
                    self._router.replica_broke(replica, exc)
                    if started:
                        raise Unavailable(f"replica {replica.index} was lost while running this request "
                                          f"({replica.lost_reason or exc}); send it again") from None
                    log.warning("replica %d could not run a request (%s); trying another", replica.index, exc)
                    with self._router._lock:
                        self._router.rerouted += 1
                finally:
                    if remote_events is not None:
                        remote_events.close()  # closes the link, so the replica drops the request
                    self._router.release(replica, self._request.count, served)
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, GeneratorExit) else error_kind(exc)
            raise
        finally:
            if not started:
                self._router.started()  # it will never start: it no longer waits
            self._router.ended(self, outcome)

    def _check_cancelled(self) -> None:
        if self._cancelled:
            if self._router._stopping.is_set():
                raise Unavailable("the deployment is shutting down")
            raise RequestCancelled("the request was cancelled")

    def _observe(self, event: Any) -> None:
        if not isinstance(event, Chunk):
            return
        now, index = time.monotonic(), event.index
        count = event.response.generated_length
        new_tokens = count - self._tokens.get(index, 0)
        if new_tokens <= 0:
            return
        previous = self._last_chunk.get(index)
        if previous is None:
            self._router.notify("first_token", now - self._submitted)
        else:
            self._router.notify("inter_token", (now - previous) / new_tokens)
        self._router.notify("tokens_generated", new_tokens)
        self._last_chunk[index], self._tokens[index] = now, count

