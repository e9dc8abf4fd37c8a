"""The replicas as the router sees them, and which one takes the next request."""
from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from mii_core.serving.errors import Unavailable
from mii_core.serving.link import RemoteBackend

log = logging.getLogger("mii_core.serving.router")


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
    # the other machine it runs on (its process here is DeepSpeed's launcher reaching it through pdsh);
    # None: it runs on this machine
    host: Optional[str] = None
    in_flight: set[Any] = field(default_factory=set)  # the link streams of requests running here

    @property
    def name(self) -> str:
        """How messages name it: ``replica 1``, or ``replica 1 on worker-1`` when on another host."""
        return f"replica {self.index} on {self.host}" if self.host else f"replica {self.index}"

    def end_process_group(self, signum: int = signal.SIGKILL) -> None:
        if self.own_group and self.process is not None:
            try:
                os.killpg(self.process.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def describe(self) -> dict[str, Any]:
        engine = ({k: v for k, v in self.load.items() if k not in ("status", "pid", "rank_pids")}
                  if self.alive else {})
        return {"index": self.index, "host": self.host, "alive": self.alive, "pid": self.process.pid if self.process else None,
                "rank_pids": self.rank_pids, "lost_reason": self.lost_reason, "outstanding": self.outstanding,
                "served": self.served, "engine": engine}


class ReplicaPool:
    """The replicas and their routing counters, under one lock. A lost replica is never picked again."""

    def __init__(self, replicas: list[ReplicaState]) -> None:
        self.replicas = replicas
        self.rerouted = 0  # requests a replica lost before starting them, sent to another
        self._lock = threading.Lock()
        self._picks = itertools.count()

    def pick(self, exclude: set[int], prompts: int) -> ReplicaState:
        """The live replica (not in ``exclude``) with the least prompts in flight; counts ``prompts`` there."""
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

    def count_reroute(self) -> None:
        with self._lock:
            self.rerouted += 1

    def track(self, replica: ReplicaState, stream: Any) -> None:
        """``stream`` (a RemoteStream) runs on ``replica`` until :meth:`untrack`; abandoned if it is lost."""
        with self._lock:
            replica.in_flight.add(stream)
            lost = not replica.alive
        if lost:
            stream.abandon(f"{replica.name} is lost ({replica.lost_reason})")

    def untrack(self, replica: ReplicaState, stream: Any) -> None:
        with self._lock:
            replica.in_flight.discard(stream)

    def mark_lost(self, replica: ReplicaState, reason: str) -> None:
        """Never picked again; the requests running there end now (a vanished host closes no connection)."""
        with self._lock:
            if not replica.alive:
                return
            replica.alive, replica.lost_reason = False, reason
            running = list(replica.in_flight)
        for stream in running:
            stream.abandon(f"{replica.name} is lost ({reason})")
        log.error("%s lost: %s; serving on %d replica(s)", replica.name, reason, self.alive_count())

    def alive_count(self) -> int:
        return sum(r.alive for r in self.replicas)

    def live(self) -> list[ReplicaState]:
        return [r for r in self.replicas if r.alive]

    def _no_replica_message(self) -> str:
        lost = "; ".join(f"{r.name}: {r.lost_reason}" for r in self.replicas if not r.alive)
        return f"no live replica can take the request ({lost or 'all were tried'})"
