"""Which requests may enter the deployment: a bounded queue of those waiting to start, none once
shutting down; the streams in flight are kept so that shutdown can end them."""
from __future__ import annotations

import threading
from typing import Any, Callable

from mii_core.serving.errors import QueueFull, Unavailable


class Admission:
    def __init__(self, max_queued_requests: int, stopping: threading.Event) -> None:
        self.max_queued_requests = max_queued_requests
        self._stopping = stopping  # shared with the monitors, which end when it is set
        self._lock = threading.Lock()
        self._unstarted = 0
        self._active: set[Any] = set()

    @property
    def shutting_down(self) -> bool:
        return self._stopping.is_set()

    @property
    def queued(self) -> int:
        """Requests admitted that no replica has started yet."""
        return self._unstarted

    def admit(self, make_stream: Callable[[], Any]) -> Any:
        """The stream ``make_stream`` builds, counted as waiting to start; QueueFull past the bound."""
        if self._stopping.is_set():
            raise Unavailable("the deployment is shutting down")
        with self._lock:
            if self._unstarted >= self.max_queued_requests:
                raise QueueFull(f"{self._unstarted} requests are waiting to start (max_queued_requests="
                                f"{self.max_queued_requests}); retry later")
            self._unstarted += 1
            stream = make_stream()
            self._active.add(stream)
        return stream

    def started(self) -> None:
        """A request left the queue: a replica started it, or it never will."""
        with self._lock:
            self._unstarted -= 1

    def ended(self, stream: Any) -> None:
        with self._lock:
            self._active.discard(stream)

    def begin_shutdown(self) -> None:
        """Refuses new requests and cancels those in flight (they end with Unavailable)."""
        self._stopping.set()
        with self._lock:
            active = list(self._active)
        for stream in active:
            stream.cancel()
